"""On-demand evaluation of a registered model (the evaluation pipeline): trigger with
{"model_uri": "models:/omnir1-system1/7", "baseline_uri": "models:/omnir1-system1@champion"}.
Settings: dags/omnir1_common.py."""

from datetime import UTC, datetime

from airflow.sdk import Param, dag, task
from omnir1_common import default_args, read_outcome, start_run, wait_for_run


@dag(
    dag_id="omnir1_evaluate",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    default_args=default_args(),
    params={
        "model_uri": Param("models:/omnir1-system1@champion", type="string"),
        "baseline_uri": Param("", type="string", description="compared with; empty: none"),
    },
    tags=["omnir1", "evaluation"],
    doc_md=__doc__,
)
def omnir1_evaluate():
    @task
    def arguments(params=None) -> dict:
        return {"model_uri": params["model_uri"], "baseline_uri": params["baseline_uri"]}

    run = start_run("evaluation", arguments())
    read_outcome(run, wait_for_run()(run))


omnir1_evaluate()
