"""Kubeflow components, one per stage of dvc.yaml: thin adapters over `omnir1.kube.steps`
(each step is the stage's omnir1 CLI call on the task's artifact folders).

Lightweight Python components whose body only imports the library: the image (docker/
component.Dockerfile, or the GPU trainer image for the GPU tasks) has omnir1 and kfp
installed, so nothing is pip-installed at run time, and `kfp.local`'s SubprocessRunner runs the
same components in this venv. OMNIR1_IMAGE and OMNIR1_GPU_IMAGE choose the images when the
pipelines are compiled.

`params` of a stage component is the JSON that resolve-params made for that stage: the values
of the params keys it reads, passed by value, so that they are part of Kubeflow's cache key. A
`*_key` input is in the cache key only: the version or content of what the step fetches.
"""

import os
from typing import List, NamedTuple  # noqa: UP035 (kfp reads typing.List in component signatures)

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from omnir1 import __version__

IMAGE = os.environ.get("OMNIR1_IMAGE", f"ghcr.io/omni-r1-ops/omnir1:{__version__}")
GPU_IMAGE = os.environ.get("OMNIR1_GPU_IMAGE", f"ghcr.io/omni-r1-ops/omnir1-gpu:{__version__}")

cpu_component = dsl.component(base_image=IMAGE, install_kfp_package=False)
gpu_component = dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)


@cpu_component
def resolve_params(
    pipeline: str,
    recipe: str,
    overrides: str,
    data_source: str,
    data_version: str,
    gpus_per_node: int = 0,
    base_models: str = "",
    model_uri: str = "",
    baseline_uri: str = "",
) -> NamedTuple(
    "RunParams",
    [
        ("data", str),
        ("validate", str),
        ("preprocess", str),
        ("models", str),
        ("warm_start", str),
        ("train", str),
        ("evaluate", str),
        ("probe", str),
        ("register", str),
        ("data_key", str),
        ("models_key", str),
        ("model_key", str),
        ("baseline_key", str),
        ("model_uri", str),
        ("baseline_uri", str),
        ("gpus_per_node", int),
    ],
):
    """The run form -> each stage's params (omnir1.kube.params.RunParams, in its order)."""
    import dataclasses

    from omnir1.kube.params import resolve_run

    resolved = resolve_run(
        pipeline,
        recipe=recipe,
        overrides=overrides,
        data_source=data_source,
        data_version=data_version,
        gpus_per_node=gpus_per_node,
        base_models=base_models,
        model_uri=model_uri,
        baseline_uri=baseline_uri,
    )
    return dataclasses.astuple(resolved)


@cpu_component
def fetch_data(params: str, data_key: str, datasets: Output[Dataset], summary: Output[Metrics]):
    from omnir1.kube import steps

    with steps.params_file(params) as params_file:
        steps.log_metrics(summary, steps.fetch_data(params_file, datasets.path))


@cpu_component
def validate_data(
    params: str,
    datasets: Input[Dataset],
    reports: Output[Artifact],
    summary: Output[Metrics],
):
    from omnir1.kube import steps

    # the report also on the data PVC where the task sets OMNIR1_REPORT_COPY: kept if it fails
    copy = steps.report_copy_dir("validate")
    with steps.params_file(params) as params_file:
        figures = steps.validate(params_file, datasets.path, reports.path, copy)
    steps.log_metrics(summary, figures)


@cpu_component
def part_indices(parts: int) -> List[int]:  # noqa: UP006
    return list(range(parts))


@cpu_component
def preprocess_part(
    params: str,
    datasets: Input[Dataset],
    part: int,
    parts: int,
    shards: Output[Dataset],
    summary: Output[Metrics],
):
    from omnir1.kube import steps

    with steps.params_file(params) as params_file:
        figures = steps.preprocess(params_file, datasets.path, shards.path, part, parts)
    steps.log_metrics(summary, figures)


@cpu_component
def merge_shards(
    params: str,
    parts: Input[List[Dataset]],  # noqa: UP006
    shards: Output[Dataset],
):
    from omnir1.kube import steps

    with steps.params_file(params) as params_file:
        steps.merge_shards(params_file, [p.path for p in parts], shards.path)


@cpu_component
def base_models(params: str, models_key: str, models: Output[Model]):
    from omnir1.kube import steps

    with steps.params_file(params) as params_file:
        steps.base_models(params_file, models.path)


@cpu_component
def fetch_model(params: str, uri: str, model_key: str, model: Output[Model]):
    from omnir1.kube import steps

    with steps.params_file(params) as params_file:
        steps.fetch_model(params_file, uri, model.path)


@gpu_component
def warm_start(
    params: str,
    datasets: Input[Dataset],
    models: Input[Model],
    warm: Output[Model],
    summary: Output[Metrics],
):
    from omnir1.kube import steps

    with steps.params_file(params) as params_file:
        figures = steps.warm_start(params_file, datasets.path, models.path, warm.path)
    steps.log_metrics(summary, figures)


@gpu_component
def train(
    params: str,
    datasets: Input[Dataset],
    shards: Input[Dataset],
    models: Input[Model],
    device: str,
    checkpoint_root: str,
    gpus_per_node: int,
    model: Output[Model],
    run: Output[Artifact],
    summary: Output[Metrics],
    system2_url: str = "",
    system2_root: str = "",
):
    from omnir1.kube import steps

    with steps.params_file(params) as params_file:
        figures = steps.train(
            params_file,
            datasets.path,
            shards.path,
            models.path,
            run.path,
            model.path,
            device=device,
            checkpoint_root=checkpoint_root,
            gpus_per_node=gpus_per_node,
            system2_url=system2_url,
            system2_root=system2_root,
        )
    steps.log_metrics(summary, figures)


@gpu_component
def predict_part(
    params: str,
    datasets: Input[Dataset],
    shards: Input[Dataset],
    part: int,
    parts: int,
    device: str,
    predictions: Output[Artifact],
    untrained: Input[Model] = None,
    trained: Input[Model] = None,
):
    from omnir1.kube import steps

    with steps.params_file(params) as params_file:
        steps.predict(
            params_file,
            datasets.path,
            shards.path,
            steps.path_of(untrained),
            steps.path_of(trained),
            predictions.path,
            part,
            parts,
            device=device,
        )


@cpu_component
def score(
    params: str,
    datasets: Input[Dataset],
    parts: Input[List[Artifact]],  # noqa: UP006
    evaluation: Output[Artifact],
    summary: Output[Metrics],
    untrained: Input[Model] = None,
    trained: Input[Model] = None,
):
    from omnir1.kube import steps

    with steps.params_file(params) as params_file:
        figures = steps.score(
            params_file,
            datasets.path,
            steps.path_of(untrained),
            steps.path_of(trained),
            [p.path for p in parts],
            evaluation.path,
        )
    steps.log_metrics(summary, figures)


@gpu_component
def probe(
    params: str,
    datasets: Input[Dataset],
    evaluation: Input[Artifact],
    device: str,
    answers: Output[Artifact],
    summary: Output[Metrics],
    untrained: Input[Model] = None,
    trained: Input[Model] = None,
):
    from omnir1.kube import steps

    with steps.params_file(params) as params_file:
        figures = steps.probe(
            params_file,
            datasets.path,
            steps.path_of(untrained),
            steps.path_of(trained),
            evaluation.path,
            answers.path,
            device=device,
        )
    steps.log_metrics(summary, figures)


@cpu_component
def register(
    params: str,
    model: Input[Model],
    evaluation: Input[Artifact],
    answers: Input[Artifact],
    run_id: str,
    decision: Output[Artifact],
    summary: Output[Metrics],
    run: Input[Artifact] = None,
):
    from omnir1.kube import steps

    with steps.params_file(params) as params_file:
        figures = steps.register(
            params_file,
            model.path,
            evaluation.path,
            answers.path,
            decision.path,
            run_id,
            train_run=run.path if run else None,
        )
    steps.log_metrics(summary, figures)


@cpu_component
def report(
    evaluation: Input[Artifact],
    answers: Input[Artifact],
    html: Output[HTML],
    run: Input[Artifact] = None,
    decision: Input[Artifact] = None,
):
    from omnir1.kube import steps

    steps.report(
        html.path,
        evaluation.path,
        answers.path,
        steps.path_of(run),
        steps.path_of(decision),
    )
