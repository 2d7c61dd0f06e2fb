"""The evaluation-only pipeline: a registered model (models:/NAME@ALIAS by default the
champion, or models:/NAME/VERSION, an s3:// prefix, a folder) on every data set, optionally
against a baseline model: data -> validate -> preprocess (fan-out) -> predict (fan-out) ->
score -> probe -> report. Nothing is trained or registered.

Parameters: the settings below, then every leaf of params.yaml with the same default.
"""

from components import stages
from kfp import dsl

from pipelines import cluster, graph

SETTINGS = {
    "model_uri": (str, "models:/omnir1-system1@champion"),
    "baseline_uri": (str, ""),  # e.g. models:/omnir1-system1@challenger; "": no comparison
    "device": (str, "cuda"),
    "parts": (int, 4),
}


def evaluation(settings: dict, values: dict, render) -> None:
    params = cluster.pure(render(**values)).outputs["params"]
    datasets, shards, parts = graph.prepare_data(settings, params)

    def fetched(uri):
        task = stages.fetch_model(params=params, uri=uri)
        return cluster.networked(cluster.with_mlflow(cluster.with_s3(task))).outputs["model"]

    data = dict(params=params, datasets=datasets, shards=shards, parts=parts)
    with dsl.If(settings["baseline_uri"] != "", "with-baseline"):
        models = dict(
            untrained=fetched(settings["baseline_uri"]), trained=fetched(settings["model_uri"])
        )
        evaluation_, answers = graph.evaluate(settings, **data, **models)
        stages.report(evaluation=evaluation_, answers=answers)
    with dsl.Else("model-only"):
        evaluation_, answers = graph.evaluate(
            settings, **data, trained=fetched(settings["model_uri"])
        )
        stages.report(evaluation=evaluation_, answers=answers)


def build(params_file="params.yaml", local: bool = False):
    """The pipeline, its parameters defaulted from `params_file`."""
    return graph.build_pipeline(
        "omnir1-evaluation",
        "Omni-R1 evaluation of a registered model: benchmarks and hallucination probes.",
        evaluation,
        SETTINGS,
        params_file,
        local,
    )
