"""The evaluation-only pipeline: a registered model (models:/NAME@ALIAS, by default the
champion, or models:/NAME/VERSION, an s3:// prefix, a folder) on every data set, optionally
against a baseline model: resolve params -> data -> validate -> preprocess (fan-out) -> fetch
models -> predict (fan-out) -> score -> probe -> report. Nothing is trained or registered.

One chain with or without a baseline: with baseline_uri empty, "fetch baseline" leaves a model
artifact that holds no model, which the steps read as none (omnir1.kube.steps.NO_MODEL).
"""

from components import stages
from kfp import dsl

from pipelines import cluster, graph
from pipelines.cluster import HOUR


def build(local: bool = False):
    """The pipeline (the same graph for kfp.local)."""

    @dsl.pipeline(
        name="omnir1-evaluation",
        description="Omni-R1 evaluation of a registered model: benchmarks and hallucination "
        "probes.",
    )
    def evaluation(
        model_uri: str = "models:/omnir1-system1@champion",
        baseline_uri: str = "",
        data_source: str = "",
        data_version: str = "",
        recipe: str = "",
        parts: int = 4,
        device: str = "cuda",
        overrides: str = "{}",
    ):
        """Evaluate a model, optionally against a baseline.

        Args:
            model_uri: The model evaluated: models:/NAME@ALIAS, models:/NAME/VERSION, an
                s3:// prefix or a folder.
            baseline_uri: The model it is compared with, e.g. models:/omnir1-system1@challenger;
                empty: no comparison.
            data_source: Where every data set comes from (params data.source): synth, an
                s3://bucket/prefix or a folder on the data PVC; empty: params.yaml's.
            data_version: A name for the data's version that keys the fetched data instead of
                the source's listing; empty: the listing or the synthetic data's params.
            recipe: A recipe of the image's configs/params merged over params.yaml; empty: none.
            parts: Parallel parts of preprocessing and evaluation.
            device: Torch device of the GPU tasks.
            overrides: Any other params keys, as a JSON object of dotted keys, e.g.
                {"evaluate.videos_per_split": 10}.
        """
        run = graph.resolve(
            "evaluation",
            recipe=recipe,
            overrides=overrides,
            data_source=data_source,
            data_version=data_version,
            model_uri=model_uri,
            baseline_uri=baseline_uri,
        )
        datasets, shards = graph.prepare_data(run, parts)
        evaluation_, answers = graph.evaluate(
            run,
            datasets,
            shards,
            parts,
            device,
            untrained=graph.fetch_model(run, "baseline", "fetch baseline"),
            trained=graph.fetch_model(run, "model", "fetch model"),
        )
        report = stages.report(evaluation=evaluation_, answers=answers)
        cluster.step(cluster.pure(report), "report", HOUR)

    return evaluation
