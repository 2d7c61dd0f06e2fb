"""Settings and tasks both Omni-R1 DAGs use; the work itself is omnir1.orchestration's.

Configuration (Airflow Variables, or AIRFLOW_VAR_* environment variables):
  omnir1_mode            "kubeflow" (Connection kubeflow_default: host, password = token) or
                         "local" (omnir1 pipeline run --local on this machine); default local
  omnir1_project         the project checkout (params.yaml, dvc.lock, pipelines/)
  omnir1_cli             the omnir1 executable for local runs (default: omnir1)
  omnir1_params          params file for local runs (default: PROJECT/params.yaml)
  omnir1_runs_dir        where local runs write (default: PROJECT/runs/airflow)
  omnir1_packages        folder of `omnir1 pipeline compile` (default: PROJECT/pipelines/compiled)
  omnir1_pipeline_args   JSON object of pipeline arguments, e.g. {"train__max_steps": 200}
  omnir1_poke_interval_s, omnir1_timeout_s, omnir1_retries, omnir1_retry_delay_s
Connections: mlflow_default (the tracking server; password = token, if any) to read what a
Kubeflow run registered; omnir1_alerts (optional; host = a chat webhook URL) for alerts.
"""

import json
from datetime import timedelta
from pathlib import Path

from airflow.sdk import BaseHook, Variable, get_current_context, task
from airflow.sdk.bases.sensor import PokeReturnValue

from omnir1 import orchestration

PROJECT_DEFAULT = str(Path(__file__).resolve().parents[1])


def setting(name: str, default=None):
    return Variable.get(f"omnir1_{name}", default=default)


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


def alert_on_failure(context) -> None:
    """on_failure_callback: after a task's last retry, say what failed where."""
    ti = context["task_instance"]
    message = (
        f"Omni-R1: {ti.dag_id}.{ti.task_id} failed (run {context['run_id']}, try "
        f"{ti.try_number}): {context.get('exception')}"
    )
    hook = connection("omnir1_alerts")
    orchestration.alert(message, url_of(hook) if hook else None)


def default_args() -> dict:
    return {
        "owner": "omnir1",
        "retries": int(setting("retries", 2)),
        "retry_delay": timedelta(seconds=float(setting("retry_delay_s", 600))),
        "retry_exponential_backoff": True,
        "on_failure_callback": alert_on_failure,
    }


@task
def start_run(pipeline: str, arguments: dict | None = None) -> dict:
    """Start the pipeline on Kubeflow or locally; the handle the sensor polls."""
    context = get_current_context()
    args = {**json.loads(setting("pipeline_args", "{}")), **(arguments or {})}
    project = setting("project", PROJECT_DEFAULT)
    name = f"omnir1-{pipeline}-{context['run_id']}"
    if setting("mode", "local") == "kubeflow":
        kfp = BaseHook.get_connection("kubeflow_default")
        packages = Path(setting("packages", f"{project}/pipelines/compiled"))
        client = orchestration.KubeflowRest(url_of(kfp), kfp.password)
        run_id = client.create_run(
            packages / f"{pipeline}.yaml",
            name,
            args,
            service_account=setting("service_account", "omnir1-pipeline-runner"),
        )
        print(f"started Kubeflow run {run_id}")
        return {"mode": "kubeflow", "host": url_of(kfp), "run_id": run_id, "pipeline": pipeline}
    runs = Path(setting("runs_dir", f"{project}/runs/airflow"))
    folder = runs / name.replace(":", "_").replace("+", "_")
    handle = orchestration.start_local_run(
        setting("cli", "omnir1"), project, folder, pipeline, args, setting("params", None)
    )
    print(f"started local run: {' '.join(handle['command'])}")
    return handle


def wait_for_run():
    """A sensor that pokes the run until it ends; a failed run fails it at once."""

    @task.sensor(
        poke_interval=float(setting("poke_interval_s", 300)),
        timeout=float(setting("timeout_s", 12 * 3600)),
        mode=setting("sensor_mode", "reschedule"),
    )
    def wait(handle: dict) -> PokeReturnValue:
        if handle["mode"] == "kubeflow":
            token = BaseHook.get_connection("kubeflow_default").password
            handle = {**handle, "token": token}
        result = orchestration.poll(handle)  # a failed run raises: the task fails at once
        return PokeReturnValue(is_done=result is not None, xcom_value=result)

    return wait


@task
def read_outcome(handle: dict, result: dict) -> dict:
    """The registry decision and headline figures of the finished run, logged as JSON."""
    if handle["mode"] == "kubeflow" and handle["pipeline"] == "training":
        mlflow = BaseHook.get_connection("mlflow_default")
        model = setting("model_name", "omnir1-system1")
        outcome = orchestration.registry_outcome(
            url_of(mlflow), model, handle["run_id"], mlflow.password
        )
    elif handle["mode"] == "kubeflow":  # its figures are in the run's artifacts in Kubeflow
        outcome = {"run_id": handle["run_id"], "state": result["state"]}
    else:
        outcome = orchestration.local_outcome(result)
    print(json.dumps(outcome, indent=2, default=str))
    return outcome
