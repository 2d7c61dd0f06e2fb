"""The stages of dvc.yaml as the Kubeflow components run them (components/stages.py).

Each step calls the library function the DVC stage's `omnir1` command calls, with the folders
of the task's input and output artifacts in place of the repository's paths; it returns the
scalar figures the component logs into its Metrics artifact (what the Kubeflow UI shows). An
error (bad input names its file and field) fails the task.

Each step's params.yaml is `params_file(values)`: the values of the keys its stage reads, as
the run's first step resolved them (omnir1.kube.params), over the image's params.yaml.

Artifact layouts (every folder artifact mirrors the repository's layout for one stage):
    datasets    FORMAT/...                  (data/sets)
    shards      FORMAT/...                  (data/shards; one per part, then merged)
    models      a model folder              (models/tiny, models/warm, runs/train/model)
    train run   train.json, train_curve.json, the run folder's logs
    evaluation  FORMAT/MODEL/..., evaluate.json   (reports/evaluate + metrics/evaluate.json)
    probe       probe answers, probe.json   (reports/probe + metrics/probe.json)
    decision    register.json, register.md  (reports/register.*)
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from omnir1.errors import OmniR1Error
from omnir1.fsutil import read_json

UNTRAINED, TRAINED = "untrained", "trained"
# in a Model artifact that holds no model: the evaluation pipeline's baseline when it has none
NO_MODEL = ".omnir1-no-model"


class StepError(OmniR1Error):
    exit_code = 1


def _params(params: str):
    from omnir1.config import load_params

    return load_params(params)


def flat_metrics(values: Mapping, prefix: str = "") -> dict[str, float]:
    """Nested JSON figures as {dotted.name: number} (what a kfp Metrics artifact holds)."""
    from omnir1.registry import flatten_metrics

    return flatten_metrics(values, prefix)


def params_file(values: str):
    """A context: the step's params.yaml (its stage's `values`, JSON of resolve-params, over
    the image's params.yaml) while the step runs; yields its path."""
    from omnir1.kube.params import stage_params_file

    return stage_params_file(values)


def path_of(artifact) -> str | None:
    """An optional input artifact's path (None when the task was given none, or a model
    artifact that holds no model)."""
    if not artifact or (Path(artifact.path) / NO_MODEL).is_file():
        return None
    return artifact.path


def log_metrics(artifact, values: Mapping[str, float]) -> None:
    """Log figures into a kfp Metrics output artifact, and as JSON into its file: kfp.local's
    cache takes an output whose file is missing for a result that is gone."""
    import json

    for name, value in values.items():
        artifact.log_metric(name, value)
    Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
    Path(artifact.path).write_text(json.dumps(dict(values), indent=1, sort_keys=True))


# ----------------------------------------------------------------------------------- stages


def fetch_data(params: str, datasets: str) -> dict[str, float]:
    """data@FORMAT for every format of data.formats."""
    from omnir1.data.fetch import fetch_to_files

    settings = _params(params)
    figures = {}
    for fmt in settings.data.formats:
        report = fetch_to_files(settings, fmt, Path(datasets) / fmt, None, progress=False)
        figures.update(flat_metrics(report, f"{fmt}."))
    return figures


# Kubeflow uploads a step's output artifacts only when it succeeds: a step that must keep its
# report when it fails also copies it under this folder (on the data PVC), set on its task
REPORT_COPY_ENV = "OMNIR1_REPORT_COPY"


def report_copy_dir(stage: str) -> str | None:
    """$OMNIR1_REPORT_COPY/RUN/STAGE, or None when the variable is unset (kfp.local, tests).
    RUN is $KFP_RUN_ID where the pipeline puts the run's id in the pod's environment, else the
    pod's name, which KFP sets in every task (KFP_POD_NAME), else the UTC time."""
    root = os.environ.get(REPORT_COPY_ENV)
    if not root:
        return None
    import datetime as dt

    run = os.environ.get("KFP_RUN_ID") or os.environ.get("KFP_POD_NAME")
    run = run or dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return str(Path(root) / run / stage)


def validate(
    params: str, datasets: str, reports: str, report_copy: str | None = None
) -> dict[str, float]:
    """validate@FORMAT: Data Docs and report.json under reports/FORMAT (and report_copy/FORMAT),
    pass or fail; a violated expectation then fails the task."""
    from omnir1.data.validate import raise_on_failure, summary, validate_dataset

    settings = _params(params)
    figures = {}
    for fmt in settings.data.formats:
        out = Path(reports) / fmt
        copy = None if report_copy is None else Path(report_copy) / fmt
        report = validate_dataset(
            fmt, Path(datasets) / fmt, out, settings.validation, progress=False, copy_to=copy
        )
        raise_on_failure(report, out)
        figures.update(flat_metrics(summary(report), f"{fmt}."))
    return figures


def preprocess(params: str, datasets: str, shards: str, part: int, parts: int) -> dict:
    """preprocess@FORMAT for one part of every data set's videos (fan-out)."""
    from omnir1.data.preprocess import preprocess as build_shards

    settings = _params(params)
    figures = {}
    for fmt in settings.data.formats:
        summary = build_shards(
            fmt,
            Path(datasets) / fmt,
            Path(shards) / fmt,
            settings.system1,
            workers=settings.preprocess.workers,
            prefer=settings.preprocess.prefer,
            part=(part, parts),
        )
        figures.update(flat_metrics(summary, f"{fmt}."))
    return figures


def merge_shards(params: str, parts: Sequence[str], shards: str) -> None:
    """The parts' shards as one folder per format."""
    from omnir1.data.preprocess import merge_shards as merge

    for fmt in _params(params).data.formats:
        merge([Path(p) / fmt for p in parts], Path(shards) / fmt)


def base_models(params: str, models: str) -> None:
    """The models GRPO starts from (omnir1.registry.base_models: models.dir, or the embedded
    default's tiny models built here), as dvc.yaml's models stage."""
    from omnir1.registry import base_models as prepare

    prepare(_params(params), models)


def fetch_model(params: str, uri: str, models: str) -> None:
    """The model at `uri` into `models`; "" leaves an artifact that holds no model."""
    from omnir1.registry import fetch_model as fetch

    if not uri:
        Path(models).mkdir(parents=True, exist_ok=True)
        (Path(models) / NO_MODEL).write_text("no model: the run named none\n")
        return
    fetch(_params(params), uri, models)


def warm_start(params: str, datasets: str, models: str, warm: str) -> dict[str, float]:
    from omnir1.rl.warmstart import run_warm_start

    settings = _params(params)
    fmt = settings.data.train_format
    summary = run_warm_start(
        settings, data=Path(datasets) / fmt, fmt=fmt, models_dir=models, out=warm
    )
    return flat_metrics(summary)


def train(
    params: str,
    datasets: str,
    shards: str,
    models: str,
    run: str,
    model: str,
    *,
    device: str = "cpu",
    checkpoint_root: str = "",
    gpus_per_node: int = 1,
    system2_url: str = "",
    system2_root: str = "",
) -> dict[str, float]:
    """GRPO in this pod with `--resume auto`, one process per GPU (`omnir1.rl.launch`). With
    `checkpoint_root` (a PVC path that outlives the task) the checkpoints live in a folder named
    after the run's fingerprint (training params, data, models): a retried task, or a pipeline
    resubmitted with the same inputs, continues from the last checkpoint; a run of other inputs
    never does. With `system2_url` the rewards come from that System-2 service (videos under
    `system2_root`, its data root as mounted here, go by path; others are uploaded)."""
    from omnir1.errors import OmniR1Error
    from omnir1.rl import launch
    from omnir1.rl.checkpoints import fingerprint_key, run_fingerprint
    from omnir1.rl.train import run_training

    settings = _params(params)
    fmt = settings.data.train_format
    data, shards_of = Path(datasets) / fmt, Path(shards) / fmt
    run_dir = Path(run) / "run"
    checkpoints = run_dir / "checkpoints"
    if checkpoint_root:
        fingerprint = run_fingerprint(settings, data=data, fmt=fmt, models_dir=Path(models))
        checkpoints = Path(checkpoint_root) / fingerprint_key(fingerprint)
    if gpus_per_node > 1:
        args = ["--data", data, "--format", fmt, "--models", models, "--out", run_dir]
        args += ["--resume", "auto", "--checkpoints", checkpoints, "--device", device]
        args += ["--shards", shards_of, "--params", params]
        args += _system2_args(system2_url, system2_root)
        code = launch.relaunch(args, gpus_per_node, settings.train.accelerate_config)
        if code:
            raise OmniR1Error(f"training ranks failed (exit code {code}); see their log above")
    else:
        run_training(
            settings,
            data=data,
            fmt=fmt,
            models_dir=models,
            out=run_dir,
            resume="auto",
            checkpoints=checkpoints,
            device=device,
            shards=shards_of,
            system2_url=system2_url or None,
            system2_root=system2_root or None,
        )
    for name in ("train.json", "train_curve.json"):  # what run_training wrote into its folder
        shutil.copy(run_dir / name, Path(run) / name)
    shutil.copytree(run_dir / "model", model, dirs_exist_ok=True)
    return flat_metrics(read_json(Path(run) / "train.json"))


TRAIN_TIMEOUT_S = 7 * 24 * 3600.0  # GRPO's longest run (the training tasks' pod deadline too)


def train_multi_node(
    params: str,
    datasets: str,
    shards: str,
    models: str,
    run: str,
    model: str,
    *,
    nodes: int,
    gpus_per_node: int,
    workdir_root: str,
    job_id: str | None = None,
    timeout_s: float = TRAIN_TIMEOUT_S,
    system2_url: str = "",
) -> dict[str, float]:
    """GRPO as a PyTorchJob over `nodes` pods: the inputs are staged on the data PVC (which
    every worker mounts), the job runs `omnir1 train` under accelerate + DeepSpeed, and the
    model and curves are copied back into this task's outputs. The staging folder is named
    after the run's fingerprint (training params, data, models), as one-pod checkpoints are: a
    retried task, or a pipeline resubmitted with the same inputs, resumes the job's last
    checkpoint. `job_id` names the job (default: $OMNIR1_POD_UID, unique to each try)."""
    from kubernetes import client, config

    from omnir1.kube import pytorchjob
    from omnir1.rl.checkpoints import fingerprint_key, run_fingerprint

    settings = _params(params)
    fmt = settings.data.train_format
    key = fingerprint_key(
        run_fingerprint(settings, data=Path(datasets) / fmt, fmt=fmt, models_dir=Path(models))
    )
    work = Path(workdir_root) / key
    inputs = work / "inputs"
    shutil.copytree(Path(datasets) / fmt, inputs / "data", dirs_exist_ok=True)
    shutil.copytree(Path(shards) / fmt, inputs / "shards", dirs_exist_ok=True)
    shutil.copytree(models, inputs / "models", dirs_exist_ok=True)
    shutil.copy(params, inputs / "params.yaml")
    run_dir = work / "run"
    args = [
        "--data",
        inputs / "data",
        "--format",
        fmt,
        "--shards",
        inputs / "shards",
        "--models",
        inputs / "models",
        "--out",
        run_dir,
        "--params",
        inputs / "params.yaml",
        "--metrics",
        work / "train.json",
        "--curve",
        work / "train_curve.json",
        "--device",
        "cuda",
    ]
    args += _system2_args(system2_url, pytorchjob.DATA_MOUNT)  # inputs staged on the PVC
    secret_env = {"MLFLOW_TRACKING_URI": ("omnir1-mlflow", "MLFLOW_TRACKING_URI")}
    if system2_url:
        secret_env["OMNIR1_SYSTEM2_TOKEN"] = ("omnir1-system2-token", "OMNIR1_SYSTEM2_TOKEN")
    if (run_dir / "checkpoints").is_dir():
        args.append("--resume")
    config.load_incluster_config()
    namespace = Path(SERVICE_ACCOUNT_NAMESPACE).read_text().strip()
    spec = pytorchjob.JobSpec(
        name=pytorchjob.job_name(job_id or os.environ.get(POD_UID_ENV) or key),
        namespace=namespace,
        image=os.environ["OMNIR1_TRAINER_IMAGE"],  # set by the pipeline: the GPU image
        train_args=[str(a) for a in args],
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        secret_env=secret_env,
    )
    runner = pytorchjob.PyTorchJobRunner(client.ApiClient(), namespace)
    runner.run(pytorchjob.job_manifest(spec), timeout_s)
    shutil.copytree(run_dir / "model", model, dirs_exist_ok=True)
    Path(run).mkdir(parents=True, exist_ok=True)
    for name in ("train.json", "train_curve.json"):
        shutil.copy(work / name, Path(run) / name)
    return flat_metrics(read_json(Path(run) / "train.json"))


SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
POD_UID_ENV = "OMNIR1_POD_UID"  # the task's pod's uid (pipelines/cluster.py sets it)


def _system2_args(url: str, root: str) -> list[str]:
    """`omnir1 train` options that send System 2's calls to the service at `url`."""
    return ["--system2-url", url, "--system2-root", root] if url else []


def _models(untrained: str | None, trained: str | None) -> dict[str, str]:
    """The models under the labels metrics/evaluate.json and the registry gates use."""
    return {name: path for name, path in ((UNTRAINED, untrained), (TRAINED, trained)) if path}


def _benchmark(params: str, datasets: str, untrained, trained, out: str, **kwargs) -> dict:
    from omnir1.eval.benchmark import run_benchmark

    settings = _params(params)
    return run_benchmark(
        settings,
        data={fmt: str(Path(datasets) / fmt) for fmt in settings.data.formats},
        models=_models(untrained, trained),
        out=out,
        progress=False,
        **kwargs,
    )


def predict(
    params: str,
    datasets: str,
    shards: str,
    untrained: str | None,
    trained: str | None,
    predictions: str,
    part: int,
    parts: int,
    *,
    device: str = "cpu",
) -> None:
    """The evaluate stage's predictions for one part of the videos (fan-out)."""
    formats = _params(params).data.formats
    _benchmark(
        params,
        datasets,
        untrained,
        trained,
        predictions,
        metrics=None,
        device=device,
        shards={fmt: str(Path(shards) / fmt) for fmt in formats},
        part=(part, parts),
    )


def score(
    params: str,
    datasets: str,
    untrained: str | None,
    trained: str | None,
    parts: Sequence[str],
    evaluation: str,
) -> dict[str, float]:
    """The evaluate stage's scores over every part's predictions: evaluation/evaluate.json."""
    metrics = Path(evaluation) / "evaluate.json"
    _benchmark(params, datasets, untrained, trained, evaluation, metrics=metrics, merge=parts)
    report = read_json(metrics)
    return flat_metrics({k: report[k] for k in (UNTRAINED, TRAINED, "delta") if k in report})


def probe(
    params: str,
    datasets: str,
    untrained: str | None,
    trained: str | None,
    evaluation: str,
    out: str,
    *,
    device: str = "cpu",
) -> dict[str, float]:
    from omnir1.eval.probe import run_probe

    settings = _params(params)
    metrics = Path(out) / "probe.json"
    run_probe(
        settings,
        data={fmt: str(Path(datasets) / fmt) for fmt in settings.data.formats},
        models=_models(untrained, trained),
        out=Path(out) / "answers",
        metrics=metrics,
        evaluation=Path(evaluation) / "evaluate.json",
        progress=False,
        device=device,
    )
    report = read_json(metrics)
    return flat_metrics({k: report[k] for k in (UNTRAINED, TRAINED) if k in report})


def register(
    params: str,
    model: str,
    evaluation: str,
    probe_out: str,
    decision: str,
    run_id: str = "",
    train_run: str | None = None,
) -> dict:
    """A new registry version, promoted when the gates of params.yaml register hold, tagged
    with the pipeline run's id (how the nightly DAG finds what its run registered), in the
    training's MLflow run (`train_run`: the train step's run folder with train.json)."""
    from omnir1.orchestration import RUN_TAG
    from omnir1.registry import register_model

    result = register_model(
        _params(params),
        model,
        [("eval", Path(evaluation) / "evaluate.json"), ("probe", Path(probe_out) / "probe.json")],
        Path(decision) / "register.json",
        params_file=params,
        extra_tags={RUN_TAG: run_id} if run_id else None,
        train_summary=Path(train_run) / "train.json" if train_run else None,
    )
    return {"promoted": float(result["promoted"]), "version": float(result["version"])}


def report(
    html: str,
    evaluation: str,
    probe_out: str,
    train_run: str | None = None,
    decision: str | None = None,
) -> None:
    """reports/index.html from the stages' artifacts, laid out as `dvc repro` leaves them (the
    evaluation-only pipeline has no training run and no decision)."""
    import tempfile

    from omnir1.report import build_report

    with tempfile.TemporaryDirectory() as tmp:
        metrics, reports = Path(tmp) / "metrics", Path(tmp) / "reports"
        copies = {
            Path(evaluation) / "evaluate.json": metrics / "evaluate.json",
            Path(probe_out) / "probe.json": metrics / "probe.json",
        }
        if train_run:
            for name in ("train.json", "train_curve.json"):
                copies[Path(train_run) / name] = metrics / name
        if decision:
            for name in ("register.json", "register.md"):
                copies[Path(decision) / name] = reports / name
        for src, dst in copies.items():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
        reports.mkdir(parents=True, exist_ok=True)
        (reports / "evaluate").symlink_to(Path(evaluation).resolve())
        build_report(metrics, reports, Path(tmp) / "index.html")
        shutil.copy(Path(tmp) / "index.html", html)
        uri = os.environ.get("MLFLOW_TRACKING_URI")  # the task's Secret (pipelines/cluster.py)
        if decision and uri:  # into the MLflow run of the version the register step made
            from omnir1.registry import log_report

            index = Path(tmp) / "index.html"
            log_report(reports / "register.json", [index, index.with_suffix(".md")], uri)
