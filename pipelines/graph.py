"""The parts both pipelines share: the first step (the run's params), the data stages with the
preprocessing fan-out, model fetches, and the evaluation fan-out with scoring and probes.

Every stage gets the JSON of the params it reads from resolve-params (by value: it is part of
the cache key). The fan-outs are sub-pipelines (`preprocess`, `evaluate`): kfp.local 2.17 hands
a ParallelFor body the loop item in place of any other task's output parameter
(kfp.local.orchestrator.task_spec_utils.create_parameter_loop_iteration_task_spec), so the
stage params reach each loop as an input of its sub-pipeline instead.
"""

from typing import NamedTuple

from components import stages
from kfp import dsl
from kfp.dsl import Artifact, Dataset, Model

from pipelines import cluster
from pipelines.cluster import DAY, HOUR, MINUTE


def resolve(pipeline: str, **form):
    """resolve-params: the run form -> each stage's params, the data and models keys (never
    cached: it reads the sources to key them)."""
    task = stages.resolve_params(pipeline=pipeline, **form)
    task = cluster.on_cpu(task, cpu="1", memory="2Gi")
    task = cluster.with_mlflow(cluster.with_s3(cluster.with_data(task)))  # what it keys
    cluster.step(cluster.networked(cluster.uncached(task)), "resolve params", 15 * MINUTE)
    return task.outputs


def prepare_data(run, parts):
    """data -> validate -> preprocess over `parts` parts: (datasets, shards)."""
    data = stages.fetch_data(params=run["data"], data_key=run["data_key"])
    data = cluster.networked(cluster.with_s3(cluster.with_data(data)))
    # data sets are the largest downloads (hundreds of GB for the real ones)
    datasets = cluster.step(cluster.pure(data), "fetch data", 6 * HOUR).outputs["datasets"]
    checked = cluster.with_data(stages.validate_data(params=run["validate"], datasets=datasets))
    # a failed task uploads no outputs: its Data Docs are copied to the PVC too (docs/pipeline.md)
    checked.set_env_variable("OMNIR1_REPORT_COPY", f"{cluster.DATA_MOUNT}/reports")
    cluster.step(cluster.pure(cluster.on_cpu(checked)), "validate data", 2 * HOUR)
    shards = preprocess(params=run["preprocess"], datasets=datasets, parts=parts)
    shards.after(checked)  # nothing is decoded from a data set that failed validation
    return datasets, shards.set_display_name("preprocess").output


@dsl.pipeline(name="preprocess", description="Videos decoded into shards, in parallel parts.")
def preprocess(params: str, datasets: Dataset, parts: int) -> Dataset:
    indices = stages.part_indices(parts=parts)
    cluster.step(cluster.pure(cluster.on_cpu(indices, cpu="1", memory="1Gi")), "parts", MINUTE)
    with dsl.ParallelFor(indices.output, name="preprocess parts") as part:
        pre = stages.preprocess_part(params=params, datasets=datasets, part=part, parts=parts)
        cluster.pure(cluster.on_cpu(pre, cpu="4", memory="16Gi"))
        cluster.step(pre, "preprocess part", 12 * HOUR)
    merged = stages.merge_shards(params=params, parts=dsl.Collected(pre.outputs["shards"]))
    cluster.step(cluster.pure(cluster.on_cpu(merged)), "merge shards", 2 * HOUR)
    return merged.outputs["shards"]


def base_models(run):
    """The models GRPO starts from (models.dir, pinned by resolve-params)."""
    task = stages.base_models(params=run["models"], models_key=run["models_key"])
    task = cluster.networked(cluster.with_mlflow(cluster.with_s3(task)))
    return cluster.step(cluster.pure(task), "base models", 2 * HOUR).outputs["models"]


def fetch_model(run, which: str, name: str):
    """The model of the run's `which`_uri (registry aliases pinned to their version)."""
    task = stages.fetch_model(
        params=run["models"], uri=run[f"{which}_uri"], model_key=run[f"{which}_key"]
    )
    task = cluster.networked(cluster.with_mlflow(cluster.with_s3(task)))
    return cluster.step(cluster.pure(task), name, 2 * HOUR).outputs["model"]


def evaluate(run, datasets, shards, parts, device, untrained, trained):
    """predict -> score -> probe, the trained model against `untrained`: (evaluation, answers)."""
    task = evaluate_models(
        evaluate_params=run["evaluate"],
        probe_params=run["probe"],
        datasets=datasets,
        shards=shards,
        parts=parts,
        device=device,
        untrained=untrained,
        trained=trained,
    )
    task.set_display_name("evaluate")
    return task.outputs["evaluation"], task.outputs["answers"]


class Evaluated(NamedTuple):
    evaluation: Artifact  # evaluate.json and every model's predictions and pages
    answers: Artifact  # probe answers and probe.json


@dsl.pipeline(name="evaluate", description="Predictions in parallel parts, scores, probes.")
def evaluate_models(
    evaluate_params: str,
    probe_params: str,
    datasets: Dataset,
    shards: Dataset,
    parts: int,
    device: str,
    untrained: Model,
    trained: Model,
) -> Evaluated:
    models = dict(untrained=untrained, trained=trained)
    indices = stages.part_indices(parts=parts)
    cluster.step(cluster.pure(cluster.on_cpu(indices, cpu="1", memory="1Gi")), "parts", MINUTE)
    with dsl.ParallelFor(indices.output, name="predict parts") as part:
        pred = stages.predict_part(
            params=evaluate_params,
            datasets=datasets,
            shards=shards,
            part=part,
            parts=parts,
            device=device,
            **models,
        )
        cluster.step(cluster.pure(cluster.on_gpu_pool(pred)), "predict part", DAY)
    predictions = dsl.Collected(pred.outputs["predictions"])
    scored = stages.score(params=evaluate_params, datasets=datasets, parts=predictions, **models)
    scored = cluster.step(cluster.pure(cluster.on_cpu(scored)), "score", 2 * HOUR)
    probed = stages.probe(
        params=probe_params,
        datasets=datasets,
        evaluation=scored.outputs["evaluation"],
        device=device,
        **models,
    )
    probed = cluster.step(cluster.pure(cluster.on_gpu_pool(probed)), "probe", 12 * HOUR)
    return Evaluated(evaluation=scored.outputs["evaluation"], answers=probed.outputs["answers"])
