"""The stages of dvc.yaml as the Kubeflow components run them (components/stages.py).

Each step is the same `omnir1` CLI call the DVC stage makes, with the folders of the task's
input and output artifacts in place of the repository's paths; it returns the scalar figures
the component logs into its Metrics artifact (what the Kubeflow UI shows). A failing call
raises StepError with the command and its exit status, which fails the task.

Artifact layouts (every folder artifact mirrors the repository's layout for one stage):
    params      params.yaml (omnir1.kube.params.render_params)
    datasets    FORMAT/...                  (data/sets)
    shards      FORMAT/...                  (data/shards; one per part, then merged)
    models      a model folder              (models/tiny, models/warm, runs/train/model)
    train run   train.json, train_curve.json, the run folder's logs
    evaluation  FORMAT/MODEL/..., evaluate.json   (reports/evaluate + metrics/evaluate.json)
    probe       probe answers, probe.json   (reports/probe + metrics/probe.json)
    decision    register.json, register.md  (reports/register.*)
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from omnir1.errors import OmniR1Error
from omnir1.fsutil import read_json

# The models.dir value that means "build the embedded tiny models here" (dvc.yaml's models stage)
EMBEDDED_MODELS = "models/tiny"
UNTRAINED, TRAINED = "untrained", "trained"


class StepError(OmniR1Error):
    exit_code = 1


def omnir1(*argv, **options) -> None:
    """Run one omnir1 CLI command in this process: positional words, then `--name value` per
    option (data_root= -> --data-root; True -> a bare flag; a list -> the option repeated).
    A non-zero exit raises StepError."""
    from omnir1.cli import main

    words = [str(a) for a in argv]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        for item in value if isinstance(value, list | tuple) else [value]:
            if item is not None and item is not False:  # None / False: the option is left out
                words += [flag] if item is True else [flag, str(item)]
    try:
        code = main(words)
    except SystemExit as exc:  # argparse rejecting the arguments
        code = exc.code if isinstance(exc.code, int) else 2
    if code != 0:
        raise StepError(f"`omnir1 {' '.join(words)}` exited with status {code}")


def _params(params: str):
    from omnir1.config import load_params

    return load_params(params)


def flat_metrics(values: Mapping, prefix: str = "") -> dict[str, float]:
    """Nested JSON figures as {dotted.name: number} (what a kfp Metrics artifact holds)."""
    from omnir1.registry import flatten_metrics

    return flatten_metrics(values, prefix)


def _scratch(name: str) -> Path:
    """A path for a CLI summary the step reads back: in a private temporary folder, never in
    or beside an output artifact (whose folder the launcher uploads)."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix="omnir1-step-")) / f"{name}.json"


def _read_scratch(path: Path) -> dict:
    data = read_json(path)
    shutil.rmtree(path.parent, ignore_errors=True)
    return data


def path_of(artifact) -> str | None:
    """An optional input artifact's path (None when the task was given none)."""
    return artifact.path if artifact else None


def log_metrics(artifact, values: Mapping[str, float]) -> None:
    """Log figures into a kfp Metrics output artifact."""
    for name, value in values.items():
        artifact.log_metric(name, value)


# ----------------------------------------------------------------------------------- stages


def fetch_data(params: str, datasets: str) -> dict[str, float]:
    """data@FORMAT for every format of data.formats."""
    figures = {}
    for fmt in _params(params).data.formats:
        report = _scratch(fmt)
        omnir1(
            "data",
            "fetch",
            format=fmt,
            out=Path(datasets) / fmt,
            metrics=report,
            params=params,
            quiet=True,
        )
        figures.update(flat_metrics(_read_scratch(report), f"{fmt}."))
    return figures


def validate(params: str, datasets: str, reports: str) -> dict[str, float]:
    """validate@FORMAT: a violated expectation fails the task after writing its report."""
    figures = {}
    for fmt in _params(params).data.formats:
        out = Path(reports) / fmt
        omnir1(
            "data", "validate", Path(datasets) / fmt, format=fmt, out=out, params=params, quiet=True
        )
        figures.update(flat_metrics(read_json(out / "report.json"), f"{fmt}."))
    return figures


def preprocess(params: str, datasets: str, shards: str, part: int, parts: int) -> dict:
    """preprocess@FORMAT for one part of every data set's videos (fan-out)."""
    figures = {}
    for fmt in _params(params).data.formats:
        summary = _scratch(fmt)
        omnir1(
            "data",
            "preprocess",
            Path(datasets) / fmt,
            format=fmt,
            out=Path(shards) / fmt,
            part=f"{part}/{parts}",
            params=params,
            metrics=summary,
            quiet=True,
        )
        figures.update(flat_metrics(_read_scratch(summary), f"{fmt}."))
    return figures


def merge_shards(params: str, parts: Sequence[str], shards: str) -> None:
    """The parts' shards as one folder per format."""
    for fmt in _params(params).data.formats:
        omnir1("data", "merge-shards", *(Path(p) / fmt for p in parts), out=Path(shards) / fmt)


def base_models(params: str, models: str) -> None:
    """The models GRPO starts from: models.dir (a folder, s3:// prefix or models:/ registry
    URI) or, for the embedded default, the tiny models built here (dvc.yaml's models stage)."""
    cfg = _params(params).models
    if cfg.dir == EMBEDDED_MODELS and not Path(cfg.dir).is_dir():
        omnir1("models", "init-tiny", out=models, seed=cfg.tiny.seed, sam2_size=cfg.tiny.sam2_size)
    else:
        fetch_model(params, cfg.dir, models)


def fetch_model(params: str, uri: str, models: str) -> None:
    omnir1("models", "fetch", uri, out=models, params=params)


def warm_start(params: str, datasets: str, models: str, warm: str) -> dict[str, float]:
    fmt = _params(params).data.train_format
    summary = _scratch("warm_start")
    omnir1(
        "warm-start",
        data=Path(datasets) / fmt,
        format=fmt,
        models=models,
        out=warm,
        metrics=summary,
        params=params,
    )
    return flat_metrics(_read_scratch(summary))


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
) -> dict[str, float]:
    """GRPO in this pod with `--resume auto`. With `checkpoint_root` (a PVC path that outlives
    the task) the checkpoints live in a folder named after the run's fingerprint (training
    params, data, models): a retried task, or a pipeline resubmitted with the same inputs,
    continues from the last checkpoint; a run of other inputs never does."""
    from omnir1.rl.checkpoints import fingerprint_key, run_fingerprint

    settings = _params(params)
    fmt = settings.data.train_format
    data, shards_of = Path(datasets) / fmt, Path(shards) / fmt
    run_dir = Path(run) / "run"
    checkpoints = run_dir / "checkpoints"
    if checkpoint_root:
        fingerprint = run_fingerprint(settings, data=data, fmt=fmt, models_dir=Path(models))
        checkpoints = Path(checkpoint_root) / fingerprint_key(fingerprint)
    omnir1(
        "train",
        data=data,
        format=fmt,
        shards=shards_of,
        models=models,
        out=run_dir,
        checkpoints=checkpoints,
        resume="auto",
        metrics=Path(run) / "train.json",
        curve=Path(run) / "train_curve.json",
        params=params,
        device=device,
    )
    shutil.copytree(run_dir / "model", model, dirs_exist_ok=True)
    return flat_metrics(read_json(Path(run) / "train.json"))


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
    run_name: str,
    workdir_root: str,
    timeout_s: float = 7 * 24 * 3600.0,
) -> dict[str, float]:
    """GRPO as a PyTorchJob over `nodes` pods: the inputs are staged on the data PVC (which
    every worker mounts), the job runs `omnir1 train` under accelerate + DeepSpeed, and the
    model and curves are copied back into this task's outputs."""
    import os

    from kubernetes import client, config

    from omnir1.kube import pytorchjob

    fmt = _params(params).data.train_format
    work = Path(workdir_root) / run_name
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
    if (run_dir / "checkpoints").is_dir():
        args.append("--resume")
    config.load_incluster_config()
    namespace = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read_text().strip()
    spec = pytorchjob.JobSpec(
        name=pytorchjob.job_name(run_name),
        namespace=namespace,
        image=os.environ["OMNIR1_TRAINER_IMAGE"],  # set by the pipeline: the GPU image
        train_args=[str(a) for a in args],
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        secret_env={"MLFLOW_TRACKING_URI": ("omnir1-mlflow", "MLFLOW_TRACKING_URI")},
    )
    runner = pytorchjob.PyTorchJobRunner(client.ApiClient(), namespace)
    runner.run(pytorchjob.job_manifest(spec), timeout_s)
    shutil.copytree(run_dir / "model", model, dirs_exist_ok=True)
    Path(run).mkdir(parents=True, exist_ok=True)
    for name in ("train.json", "train_curve.json"):
        shutil.copy(work / name, Path(run) / name)
    return flat_metrics(read_json(Path(run) / "train.json"))


def _models(untrained: str | None, trained: str | None) -> list[str]:
    """--model values: the labels metrics/evaluate.json and the registry gates use."""
    return [f"{name}={path}" for name, path in ((UNTRAINED, untrained), (TRAINED, trained)) if path]


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
    omnir1(
        "benchmark",
        data_root=datasets,
        shards_root=shards,
        model=_models(untrained, trained),
        out=predictions,
        part=f"{part}/{parts}",
        params=params,
        device=device,
        quiet=True,
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
    omnir1(
        "benchmark",
        data_root=datasets,
        model=_models(untrained, trained),
        merge=list(parts),
        out=evaluation,
        metrics=metrics,
        params=params,
        quiet=True,
    )
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
    metrics = Path(out) / "probe.json"
    omnir1(
        "probe",
        data_root=datasets,
        model=_models(untrained, trained),
        evaluation=Path(evaluation) / "evaluate.json",
        out=Path(out) / "answers",
        metrics=metrics,
        params=params,
        device=device,
        quiet=True,
    )
    report = read_json(metrics)
    return flat_metrics({k: report[k] for k in (UNTRAINED, TRAINED) if k in report})


def register(
    params: str, model: str, evaluation: str, probe_out: str, decision: str, run_id: str = ""
) -> dict:
    """A new registry version, promoted when the gates of params.yaml register hold, tagged
    with the pipeline run's id (how the nightly DAG finds what its run registered)."""
    out = Path(decision) / "register.json"
    metrics = [
        f"eval={Path(evaluation) / 'evaluate.json'}",
        f"probe={Path(probe_out) / 'probe.json'}",
    ]
    from omnir1.orchestration import RUN_TAG

    tag = f"{RUN_TAG}={run_id}" if run_id else None
    omnir1("register", model=model, metrics=metrics, out=out, params=params, tag=tag)
    result = read_json(out)
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
        omnir1("report", metrics=metrics, reports=reports, out=Path(tmp) / "index.html")
        shutil.copy(Path(tmp) / "index.html", html)
