"""`omnir1 pipeline compile | run --local | submit`: the Kubeflow pipelines of pipelines/.

pipelines/training.py and pipelines/evaluation.py each define `build(local)` returning a kfp
pipeline whose parameters are the run form (a few typed settings and `overrides`; the params
values come from the image's params.yaml at run time: omnir1.kube.params); this module loads
them from the project folder, compiles them to YAML packages, runs them with kfp.local, or
submits a run to Kubeflow.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omnir1.errors import ConfigError

PIPELINES = {"training": "pipelines.training", "evaluation": "pipelines.evaluation"}
# the Helm chart's ServiceAccount whose Role may create PyTorchJobs (helm/omni-r1 rbac.yaml)
RUNNER_SERVICE_ACCOUNT = "omnir1-pipeline-runner"
# kfp.local runs on this machine's CPU; checkpoints go beside the pipeline root
# (PIPELINE_ROOT-checkpoints), so a local run killed mid-training resumes when run again
LOCAL_SETTINGS = {"device": "cpu"}


def load_pipeline(which: str, project: str | Path = ".", local: bool = False):
    """The kfp pipeline `which` (training or evaluation) of the project folder's pipelines/
    (`local`: as kfp.local runs it)."""
    if which not in PIPELINES:
        raise ConfigError(None, f"unknown pipeline {which!r}; valid: {sorted(PIPELINES)}")
    project = Path(project).resolve()
    if not (project / "pipelines" / f"{which}.py").is_file():
        raise ConfigError(project, f"no pipelines/{which}.py here (is this the project folder?)")
    if str(project) not in sys.path:
        sys.path.insert(0, str(project))
    return importlib.import_module(PIPELINES[which]).build(local=local)


def run_arguments(pipeline, arguments: Mapping[str, Any] | None) -> dict:
    """`arguments` for `pipeline`: params keys among them folded into `overrides`, and a
    value given to a string parameter as JSON (`--set data_version=3`, `--set overrides={}`)
    written back as its text."""
    import json

    from omnir1.kube.params import fold_overrides

    inputs = pipeline.component_spec.inputs
    given = fold_overrides(arguments or {}, inputs)
    for name, value in given.items():
        if inputs[name].type == "String" and not isinstance(value, str):
            given[name] = json.dumps(value)
    return given


def compile_pipelines(out: str | Path, project: str | Path = ".") -> dict:
    """Every pipeline as OUT/{name}.yaml (written atomically); returns {name: path}."""
    from kfp import compiler

    from omnir1.fsutil import atomic_path

    written = {}
    for which in PIPELINES:
        target = Path(out) / f"{which}.yaml"
        with atomic_path(target) as staging:
            spec = staging.with_suffix(".yaml")  # kfp insists on the extension
            compiler.Compiler().compile(load_pipeline(which, project), str(spec))
            spec.replace(staging)
        written[which] = str(target)
    return written


def run_local(
    which: str = "training",
    project: str | Path = ".",
    params_file=None,
    pipeline_root: str | Path = "runs/kfp-local",
    arguments: Mapping[str, Any] | None = None,
    cache: bool = False,
) -> dict:
    """Run a pipeline with kfp.local (SubprocessRunner, this venv): every component is the
    same code the cluster runs, on the CPU, from `params_file` (default PROJECT/params.yaml)
    and PROJECT/configs/params as the image's. `cache`: Kubeflow's caching, kept in
    PIPELINE_ROOT-cache (a task with the same inputs as an earlier one is not run again; the
    result then names only this run's outputs). Returns the run folder and its main outputs;
    a failed task raises StepError naming it."""
    from kfp import local

    from omnir1.kube.params import PARAMS_ENV, PROJECT_ENV
    from omnir1.kube.steps import StepError

    project = Path(project).resolve()
    params = Path(params_file).resolve() if params_file else project / "params.yaml"
    if not params.is_file():
        raise ConfigError(params, "file not found")
    root = Path(pipeline_root).resolve()
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root),
        raise_on_error=True,
        enable_caching=cache,
        cache_root=f"{root}-cache",
    )
    os.environ.setdefault("OMNIR1_PIPELINE_RETRIES", "0")  # see pipelines/cluster.py
    os.environ[PROJECT_ENV], os.environ[PARAMS_ENV] = str(project), str(params)  # the tasks'
    pipeline = load_pipeline(which, project, local=True)
    settings = {**LOCAL_SETTINGS, "checkpoint_root": f"{root}-checkpoints"}
    given = {k: v for k, v in settings.items() if k in pipeline.component_spec.inputs}
    given.update(run_arguments(pipeline, arguments))
    if int(given.get("train_nodes", 1)) > 1:
        raise ConfigError(None, "a PyTorchJob needs a cluster: `pipeline submit`", "train_nodes")
    before = set(root.glob("*")) if root.is_dir() else set()
    try:
        pipeline(**given)
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

    pipeline = load_pipeline(which, project)
    arguments = run_arguments(pipeline, arguments)  # input errors before any call
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
