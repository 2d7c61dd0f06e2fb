"""Nightly retraining: at 02:00, if the DVC-tracked data changed since the last successful
run, run the training pipeline (on Kubeflow, or locally), read the registry's decision, and
remember the data it trained on. Settings: omnir1.airflow_tasks (Variables, read as tasks run)."""

from datetime import UTC, datetime, timedelta

from airflow.sdk import Param, Variable, dag, task

from omnir1 import airflow_tasks, orchestration
from omnir1.airflow_tasks import PipelineRunOperator

LAST_FINGERPRINT = "omnir1_last_data_fingerprint"


@dag(
    dag_id="omnir1_nightly_retraining",
    schedule="0 2 * * *",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,  # a missed night is not worth three runs in a row
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=24),
    default_args=airflow_tasks.dag_defaults(),
    on_failure_callback=airflow_tasks.stop_pipeline_runs("training"),
    params={
        "force": Param(False, type="boolean", description="train even if the data is the same")
    },
    tags=["omnir1", "training"],
    doc_md=__doc__,
)
def omnir1_nightly_retraining():
    @task(multiple_outputs=False)
    def fingerprint() -> str:
        return orchestration.data_fingerprint(airflow_tasks.project_folder())

    @task.short_circuit
    def data_changed(current: str, params=None) -> bool:
        last = Variable.get(LAST_FINGERPRINT, default=None)
        changed = current != last
        print(
            f"data fingerprint {current[:12]} (last trained on {str(last)[:12]}): "
            f"{'changed' if changed else 'unchanged'}{', forced' if params['force'] else ''}"
        )
        return changed or bool(params["force"])

    @task(multiple_outputs=False)
    def read_outcome(handle: dict) -> dict:
        return airflow_tasks.read_outcome(handle)

    @task
    def remember(current: str, outcome: dict) -> None:
        """Only a run that finished moves the mark: a failed night is retried the next."""
        Variable.set(LAST_FINGERPRINT, current)

    current = fingerprint()
    run = PipelineRunOperator(task_id="run_pipeline", pipeline="training")
    data_changed(current) >> run
    remember(current, read_outcome(run.output))


omnir1_nightly_retraining()
