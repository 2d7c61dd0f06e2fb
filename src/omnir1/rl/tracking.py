"""MLflow tracking of a GRPO run, as a transformers TrainerCallback.

The tracking URI comes from `MLFLOW_TRACKING_URI`, else params.yaml `tracking.uri` (a SQLite
file by default, so a laptop needs no server). Logged: the run's parameters (every section of
params.yaml that shapes training), every metric TRL logs per step (rewards and their spread per
reward function, KL, completion lengths, entropy, the step time split into generation, System 2,
other reward work and the update), and per step a table of sample completions with their
reward components.
"""

from __future__ import annotations

import json
import logging
import os

from transformers import TrainerCallback

MAX_TABLE_ROWS = 16
log = logging.getLogger(__name__)


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = json.dumps(v) if isinstance(v, list) else str(v)
    return out


class MLflowTracking(TrainerCallback):
    """Logs through an MlflowClient (no global run). What the server cannot take is kept:
    with on_unavailable="buffer" training goes on, every step's metrics and table wait in
    order and are sent (with their own step numbers) once the server answers again, and what
    is still waiting at the end is written to `pending_file` (JSON lines) and named in a
    warning; with "fail" the first failed call stops training with an error naming the URI.
    Each call gives up within seconds (no MLflow default of 7 retries over minutes)."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        params: dict,
        rewards,
        run_name: str | None = None,
        *,
        on_unavailable: str = "buffer",
        pending_file=None,
    ):
        self.uri = os.environ.get("MLFLOW_TRACKING_URI") or uri
        self.experiment, self.params = experiment, params
        self.rewards = rewards  # omnir1.rl.trainer.GroupRewards: completions and components
        self.run_name = run_name
        self.on_unavailable = on_unavailable
        self.pending_file = pending_file
        self.run_id: str | None = None
        self.pending: list[dict] = []  # {"step", "metrics", "table"} not yet on the server
        self.active = False  # the main process of a training that tracks
        self.outage_reported = False

    def _call(self, fn, *args, **kwargs):
        from omnir1.registry import PROBE_LIMITS, http_limits

        with http_limits(PROBE_LIMITS, {}):
            return fn(*args, **kwargs)

    def _start_run(self) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        client = MlflowClient(tracking_uri=self.uri)
        experiment = self._call(client.get_experiment_by_name, self.experiment)
        experiment_id = (
            experiment.experiment_id
            if experiment
            else self._call(client.create_experiment, self.experiment)
        )
        run = self._call(client.create_run, experiment_id, run_name=self.run_name)
        rows = [Param(k, v) for k, v in flatten(self.params).items()]
        for i in range(0, len(rows), 100):  # MLflow takes at most 100 params per batch
            self._call(client.log_batch, run.info.run_id, params=rows[i : i + 100])
        self.client, self.run_id = client, run.info.run_id

    def _flush(self) -> None:
        """Send what waits, oldest first; stop at the first failure (kept for later)."""
        import time

        from mlflow.entities import Metric

        try:
            if self.run_id is None:
                self._start_run()
            while self.pending:
                item = self.pending[0]
                now = int(time.time() * 1000)
                rows = [Metric(k, v, now, item["step"]) for k, v in item["metrics"].items()]
                self._call(self.client.log_batch, self.run_id, metrics=rows)
                if item["table"]:
                    name = f"completions/step_{item['step']:06d}.json"
                    self._call(self.client.log_table, self.run_id, item["table"], name)
                self.pending.pop(0)
        except Exception as exc:  # unreachable, timeout, 5xx: the MLflow client's errors
            self._unavailable(exc)
            return
        if self.outage_reported:
            log.warning(f"MLflow at {self.public_uri()} answers again: buffered steps sent")
            self.outage_reported = False

    def public_uri(self) -> str:
        from omnir1.registry import public_uri

        return public_uri(self.uri)

    def _unavailable(self, exc: Exception) -> None:
        from omnir1.registry import TrackingError, _first_line

        why = _first_line(exc)
        if self.on_unavailable == "fail":
            raise TrackingError(self.public_uri(), f"MLflow unavailable, training stopped ({why})")
        if not self.outage_reported:
            log.warning(
                f"MLflow at {self.public_uri()} unavailable ({why}); training goes on and its "
                "metrics are kept until the server answers"
            )
            self.outage_reported = True

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:  # one MLflow run per training, not per process
            return
        self.active = True
        self._flush()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self.active or not logs:
            return
        # names as TRL logs them ("rewards/format/mean", "time/update_s"): MLflow's UI groups
        # metrics by their "/" prefixes
        metrics = {
            k: float(v)
            for k, v in logs.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        rows = self.rewards.last_table[:MAX_TABLE_ROWS]
        table = {key: [r[key] for r in rows] for key in rows[0]} if rows else None
        self.pending.append({"step": state.global_step, "metrics": metrics, "table": table})
        self._flush()

    def on_train_end(self, args, state, control, **kwargs):
        if not self.active:
            return
        self._flush()
        if self.pending:
            where = ""
            if self.pending_file is not None:
                from omnir1.fsutil import atomic_open

                with atomic_open(self.pending_file) as fh:
                    for item in self.pending:
                        fh.write(json.dumps(item) + "\n")
                where = f"; written to {self.pending_file}"
            log.warning(
                f"MLflow at {self.public_uri()} still unavailable at the end of training: "
                f"{len(self.pending)} step(s) not logged{where}"
            )
        if self.run_id is not None:
            status = "FINISHED" if not self.pending else "FAILED"
            try:
                self._call(self.client.set_terminated, self.run_id, status)
            except Exception as exc:
                log.warning(f"MLflow at {self.public_uri()}: run not closed ({exc})")
