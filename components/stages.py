"""Kubeflow components, one per stage of dvc.yaml: thin adapters over `omnir1.kube.steps`
(each step is the stage's omnir1 CLI call on the task's artifact folders).

Lightweight Python components whose body only imports the library: the image (docker/
component.Dockerfile, or the GPU trainer image for the GPU tasks) has omnir1 and kfp
installed, so nothing is pip-installed at run time, and `kfp.local`'s SubprocessRunner runs the
same components in this venv. OMNIR1_IMAGE and OMNIR1_GPU_IMAGE choose the images when the
pipelines are compiled.
"""

import ast
import hashlib
import linecache
import os
from typing import List  # noqa: UP035 (kfp reads typing.List in component signatures)

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from omnir1 import __version__
from omnir1.kube.params import PipelineParameter

IMAGE = os.environ.get("OMNIR1_IMAGE", f"ghcr.io/omni-r1-ops/omnir1:{__version__}")
GPU_IMAGE = os.environ.get("OMNIR1_GPU_IMAGE", f"ghcr.io/omni-r1-ops/omnir1-gpu:{__version__}")

cpu_component = dsl.component(base_image=IMAGE, install_kfp_package=False)
gpu_component = dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)


def render_params_component(parameters: list[PipelineParameter]):
    """The first step: every pipeline parameter in, params.yaml out. kfp runs a component
    from its source text and passes only the arguments that text declares, so the function is
    written out with one typed, defaulted argument per leaf of params.yaml.

    The source is exec'd: names come from the Params model, defaults are written with repr()
    and must read back with ast.literal_eval, so a params value is data, never code."""
    for p in parameters:
        if not p.name.isidentifier() or ast.literal_eval(repr(p.default)) != p.default:
            raise ValueError(f"pipeline parameter {p.name!r}: not a name with a literal default")
    args = "".join(f"    {p.name}: {p.annotation.__name__} = {p.default!r},\n" for p in parameters)
    source = (
        "def render_params(\n    params: Output[Artifact],\n" + args + "):\n"
        "    values = dict(locals())\n"
        "    del values['params']\n"
        "    from omnir1.kube.params import render_params\n\n"
        "    render_params(values, params.path)\n"
    )
    filename = f"<omnir1-render-params-{hashlib.sha256(source.encode()).hexdigest()[:12]}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {"Output": Output, "Artifact": Artifact}
    exec(compile(source, filename, "exec"), namespace)
    return cpu_component(namespace["render_params"])


@cpu_component
def fetch_data(params: Input[Artifact], datasets: Output[Dataset], summary: Output[Metrics]):
    from omnir1.kube import steps

    steps.log_metrics(summary, steps.fetch_data(params.path, datasets.path))


@cpu_component
def validate_data(
    params: Input[Artifact],
    datasets: Input[Dataset],
    reports: Output[Artifact],
    summary: Output[Metrics],
):
    from omnir1.kube import steps

    # the report also on the data PVC where the task sets OMNIR1_REPORT_COPY: kept if it fails
    copy = steps.report_copy_dir("validate")
    steps.log_metrics(summary, steps.validate(params.path, datasets.path, reports.path, copy))


@cpu_component
def part_indices(parts: int) -> List[int]:  # noqa: UP006
    return list(range(parts))


@cpu_component
def preprocess_part(
    params: Input[Artifact],
    datasets: Input[Dataset],
    part: int,
    parts: int,
    shards: Output[Dataset],
    summary: Output[Metrics],
):
    from omnir1.kube import steps

    steps.log_metrics(
        summary, steps.preprocess(params.path, datasets.path, shards.path, part, parts)
    )


@cpu_component
def merge_shards(
    params: Input[Artifact],
    parts: Input[List[Dataset]],  # noqa: UP006
    shards: Output[Dataset],
):
    from omnir1.kube import steps

    steps.merge_shards(params.path, [p.path for p in parts], shards.path)


@cpu_component
def base_models(params: Input[Artifact], models: Output[Model]):
    from omnir1.kube import steps

    steps.base_models(params.path, models.path)


@cpu_component
def fetch_model(params: Input[Artifact], uri: str, model: Output[Model]):
    from omnir1.kube import steps

    steps.fetch_model(params.path, uri, model.path)


@gpu_component
def warm_start(
    params: Input[Artifact],
    datasets: Input[Dataset],
    models: Input[Model],
    warm: Output[Model],
    summary: Output[Metrics],
):
    from omnir1.kube import steps

    steps.log_metrics(summary, steps.warm_start(params.path, datasets.path, models.path, warm.path))


@gpu_component
def train(
    params: Input[Artifact],
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

    figures = steps.train(
        params.path,
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
    params: Input[Artifact],
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

    steps.predict(
        params.path,
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
    params: Input[Artifact],
    datasets: Input[Dataset],
    parts: Input[List[Artifact]],  # noqa: UP006
    evaluation: Output[Artifact],
    summary: Output[Metrics],
    untrained: Input[Model] = None,
    trained: Input[Model] = None,
):
    from omnir1.kube import steps

    figures = steps.score(
        params.path,
        datasets.path,
        steps.path_of(untrained),
        steps.path_of(trained),
        [p.path for p in parts],
        evaluation.path,
    )
    steps.log_metrics(summary, figures)


@gpu_component
def probe(
    params: Input[Artifact],
    datasets: Input[Dataset],
    evaluation: Input[Artifact],
    device: str,
    answers: Output[Artifact],
    summary: Output[Metrics],
    untrained: Input[Model] = None,
    trained: Input[Model] = None,
):
    from omnir1.kube import steps

    figures = steps.probe(
        params.path,
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
    params: Input[Artifact],
    model: Input[Model],
    evaluation: Input[Artifact],
    answers: Input[Artifact],
    run_id: str,
    decision: Output[Artifact],
    summary: Output[Metrics],
    run: Input[Artifact] = None,
):
    from omnir1.kube import steps

    figures = steps.register(
        params.path,
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
