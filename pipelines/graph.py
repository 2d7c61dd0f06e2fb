"""The parts both pipelines share: the data stages with the preprocessing fan-out, and the
evaluation fan-out with scoring and probes."""

from components import stages
from kfp import dsl

from omnir1.kube.params import pipeline_parameters
from omnir1.kube.pipeline import pipeline_with_parameters
from pipelines import cluster


def prepare_data(settings: dict, params):
    """data -> validate -> preprocess over `parts` parts -> merge: (datasets, shards, parts)."""
    data = cluster.networked(cluster.with_s3(cluster.with_data(stages.fetch_data(params=params))))
    datasets = data.outputs["datasets"]
    checked = cluster.with_data(stages.validate_data(params=params, datasets=datasets))
    # a failed task uploads no outputs: its Data Docs are copied to the PVC too (docs/pipeline.md)
    checked.set_env_variable("OMNIR1_REPORT_COPY", f"{cluster.DATA_MOUNT}/reports")
    cluster.pure(checked)
    parts = stages.part_indices(parts=settings["parts"])
    with dsl.ParallelFor(parts.output) as part:
        pre = stages.preprocess_part(
            params=params, datasets=datasets, part=part, parts=settings["parts"]
        ).after(checked)  # nothing is decoded from a data set that failed validation
        cluster.pure(cluster.on_cpu(pre, cpu="4", memory="16Gi"))
    merged = stages.merge_shards(params=params, parts=dsl.Collected(pre.outputs["shards"]))
    return datasets, cluster.pure(merged).outputs["shards"], parts


def evaluate(settings: dict, params, datasets, shards, parts, **models):
    """predict over `parts` parts (GPU pool) -> score -> probe: (evaluation, probe answers).
    `models`: trained= and optionally untrained= (the model it is compared with)."""
    with dsl.ParallelFor(parts.output) as part:
        pred = stages.predict_part(
            params=params,
            datasets=datasets,
            shards=shards,
            part=part,
            parts=settings["parts"],
            device=settings["device"],
            **models,
        )
        cluster.pure(cluster.on_gpu_pool(pred))
    predictions = dsl.Collected(pred.outputs["predictions"])
    scored = stages.score(params=params, datasets=datasets, parts=predictions, **models)
    evaluation = cluster.pure(cluster.on_cpu(scored)).outputs["evaluation"]
    probed = stages.probe(
        params=params, datasets=datasets, evaluation=evaluation, device=settings["device"], **models
    )
    return evaluation, cluster.pure(cluster.on_gpu_pool(probed)).outputs["answers"]


def build_pipeline(name: str, description: str, body, settings: dict, params_file, local: bool):
    """The kfp pipeline `body(settings, values, render)` with the cluster `settings` and every
    params.yaml leaf as parameters. kfp.local cannot take a parameter whose default is null
    ("Unknown value type"), so `local` leaves those out: their value stays the null of
    params.yaml (the render step's own default)."""
    params = pipeline_parameters(params_file)
    render = stages.render_params_component(params)
    exposed = [p for p in params if not (local and p.default is None)]
    return pipeline_with_parameters(
        name, description, lambda s, values: body(s, values, render), exposed, settings
    )
