"""The Airflow side of dags/: the operator that runs a pipeline and its trigger, the callbacks,
the outcome task's logic and the settings. Imported by Airflow processes only (the main venv
has no Airflow); the triggerer imports KubeflowRunTrigger from here by its path.

Settings are read when a task runs, never while a DAG file is parsed: Airflow Variables (or
AIRFLOW_VAR_* environment variables), all optional.

  omnir1_mode             "kubeflow" (default) or "local"
  omnir1_project          folder with params.yaml (the data fingerprint) and pipelines/compiled/
                          (default: $OMNIR1_PROJECT, which the image sets to /opt/omnir1, else
                          the folder above the DAGs folder: a checkout)
  omnir1_packages         compiled pipelines (default: PROJECT/pipelines/compiled)
  omnir1_pipeline_args    JSON object of pipeline arguments: run-form settings or params keys,
                          e.g. {"parts": 8, "train.max_steps": 200} (keys join `overrides`)
  omnir1_experiment       Kubeflow experiment (default: omnir1)
  omnir1_namespace        Kubeflow profile namespace (multi-user installs; default: none)
  omnir1_service_account  the runs' pods' ServiceAccount (default: omnir1-pipeline-runner)
  omnir1_poll_interval_s  how often the triggerer asks Kubeflow (default: 60)
  omnir1_timeout_s        a run still going this long after it was created is terminated and
                          the task fails (default: 43200, 12 h)
  omnir1_model_name       the registered model (default: omnir1-system1)
  omnir1_cli, omnir1_params, omnir1_runs_dir   local mode: the omnir1 executable (default:
                          omnir1), a params file, where runs write (default: PROJECT/runs/airflow)

Connections: kubeflow_default (host = the API URL; password = bearer token), mlflow_default
(host = tracking URI; password = token, or login + password for basic auth), omnir1_alerts
(optional; host = a chat webhook URL). Retries come from the environment of the DAG processor
and workers (OMNIR1_DAG_RETRIES, default 2; OMNIR1_DAG_RETRY_DELAY_S, default 300), the only
settings a DAG's structure needs.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import BaseHook, BaseOperator, Variable, conf
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from airflow.triggers.base import BaseTrigger, TriggerEvent

from omnir1 import orchestration
from omnir1.errors import InputError
from omnir1.orchestration import DONE_STATES, PipelineRunError

KUBEFLOW_CONN, MLFLOW_CONN, ALERTS_CONN = "kubeflow_default", "mlflow_default", "omnir1_alerts"


def setting(name: str, default: Any = None) -> Any:
    """Variable omnir1_NAME; call it inside tasks and callbacks only."""
    return Variable.get(f"omnir1_{name}", default=default)


def dag_defaults() -> dict:
    """default_args of both DAGs. Read at parse time, hence from the environment, not from
    Variables (the metadata database is not for DAG parsing)."""
    return {
        "owner": "omnir1",
        "retries": int(os.environ.get("OMNIR1_DAG_RETRIES", "2")),
        "retry_delay": timedelta(seconds=float(os.environ.get("OMNIR1_DAG_RETRY_DELAY_S", "300"))),
        "retry_exponential_backoff": True,
        "on_failure_callback": alert_on_failure,
    }


def project_folder() -> Path:
    folder = Path(
        setting("project")
        or os.environ.get("OMNIR1_PROJECT")
        or Path(conf.get("core", "dags_folder")).parent
    )
    if not (folder / "params.yaml").is_file():
        raise AirflowFailException(
            f"{folder} has no params.yaml: set the Variable omnir1_project (or OMNIR1_PROJECT)"
        )
    return folder


def connection(conn_id: str):
    """The Connection, or None where it is not configured."""
    try:
        return BaseHook.get_connection(conn_id)
    except Exception:  # AirflowNotFoundException: optional connections may be absent
        return None


def url_of(conn) -> str:
    """A Connection's base URL (host may hold a whole URL, or schema/host/port the parts)."""
    host = conn.host or ""
    if "://" in host:
        return host.rstrip("/")
    scheme = conn.schema or conn.conn_type or "http"
    return f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")


def kubeflow(namespace: str | None) -> orchestration.Kubeflow:
    conn = BaseHook.get_connection(KUBEFLOW_CONN)
    return orchestration.Kubeflow(url_of(conn), conn.password, namespace)


def alert_on_failure(context) -> None:
    """Task on_failure_callback: once a task failed for good, say what failed where."""
    ti = context["task_instance"]
    message = (
        f"Omni-R1: {ti.dag_id}.{ti.task_id} failed (run {context['run_id']}, try "
        f"{ti.try_number}): {context.get('exception')}"
    )
    hook = connection(ALERTS_CONN)
    orchestration.alert(message, url_of(hook) if hook else None)


def run_name(pipeline: str, dag_run_id: str, first_try: int | str) -> str:
    """A Kubeflow run's name: the DAG run, and the first try of the task since it was last
    cleared (so retries share it)."""
    return f"omnir1-{pipeline}-{dag_run_id}-try{first_try}"


def stop_pipeline_runs(pipeline: str):
    """A DAG on_failure_callback: terminate the Kubeflow runs of `pipeline` this DAG run
    started that are still going (the DAG run timed out, or failed elsewhere while they went
    on), found by their names; alert unless a task's own failure callback already did."""

    def callback(context) -> None:
        client = kubeflow(setting("namespace") or None)
        stopped = client.stop_runs(
            run_name(pipeline, context["run_id"], ""), setting("experiment", "omnir1")
        )
        print(f"Kubeflow runs terminated: {stopped or 'none was still going'}")
        if context.get("reason") != "task_failure":
            hook = connection(ALERTS_CONN)
            message = f"Omni-R1: {context['dag'].dag_id} run {context['run_id']} failed"
            orchestration.alert(
                f"{message} ({context.get('reason')}); Kubeflow runs terminated: {stopped}",
                url_of(hook) if hook else None,
            )

    return callback


class KubeflowRunTrigger(BaseTrigger):
    """Asks Kubeflow for the run's state every `poll_interval_s` in the triggerer (no worker
    slot, no pod while it waits) until it ended or `deadline` (epoch seconds) passed. A user
    clearing or marking the waiting task terminates the run (on_kill)."""

    def __init__(self, handle: dict, poll_interval_s: float = 60.0, deadline: float | None = None):
        super().__init__()
        self.handle, self.poll_interval_s, self.deadline = handle, poll_interval_s, deadline

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{__name__}.KubeflowRunTrigger",
            {
                "handle": self.handle,
                "poll_interval_s": self.poll_interval_s,
                "deadline": self.deadline,
            },
        )

    async def _client(self) -> orchestration.Kubeflow:
        conn = await BaseHook.aget_connection(KUBEFLOW_CONN)
        return orchestration.Kubeflow(url_of(conn), conn.password, self.handle["namespace"])

    async def run(self) -> AsyncIterator[TriggerEvent]:
        client, run_id = await self._client(), self.handle["run_id"]
        while True:
            try:
                run = await asyncio.to_thread(client.get_run, run_id)
            except PipelineRunError as exc:
                if not exc.transient:  # a refused token or a vanished run: asking again won't do
                    yield TriggerEvent({"status": "error", "message": str(exc), **self.handle})
                    return
                self.log.warning("%s; asking again in %g s", exc, self.poll_interval_s)
            else:
                if run["state"] in DONE_STATES:
                    yield TriggerEvent({"status": "ended", "run": run, **self.handle})
                    return
                self.log.info("Kubeflow run %s: %s", run_id, run["state"])
            left = self.deadline - time.time() if self.deadline else self.poll_interval_s
            if left <= 0:
                yield TriggerEvent({"status": "timeout", **self.handle})
                return
            await asyncio.sleep(min(self.poll_interval_s, left))

    async def on_kill(self) -> None:
        client = await self._client()
        if await asyncio.to_thread(client.terminate, self.handle["run_id"]):
            self.log.info("terminated Kubeflow run %s", self.handle["run_id"])


class PipelineRunOperator(BaseOperator):
    """Runs the pipeline `pipeline` (training or evaluation) with `arguments` over the Variable
    omnir1_pipeline_args.

    kubeflow: submits the compiled package as a run named after the DAG run and this task's
    first try since it was last cleared (a retry finds the run its earlier try made instead of
    starting another; a cleared task starts a new one), then waits in the triggerer. A run that
    ends FAILED, CANCELED or SKIPPED fails the task at once, without retries; one still going
    after omnir1_timeout_s is terminated, as it is when the task is killed or cleared.
    local: runs `omnir1 pipeline run --local` inside this task, to its end, on the worker that
    runs it (which needs the omnir1 CLI); killing the task stops it.

    Returns {"mode", "pipeline", "state", "run_id" (kubeflow) or "outcome" (local)}."""

    template_fields = ("arguments",)

    def __init__(self, *, pipeline: str, arguments: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.pipeline, self.arguments = pipeline, arguments or {}
        self._local: orchestration.LocalRun | None = None
        self._started: dict | None = None

    def execute(self, context) -> dict:
        try:
            args = {**json.loads(setting("pipeline_args", "{}")), **self.arguments}
        except json.JSONDecodeError as exc:
            raise AirflowFailException(
                f"Variable omnir1_pipeline_args is not JSON: {exc}"
            ) from None
        mode = setting("mode", "kubeflow")
        if mode == "local":
            return self._run_local(context, args)
        if mode != "kubeflow":
            raise AirflowFailException(f"Variable omnir1_mode: {mode!r}; valid: kubeflow, local")
        return self._run_kubeflow(context, args)

    def _run_kubeflow(self, context, args: dict) -> dict:
        ti = context["ti"]
        first_try = ti.max_tries - (self.retries or 0) + 1  # retries share it, a clear moves it
        name = run_name(self.pipeline, context["run_id"], first_try)
        packages = Path(setting("packages") or project_folder() / "pipelines" / "compiled")
        namespace = setting("namespace") or None
        client = kubeflow(namespace)
        try:
            run = client.submit(
                packages / f"{self.pipeline}.yaml",
                name,
                args,
                experiment=setting("experiment", "omnir1"),
                service_account=setting("service_account", "omnir1-pipeline-runner"),
            )
        except PipelineRunError as exc:
            if exc.transient:
                raise AirflowException(str(exc)) from None  # retried: the run is found then
            raise AirflowFailException(str(exc)) from None
        except InputError as exc:  # no compiled package there
            raise AirflowFailException(str(exc)) from None
        verb = "found the run an earlier try started" if run["reused"] else "started"
        self.log.info("Kubeflow: %s: %s (%s), %s", verb, run["run_id"], name, run["state"])
        handle = {
            "mode": "kubeflow",
            "pipeline": self.pipeline,
            "run_id": run["run_id"],
            "name": name,
            "namespace": namespace,
        }
        self._started = handle
        if run["state"] in DONE_STATES:
            return self.execute_complete(context, {"status": "ended", "run": run, **handle})
        timeout_s = float(setting("timeout_s", 12 * 3600))
        self.defer(
            trigger=KubeflowRunTrigger(
                handle,
                float(setting("poll_interval_s", 60)),
                (run["created_at"] or time.time()) + timeout_s,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context, event: dict) -> dict:
        """The trigger's event (or the run found already ended): the task's outcome."""
        keys = ("mode", "pipeline", "run_id", "name", "namespace")
        handle = self._started = {k: event[k] for k in keys}
        if event["status"] == "timeout":
            kubeflow(handle["namespace"]).terminate(handle["run_id"])
            raise AirflowFailException(
                f"Kubeflow run {handle['run_id']} did not end within "
                f"{float(setting('timeout_s', 12 * 3600)):g} s of its creation: terminated"
            )
        if event["status"] == "error":
            raise AirflowException(event["message"])
        run = event["run"]
        failure = orchestration.run_failure(run)
        if failure:
            raise AirflowFailException(failure)  # no retry: it would read the same ended run
        return {**handle, "state": run["state"]}

    def _run_local(self, context, args: dict) -> dict:
        project = project_folder()
        runs = Path(setting("runs_dir") or project / "runs" / "airflow")
        safe = context["run_id"].replace(":", "_").replace("+", "_")
        folder = runs / f"{self.pipeline}-{safe}-try{context['ti'].try_number}"
        command = orchestration.local_command(
            setting("cli", "omnir1"), project, folder, self.pipeline, args, setting("params")
        )
        self.log.info("local run: %s", " ".join(command))
        self._local = orchestration.LocalRun(command, project, folder)
        try:
            result = self._local.wait(float(setting("timeout_s", 12 * 3600)))
        except PipelineRunError as exc:
            raise AirflowFailException(str(exc)) from None  # a failed pipeline: no retry
        return {
            "mode": "local",
            "pipeline": self.pipeline,
            "state": "SUCCEEDED",
            "outcome": orchestration.local_outcome(result),
        }

    def on_kill(self) -> None:
        """The task is killed (cleared, marked, timed out) while it runs on a worker."""
        if self._local is not None:
            self._local.stop()
        elif self._started is not None:
            kubeflow(self._started["namespace"]).terminate(self._started["run_id"])


def read_outcome(handle: dict) -> dict:
    """The registry decision and headline figures of a finished run, printed as JSON."""
    if handle["mode"] == "local":
        outcome = handle["outcome"]
    elif handle["pipeline"] == "training":
        conn = BaseHook.get_connection(MLFLOW_CONN)
        outcome = orchestration.registry_outcome(
            url_of(conn),
            setting("model_name", "omnir1-system1"),
            handle["run_id"],
            conn.password,
            conn.login,
        )
    else:  # the evaluation's figures are the run's artifacts in Kubeflow
        outcome = {"run_id": handle["run_id"], "state": handle["state"]}
    print(json.dumps(outcome, indent=2, default=str))
    return outcome
