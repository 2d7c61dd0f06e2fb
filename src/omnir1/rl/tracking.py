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
import os

from transformers import TrainerCallback

MAX_TABLE_ROWS = 16


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
    def __init__(
        self, uri: str, experiment: str, params: dict, rewards, run_name: str | None = None
    ):
        self.uri, self.experiment, self.params = uri, experiment, params
        self.rewards = rewards  # omnir1.rl.trainer.GroupRewards: completions and components
        self.run_name = run_name
        self.run_id: str | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        import mlflow

        if not state.is_world_process_zero:  # one MLflow run per training, not per process
            return
        mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI") or self.uri)
        mlflow.set_experiment(self.experiment)
        run = mlflow.start_run(run_name=self.run_name)
        self.run_id = run.info.run_id
        mlflow.log_params(flatten(self.params))

    def on_log(self, args, state, control, logs=None, **kwargs):
        import mlflow

        if self.run_id is None or not logs:
            return
        metrics = {
            k.replace("/", "_"): float(v)
            for k, v in logs.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        mlflow.log_metrics(metrics, step=state.global_step)
        rows = self.rewards.last_table[:MAX_TABLE_ROWS]
        if rows:
            table = {key: [r[key] for r in rows] for key in rows[0]}
            mlflow.log_table(table, artifact_file=f"completions/step_{state.global_step:06d}.json")

    def on_train_end(self, args, state, control, **kwargs):
        import mlflow

        if self.run_id is not None:
            mlflow.end_run()
