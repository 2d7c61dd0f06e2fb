"""Nightly retraining: at 02:00, if the DVC-tracked data changed since the last successful
run, run the training pipeline (Kubeflow, or locally), wait for it, read the registry's
decision, and remember the data it trained on. Settings: dags/omnir1_common.py."""

from datetime import UTC, datetime, timedelta

from airflow.sdk import Param, Variable, dag, task
from omnir1_common import (
    PROJECT_DEFAULT,
    default_args,
    read_outcome,
    setting,
    start_run,
    wait_for_run,
)

from omnir1 import orchestration

LAST_FINGERPRINT = "omnir1_last_data_fingerprint"


@dag(
    dag_id="omnir1_nightly_retraining",
    schedule="0 2 * * *",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,  # a missed night is not worth three runs in a row
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=24),
    default_args=default_args(),
    params={
        "force": Param(False, type="boolean", description="train even if the data is the same")
    },
    tags=["omnir1", "training"],
    doc_md=__doc__,
)
def omnir1_nightly_retraining():
    @task
    def fingerprint() -> str:
        return orchestration.data_fingerprint(setting("project", PROJECT_DEFAULT))

    @task.short_circuit
    def data_changed(current: str, params=None) -> bool:
        last = Variable.get(LAST_FINGERPRINT, default=None)
        changed = current != last
        print(
            f"data fingerprint {current[:12]} (last trained on {str(last)[:12]}): "
            f"{'changed' if changed else 'unchanged'}{', forced' if params['force'] else ''}"
        )
        return changed or bool(params["force"])

    @task
    def remember(current: str, outcome: dict) -> None:
        """Only a run that finished moves the mark: a failed night is retried the next."""
        Variable.set(LAST_FINGERPRINT, current)

    current = fingerprint()
    run = start_run("training")
    data_changed(current) >> run
    result = wait_for_run()(run)
    remember(current, read_outcome(run, result))


omnir1_nightly_retraining()
