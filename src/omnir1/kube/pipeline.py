"""`omnir1 pipeline compile | run --local | submit`: the Kubeflow pipelines of pipelines/.

pipelines/training.py and pipelines/evaluation.py each define `build(params_file)` returning
a kfp pipeline whose parameters are every leaf of params.yaml (omnir1.kube.params) plus the
cluster settings of `ClusterSettings`; this module loads them from the project folder, compiles
them to YAML packages, runs the training pipeline with kfp.local, or submits to Kubeflow.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from omnir1.errors import ConfigError
from omnir1.kube.params import PipelineParameter

PIPELINES = {"training": "pipelines.training", "evaluation": "pipelines.evaluation"}
# the Helm chart's ServiceAccount whose Role may create PyTorchJobs (helm/omni-r1 rbac.yaml)
RUNNER_SERVICE_ACCOUNT = "omnir1-pipeline-runner"
# kfp.local runs on this machine's CPU; checkpoints go beside the pipeline root
# (PIPELINE_ROOT-checkpoints), so a local run killed mid-training resumes when run again
LOCAL_SETTINGS = {"device": "cpu"}


def pipeline_with_parameters(
    name: str,
    description: str,
    body: Callable[..., None],
    params: list[PipelineParameter],
    settings: Mapping[str, tuple[type, Any]],
):
    """A kfp pipeline named `name` whose parameters are `settings` {name: (type, default)}
    followed by every params.yaml leaf; `body(settings: dict, values: dict)` builds the graph
    (kfp calls the pipeline function positionally, in signature order)."""
    from kfp import dsl

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    fields = [inspect.Parameter(k, kind, annotation=t, default=d) for k, (t, d) in settings.items()]
    fields += [
        inspect.Parameter(p.name, kind, annotation=p.annotation, default=p.default) for p in params
    ]
    names = [f.name for f in fields]

    def pipeline_func(*args):
        given = dict(zip(names, args, strict=True))
        body({k: given[k] for k in settings}, {p.name: given[p.name] for p in params})

    pipeline_func.__name__ = name.replace("-", "_")
    pipeline_func.__signature__ = inspect.Signature(fields)
    pipeline_func.__annotations__ = {f.name: f.annotation for f in fields}
    return dsl.pipeline(name=name, description=description)(pipeline_func)


def load_pipeline(
    which: str, project: str | Path = ".", params_file: str | Path | None = None, local=False
):
    """The kfp pipeline `which` (training or evaluation) of the project folder's pipelines/
    (`local`: for kfp.local, which cannot take null parameter defaults)."""
    if which not in PIPELINES:
        raise ConfigError(None, f"unknown pipeline {which!r}; valid: {sorted(PIPELINES)}")
    project = Path(project).resolve()
    if not (project / "pipelines" / f"{which}.py").is_file():
        raise ConfigError(project, f"no pipelines/{which}.py here (is this the project folder?)")
    if str(project) not in sys.path:
        sys.path.insert(0, str(project))
    module = importlib.import_module(PIPELINES[which])
    return module.build(params_file or project / "params.yaml", local=local)


def compile_pipelines(out: str | Path, project: str | Path = ".", params_file=None) -> dict:
    """Every pipeline as OUT/{name}.yaml (written atomically); returns {name: path}."""
    from kfp import compiler

    from omnir1.fsutil import atomic_path

    written = {}
    for which in PIPELINES:
        target = Path(out) / f"{which}.yaml"
        with atomic_path(target) as staging:
            spec = staging.with_suffix(".yaml")  # kfp insists on the extension
            compiler.Compiler().compile(load_pipeline(which, project, params_file), str(spec))
            spec.replace(staging)
        written[which] = str(target)
    return written


def run_local(
    which: str = "training",
    project: str | Path = ".",
    params_file=None,
    pipeline_root: str | Path = "runs/kfp-local",
    arguments: Mapping[str, Any] | None = None,
) -> dict:
    """Run a pipeline with kfp.local (SubprocessRunner, this venv): every component is the
    same code the cluster runs, on the CPU. Returns the run folder and its main outputs; a
    failed task raises StepError naming it."""
    from kfp import local

    from omnir1.kube.steps import StepError

    root = Path(pipeline_root).resolve()
    local.init(
        runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True
    )
    os.environ.setdefault("OMNIR1_PIPELINE_RETRIES", "0")  # see pipelines/cluster.py
    pipeline = load_pipeline(which, project, params_file, local=True)
    before = set(root.glob("*")) if root.is_dir() else set()
    try:
        settings = {**LOCAL_SETTINGS, "checkpoint_root": f"{root}-checkpoints"}
        local = {k: v for k, v in settings.items() if k in pipeline.component_spec.inputs}
        pipeline(**{**local, **(arguments or {})})
    except RuntimeError as exc:  # kfp.local: "Pipeline ... finished with status FAILURE ..."
        raise StepError(f"pipeline {which} failed: {exc}") from None
    (run,) = set(root.glob("*")) - before

    def first(pattern: str) -> str | None:
        found = sorted(run.glob(pattern))
        return str(found[0]) if found else None

    return {
        "pipeline": which,
        "run": str(run),
        "report": first("report*/html"),
        "decision": first("register*/decision/register.json"),
        "evaluation": first("score*/evaluation/evaluate.json"),
    }


def submit(
    host: str,
    which: str = "training",
    project: str | Path = ".",
    params_file=None,
    arguments: Mapping[str, Any] | None = None,
    experiment: str = "omnir1",
    run_name: str | None = None,
    namespace: str | None = None,
    service_account: str | None = RUNNER_SERVICE_ACCOUNT,
) -> str:
    """Submit a pipeline run to the Kubeflow Pipelines endpoint `host`; returns the run id.
    The token comes from KF_PIPELINES_TOKEN (a Kubernetes Secret in-cluster) when set."""
    import kfp

    from omnir1.kube.steps import StepError

    pipeline = load_pipeline(which, project, params_file)  # input errors before any call
    try:
        client = kfp.Client(
            host=host, existing_token=os.environ.get("KF_PIPELINES_TOKEN"), namespace=namespace
        )
        result = client.create_run_from_pipeline_func(
            pipeline,
            arguments=dict(arguments or {}),
            experiment_name=experiment,
            run_name=run_name,
            service_account=service_account,
        )
    except Exception as exc:  # connection refused, HTTP errors from the API, bad token
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StepError(f"Kubeflow Pipelines at {host}: {first}") from None
    return result.run_id
