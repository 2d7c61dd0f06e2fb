"""On-demand evaluation of a registered model (the evaluation pipeline): trigger with
{"model_uri": "models:/omnir1-system1/7", "baseline_uri": "models:/omnir1-system1@champion"}.
Settings: omnir1.airflow_tasks (Variables, read as tasks run)."""

from datetime import UTC, datetime, timedelta

from airflow.sdk import Param, dag, task

from omnir1 import airflow_tasks
from omnir1.airflow_tasks import PipelineRunOperator


@dag(
    dag_id="omnir1_evaluate",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    dagrun_timeout=timedelta(hours=24),
    default_args=airflow_tasks.dag_defaults(),
    on_failure_callback=airflow_tasks.stop_pipeline_runs("evaluation"),
    params={
        "model_uri": Param("models:/omnir1-system1@champion", type="string"),
        "baseline_uri": Param("", type="string", description="compared with; empty: none"),
    },
    tags=["omnir1", "evaluation"],
    doc_md=__doc__,
)
def omnir1_evaluate():
    run = PipelineRunOperator(
        task_id="run_pipeline",
        pipeline="evaluation",
        arguments={
            "model_uri": "{{ params.model_uri }}",
            "baseline_uri": "{{ params.baseline_uri }}",
        },
    )

    @task(multiple_outputs=False)
    def read_outcome(handle: dict) -> dict:
        return airflow_tasks.read_outcome(handle)

    read_outcome(run.output)


omnir1_evaluate()
