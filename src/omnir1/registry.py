"""`omnir1 register`: a trained model folder becomes a version in the MLflow model registry.

    omnir1 register --model OUT/model --metrics eval=metrics/evaluate.json \\
                    --metrics probe=metrics/probe.json --out reports/register.json

The version belongs to the training run when `--training train.json` names one on this server
(its params, per-step metrics, reward curves and completion tables are already there), else to
a run of its own. That run gets the model under `model/` as an MLflow pyfunc model
(omnir1/mlflow_model.py, from code: `mlflow.pyfunc.load_model("models:/NAME@champion")` and
`mlflow models serve` work; the model folder, models.json + weights, under
`model/artifacts/models`), the metrics files under `metrics/` and the params file, and every
number of the metrics files (nested keys flattened with dots, prefixed with NAME from
`--metrics NAME=FILE`). A registered model version is created from that `model/` and tagged
with the model's names, the data set, the params hash and the git commit; it gets the alias
`challenger`.

Under `dvc exp run` (DVC_EXP_NAME set) the version is only recorded: tagged with the
experiment's name and its gates' verdict, no alias moved.

It is promoted (alias `champion`; the old champion keeps its version number) when the gates of
params.yaml `register` hold against the current champion's metrics, read back from the
champion's run: no gated metric worse by more than its tolerance, hallucination metrics not
worse at all. No champion yet: the first version is promoted. A gated metric missing from the
challenger refuses promotion (a champion without it would switch that gate off for every later
version); one missing from the champion is ignored, and the report says so.

Every gate is also checked against the model the challenger was trained from (params.yaml
`register.start_label`: the evaluate and probe stages' `untrained` figures), champion or not: a
nightly run whose model is worse than its own starting point is never promoted.

The decision and a reason per gated metric go to OUT (JSON, atomic) and OUT with .md beside it.
Tracking URI: MLFLOW_TRACKING_URI, else params.yaml `tracking.uri`. An unreachable server fails
within seconds (HTTP retries and timeouts bounded for this call) with a message naming the URI.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from omnir1.errors import DataError, InputError
from omnir1.fsutil import atomic_open, read_json, write_json

CHAMPION, CHALLENGER = "champion", "challenger"
EPS = 1e-9  # float slack: 0.70 - 0.69 is 0.010000000000000009, not above a 0.01 tolerance
_BAD_CHARS = re.compile(r"[^\w.\- :]")  # MLflow metric names: alphanumerics, _ . - space :
_PREFIX = re.compile(r"[A-Za-z_][\w-]*")


class TrackingError(InputError):
    """The MLflow tracking server or registry cannot be reached or refuses a call."""


# ---------------------------------------------------------------------------- gates (pure)


@dataclass(frozen=True)
class Gate:
    metric: str
    direction: Literal["higher", "lower", "target"]
    tolerance: float
    target: float | None = None  # direction "target": the distance to it is what is gated
    hallucination: bool = False


@dataclass(frozen=True)
class Check:
    metric: str
    direction: str
    target: float | None
    hallucination: bool
    challenger: float | None
    champion: float | None  # the reference's value: the champion's, or the starting model's
    delta: float | None  # challenger - reference
    worse_by: float | None  # how much worse in the gate's direction (negative: better)
    tolerance: float
    result: Literal["pass", "fail", "ignored"]
    note: str
    against: Literal["champion", "start"] = "champion"


def gates_of(cfg) -> list[Gate]:
    """The gates params.yaml `register` (RegisterParams) defines, hallucination metrics at
    tolerance 0."""
    strict = set(cfg.hallucination)

    def tol(m: str) -> float:
        return 0.0 if m in strict else cfg.tolerances.get(m, cfg.tolerance)

    return [
        *(Gate(m, "higher", tol(m), hallucination=m in strict) for m in cfg.higher_is_better),
        *(Gate(m, "lower", tol(m), hallucination=m in strict) for m in cfg.lower_is_better),
        *(
            Gate(m, "target", tol(m), target=t, hallucination=m in strict)
            for m, t in cfg.closer_to.items()
        ),
    ]


def evaluated_gates(gates: Sequence[Gate], formats: Sequence[str]) -> list[Gate]:
    """The gates on metrics of the data sets this run evaluates (params.yaml data.formats): a
    run on ReVOS alone is not refused for lacking MeViS figures. A metric names its data set as
    one dotted part (`eval.trained.mevis.JF`); metrics naming none are always gated."""
    from omnir1.data import FORMATS

    skipped = set(FORMATS) - set(formats)
    return [g for g in gates if not skipped & set(g.metric.split("."))]


def worse_by(gate: Gate, challenger: float, champion: float) -> float:
    """How much worse the challenger is than the champion on `gate` (negative: better)."""
    if gate.direction == "higher":
        return champion - challenger
    if gate.direction == "lower":
        return challenger - champion
    return abs(challenger - gate.target) - abs(champion - gate.target)


def _value(metrics: Mapping[str, float] | None, name: str) -> float | None:
    value = None if metrics is None else metrics.get(name)
    return value if value is not None and math.isfinite(value) else None


def check(
    gate: Gate,
    challenger: Mapping[str, float],
    champion: Mapping[str, float] | None,
    against: Literal["champion", "start"] = "champion",
):
    """One gate against a reference: the champion's metrics (None: there is no champion yet) or
    the starting model's (`against="start"`, keyed by the gated names; see `start_figures`)."""
    new, old = _value(challenger, gate.metric), _value(champion, gate.metric)
    fields = dict(
        metric=gate.metric,
        direction=gate.direction,
        target=gate.target,
        hallucination=gate.hallucination,
        challenger=new,
        champion=old,
        tolerance=gate.tolerance,
        against=against,
    )
    if new is None:
        return Check(
            **fields, delta=None, worse_by=None, result="fail", note="missing on the challenger"
        )
    if champion is None:
        return Check(**fields, delta=None, worse_by=None, result="pass", note="no champion yet")
    if old is None:
        missing = "missing on the champion" if against == "champion" else "no starting figure"
        return Check(**fields, delta=None, worse_by=None, result="ignored", note=missing)
    worse = worse_by(gate, new, old)
    passed = worse <= gate.tolerance + EPS
    if passed:
        note = "not worse" if worse <= EPS else "worse, within tolerance"
    else:
        note = "hallucination metric worse" if gate.hallucination else "worse beyond tolerance"
    if against == "start":
        note += " than its starting model"
    return Check(
        **fields,
        delta=new - old,
        worse_by=worse,
        result="pass" if passed else "fail",
        note=note,
    )


def start_metric(metric: str, trained: str, start: str) -> str | None:
    """The starting model's name for a gated metric: the challenger's figures sit under the
    label `trained` (`eval.trained.revos.JF`), its starting model's under `start`
    (`eval.untrained.revos.JF`, the evaluate stage's `--model untrained=...`); None when the
    metric has no `trained` segment."""
    parts = metric.split(".")
    if trained not in parts:
        return None
    parts[parts.index(trained)] = start
    return ".".join(parts)


def start_figures(
    gates: Sequence[Gate], metrics: Mapping[str, float], trained: str, start: str
) -> dict[str, float | None]:
    """The starting model's figure of each gated metric that has one by name, keyed by the
    gated (challenger's) name, None where the metrics lack it: what `decide` compares the
    challenger with besides the champion."""
    out: dict[str, float | None] = {}
    for gate in gates:
        name = start_metric(gate.metric, trained, start)
        if name is not None:
            out[gate.metric] = metrics.get(name)
    return out


def decide(
    gates: Sequence[Gate],
    challenger: Mapping[str, float],
    champion: Mapping[str, float] | None,
    start: Mapping[str, float | None] | None = None,
) -> tuple[bool, list[Check]]:
    """(promote?, one check per gate and reference): promoted when no check fails. `start`
    (the starting model's figures, `start_figures`) adds a check per gate it names against the
    model the challenger was trained from, which holds whether or not a champion exists."""
    checks = [check(g, challenger, champion) for g in gates]
    if start:
        checks += [check(g, challenger, start, against="start") for g in gates if g.metric in start]
    return all(c.result != "fail" for c in checks), checks


def summary_line(promoted: bool, checks: Sequence[Check], first: bool) -> str:
    failed = [c for c in checks if c.result == "fail"]
    if promoted:
        start = any(c.against == "start" for c in checks)
        if first:
            return "promoted: first version" + (
                ", not worse than its starting model" if start else ""
            )
        return "promoted: no gated metric got worse" + (
            " than the champion's or its starting model's" if start else ""
        )
    parts = []
    for c in failed:
        if c.challenger is None:
            if f"{c.metric} missing on the challenger" not in parts:
                parts.append(f"{c.metric} missing on the challenger")
        else:
            than = " than its starting model" if c.against == "start" else ""
            parts.append(f"{c.metric} worse{than} by {c.worse_by:.4g} (tolerance {c.tolerance:g})")
    return "not promoted: " + "; ".join(parts)


# ---------------------------------------------------------------------------- metrics files


def flatten_metrics(data: Mapping, prefix: str = "") -> dict[str, float]:
    """The finite numbers of a nested mapping, keys joined with dots and made MLflow-safe;
    strings, lists, booleans and nulls are left out."""
    out: dict[str, float] = {}
    for key, value in data.items():
        name = prefix + (_BAD_CHARS.sub("_", str(key)) or "_")
        if isinstance(value, Mapping):
            items = flatten_metrics(value, name + ".").items()
        elif isinstance(value, int | float) and not isinstance(value, bool):
            items = [(name, float(value))] if math.isfinite(value) else []
        else:
            items = []
        for k, v in items:
            if k in out:
                raise ValueError(f"two keys become the metric name {k!r}")
            out[k] = v
    return out


def parse_metrics_arg(value: str) -> tuple[str | None, Path]:
    """`NAME=FILE` or `FILE`."""
    name, sep, path = value.partition("=")
    if sep and _PREFIX.fullmatch(name) and path:
        return name, Path(path)
    return None, Path(value)


def load_metrics(files: Sequence[tuple[str | None, str | Path]]) -> dict[str, float]:
    merged: dict[str, float] = {}
    owner: dict[str, Path] = {}
    for prefix, path in files:
        path = Path(path)
        data = read_json(path)  # unreadable, not UTF-8, a folder: a DataError naming the file
        if not isinstance(data, dict):
            raise DataError(path, "expected a JSON object of metrics")
        try:
            metrics = flatten_metrics(data, f"{prefix}." if prefix else "")
        except ValueError as exc:
            raise DataError(path, str(exc)) from None
        if not metrics:
            raise DataError(path, "no numeric metrics")
        for name, value in metrics.items():
            if name in merged:
                raise DataError(
                    path, f"metric {name!r} also comes from {owner[name]} (use NAME=FILE)"
                )
            merged[name], owner[name] = value, path
    return merged


# ---------------------------------------------------------------------------- MLflow


def public_uri(uri: str) -> str:
    """The URI without a password, for reports and messages."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@contextlib.contextmanager
def http_limits(force: Mapping[str, str], default: Mapping[str, str]) -> Iterator[None]:
    """MLflow reads its HTTP retry/timeout settings from the environment on every request:
    set `force` over the user's values and `default` where the user set none, then restore."""
    keys = {*force, *default}
    saved = {k: os.environ.get(k) for k in keys}
    try:
        for k, v in default.items():
            os.environ.setdefault(k, v)
        os.environ.update(force)
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# the whole call: up to 2 quick retries of a failed request (uploads of big weights survive a
# blip), never MLflow's default of 7 retries with 2^n backoff (minutes on a dead server)
CALL_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}
PROBE_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def connect(uri: str):
    """An MlflowClient for `uri` after one cheap call that must answer within seconds."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        with http_limits(PROBE_LIMITS, {}):
            client.search_experiments(max_results=1)
    except Exception as exc:  # connection refused, timeout, DNS, HTTP error, bad database URI
        what = "server unreachable" if uri.startswith(("http:", "https:")) else "store unusable"
        raise TrackingError(
            public_uri(uri),
            f"MLflow tracking {what} ({_why(exc)})",
            "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "tracking.uri",
        ) from None
    return client


def _why(exc: Exception) -> str:
    text = str(exc)
    for needle, why in (
        ("Connection refused", "connection refused"),
        ("NewConnectionError", "cannot connect"),
        ("NameResolutionError", "unknown host"),
        ("timed out", f"no answer within {PROBE_LIMITS['MLFLOW_HTTP_REQUEST_TIMEOUT']} s"),
    ):
        if needle in text:
            return why
    return _first_line(exc)


def _first_line(exc: Exception) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return text.strip().splitlines()[0][:300]


def _error_code(exc: Exception) -> str | None:
    return getattr(exc, "error_code", None)


def champion_metrics(client, name: str) -> tuple[str | None, dict[str, float] | None, str | None]:
    """(version, metrics of its run, note) of the current champion; (None, None, None) if none."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        # MLflow 3.17 answers a missing alias with INVALID_PARAMETER_VALUE "... alias ... not found"
        code = _error_code(exc)
        if code == "RESOURCE_DOES_NOT_EXIST" or (
            code == "INVALID_PARAMETER_VALUE" and "not found" in exc.message
        ):
            return None, None, None
        raise
    if not version.run_id:
        return str(version.version), {}, "the champion has no run: its metrics are unknown"
    try:
        metrics = dict(client.get_run(version.run_id).data.metrics)
    except MlflowException as exc:
        return str(version.version), {}, f"the champion's run cannot be read ({_first_line(exc)})"
    return str(version.version), metrics, None


def ensure_registered_model(client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description="Omni-R1 System 1 model folders")
    except MlflowException as exc:
        if _error_code(exc) != "RESOURCE_ALREADY_EXISTS":
            raise


def experiment_id(client, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else client.create_experiment(name)


def log_run(client, experiment: str, run_name: str, tags) -> str:
    """A new run for a version whose training run is not known here; returns its id."""
    run = client.create_run(experiment_id(client, experiment), run_name=run_name, tags=tags)
    return run.info.run_id


def training_run(client, train_summary: str | Path | None) -> tuple[str | None, str | None]:
    """(run id, note) of the training run that `train.json` (`omnir1 train`'s summary) names,
    when this tracking server has it; (None, why not) otherwise."""
    from mlflow.exceptions import MlflowException

    if train_summary is None:
        return None, None
    run_id = (read_json(train_summary).get("mlflow") or {}).get("run_id")
    if not run_id:
        return None, f"{train_summary} names no MLflow run (training was not tracked)"
    try:
        client.get_run(run_id)
    except MlflowException as exc:
        return None, f"training run {run_id} not on this tracking server ({_first_line(exc)})"
    return run_id, None


def log_outputs(client, run_id: str, model_dir: Path, metrics, files, tags) -> None:
    """Into run `run_id`: the tags, every metric, the metrics and params files under metrics/
    and params/, and the model under model/ as an MLflow pyfunc model (`save_pyfunc`). A new
    run that fails here is marked FAILED."""
    import tempfile
    import time

    from mlflow.entities import Metric, RunTag

    try:
        now = int(time.time() * 1000)
        rows = [Metric(k, v, now, 0) for k, v in sorted(metrics.items())]
        for i in range(0, len(rows), 500):  # MLflow takes at most 1000 per batch
            client.log_batch(run_id, metrics=rows[i : i + 500])
        client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        for folder, path in files:
            client.log_artifact(run_id, str(path), folder)
        with tempfile.TemporaryDirectory(prefix="omnir1-pyfunc-") as tmp:
            save_pyfunc(model_dir, Path(tmp) / "model")
            client.log_artifacts(run_id, str(Path(tmp) / "model"), "model")
        # the weights go straight from the model folder to where the pyfunc model reads them
        client.log_artifacts(run_id, str(model_dir), f"model/{PYFUNC_MODELS}")
    except BaseException:
        if client.get_run(run_id).info.status == "RUNNING":
            with contextlib.suppress(Exception):  # keep the original error
                client.set_terminated(run_id, "FAILED")
        raise


PYFUNC_MODELS = "artifacts/models"  # the model folder inside the pyfunc model


def save_pyfunc(model_dir: Path, dest: Path) -> None:
    """The MLflow pyfunc model of `model_dir` at `dest`, from code (omnir1/mlflow_model.py: no
    pickle), with a signature. Only the manifest is copied into it here: the weights (tens of
    GB at the release size) are uploaded from `model_dir` to the same place (`log_outputs`)
    instead of being copied to a temporary folder first."""
    import tempfile
    import warnings

    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from omnir1 import __version__, mlflow_model

    signature = ModelSignature(
        inputs=Schema(
            [
                ColSpec("string", "video"),
                ColSpec("string", "expression"),
                ColSpec("double", "fps", required=False),
                ColSpec("long", "seed", required=False),
            ]
        ),
        outputs=Schema([ColSpec("string", name) for name in mlflow_model.OUTPUTS]),
    )
    with tempfile.TemporaryDirectory(prefix="omnir1-manifest-") as tmp, warnings.catch_warnings():
        # MLflow asks for an input example (a video path would not travel) and predict type
        # hints (the signature above says it): said once here, not at every registration
        warnings.filterwarnings("ignore", message=".*(input_example|type hints).*")
        manifest = Path(tmp) / "models"
        manifest.mkdir()
        (manifest / "models.json").write_bytes((model_dir / "models.json").read_bytes())
        mlflow.pyfunc.save_model(
            path=str(dest),
            python_model=mlflow_model.__file__,
            artifacts={"models": str(manifest)},
            signature=signature,
            pip_requirements=[f"omnir1=={__version__}"],
        )
    if not (dest / PYFUNC_MODELS / "models.json").is_file():  # where MLflow put the artifact
        raise RuntimeError(f"MLflow did not store the model folder at {PYFUNC_MODELS}")


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The commit of the code that runs: OMNIR1_GIT_REVISION (the images carry the revision they
    were built from, docker/README.md), else `git rev-parse HEAD` in `cwd`, else None."""
    revision = os.environ.get("OMNIR1_GIT_REVISION", "").strip()
    if re.fullmatch(r"[0-9a-f]{40,64}", revision):
        return revision
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", commit) else None


def params_hash(params) -> str:
    canonical = json.dumps(params.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


# ---------------------------------------------------------------------------- the stage


def register_model(
    params,
    model_dir: str | Path,
    metrics_files: Sequence[tuple[str | None, str | Path]],
    out: str | Path,
    *,
    params_file: str | Path | None = None,
    dataset: str | None = None,
    tracking_uri: str | None = None,
    extra_tags: Mapping[str, str] | None = None,
    train_summary: str | Path | None = None,
) -> dict:
    """Register `model_dir`, decide on promotion, write the report; returns the decision.
    `extra_tags` go on the run and the version (the pipeline tags its run id). With
    `train_summary` (`omnir1 train`'s train.json) the version belongs to the training run,
    which gets the evaluation figures and the model; else to a run of its own."""
    from mlflow.exceptions import MlflowException

    from omnir1.models.loading import Manifest

    model_dir = Path(model_dir)
    manifest = Manifest.read(model_dir)  # ConfigError when models.json is missing or wrong
    raw_manifest = read_json(model_dir / "models.json")
    challenger = load_metrics(metrics_files)
    cfg = params.registry  # params.yaml `register`
    gates = evaluated_gates(gates_of(cfg), params.data.formats)
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or params.tracking.uri
    tags = {
        "model_name": manifest.name,
        "base_model": str(raw_manifest.get("base", manifest.name)),
        "dataset": dataset or f"{params.data.source}:{params.data.train_format}",
        "params_hash": params_hash(params),
        "model_dir": str(model_dir.resolve()),
    }
    commit = git_commit()
    if commit:
        tags["git_commit"] = commit
    # `dvc exp run` sets DVC_EXP_NAME: an experiment's model is recorded (a version with its
    # gates' verdict), never made the challenger or champion the cluster serves and compares to
    experiment = os.environ.get("DVC_EXP_NAME", "").strip()
    if experiment:
        tags["dvc_experiment"] = experiment
    tags |= dict(extra_tags or {})
    files = [("metrics", Path(p)) for _, p in metrics_files]
    if params_file is not None and Path(params_file).is_file():
        files.append(("params", Path(params_file)))

    with http_limits({}, CALL_LIMITS):
        client = connect(uri)
        try:
            ensure_registered_model(client, cfg.model_name)
            previous, old_metrics, champion_note = champion_metrics(client, cfg.model_name)
            start = (
                start_figures(gates, challenger, cfg.challenger_label, cfg.start_label)
                if cfg.start_label
                else None
            )
            promoted, checks = decide(gates, challenger, old_metrics, start)
            run_id, run_note = training_run(client, train_summary)
            own_run = run_id is None
            if own_run:
                run_id = log_run(
                    client, params.tracking.experiment, f"register-{manifest.name}", tags
                )
            log_outputs(client, run_id, model_dir, challenger, files, tags)
            if own_run:  # a training run keeps the status training left it in
                client.set_terminated(run_id)
            source = client.get_run(run_id).info.artifact_uri.rstrip("/") + "/model"
            line = summary_line(promoted, checks, previous is None)
            if experiment:
                line = f"dvc experiment {experiment}: recorded, no alias moved; {line}"
            version = client.create_model_version(
                cfg.model_name,
                source,
                run_id=run_id,
                tags={**tags, "gate": "passed" if promoted else "failed"},
                description=line,
                await_creation_for=60,
            ).version
            version = str(version)  # a string from a server, an int from a SQLite store
            aliases = [] if experiment else [CHALLENGER, CHAMPION] if promoted else [CHALLENGER]
            for alias in aliases:
                client.set_registered_model_alias(cfg.model_name, alias, version)
        except MlflowException as exc:
            raise TrackingError(
                public_uri(uri), f"MLflow call failed: {_first_line(exc)}"
            ) from None

    notes = [n for n in (champion_note, run_note) if n]
    ignored = [c.metric for c in checks if c.result == "ignored"]
    if ignored:
        notes.append(f"missing on the champion, not gated this time: {', '.join(ignored)}")
    decision = {
        "model": cfg.model_name,
        "version": version,
        "promoted": CHAMPION in aliases,
        "gates_passed": promoted,
        "experiment": experiment or None,
        "summary": line,
        "aliases": aliases,
        "champion": version if CHAMPION in aliases else previous,
        "previous_champion": previous,
        "reasons": [asdict(c) for c in checks],
        "notes": notes,
        "run_id": run_id,
        "source": source,
        "tracking_uri": public_uri(uri),
        "tags": tags,
        "metrics": challenger,
    }
    out = Path(out)
    write_json(out, decision)
    with atomic_open(out.with_suffix(".md"), "w", encoding="utf-8") as fh:
        fh.write(markdown(decision))
    return decision


def log_report(decision_file: str | Path, files: Sequence[str | Path], tracking_uri: str) -> str:
    """The pipeline's report `files` (HTML and its Markdown summary) into the run that holds
    the version `decision_file` (`omnir1 register`'s JSON) names, under report/; returns the
    run id."""
    from mlflow.exceptions import MlflowException

    run_id = read_json(decision_file)["run_id"]
    with http_limits({}, CALL_LIMITS):
        client = connect(tracking_uri)
        try:
            for path in files:
                client.log_artifact(run_id, str(path), "report")
        except MlflowException as exc:
            raise TrackingError(public_uri(tracking_uri), _first_line(exc)) from None
    return run_id


_MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w.-]+)|/(?P<version>\d+))")


def _model_version(tracking: str, uri: str):
    """The registry's ModelVersion that models:/NAME@ALIAS or models:/NAME/VERSION names now."""
    from mlflow.exceptions import MlflowException

    match = _MODEL_URI.fullmatch(uri)
    if not match:
        raise InputError(None, "expected models:/NAME@ALIAS or models:/NAME/VERSION", uri)
    client = connect(tracking)
    try:
        if match["alias"]:
            return client.get_model_version_by_alias(match["name"], match["alias"])
        return client.get_model_version(match["name"], match["version"])
    except MlflowException as exc:
        raise TrackingError(public_uri(tracking), f"{uri}: {_first_line(exc)}") from None


def registered_version(params, uri: str, *, tracking_uri: str | None = None) -> dict:
    """What a registry URI names now: {name, version, run_id, source} (an alias moves; a
    version number is never reused), without downloading anything."""
    tracking = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or params.tracking.uri
    mv = _model_version(tracking, uri)
    return {"name": mv.name, "version": str(mv.version), "run_id": mv.run_id, "source": mv.source}


def fetch_model(params, uri: str, out: str | Path, *, tracking_uri: str | None = None) -> dict:
    """Copy a model folder to `out` (replaced when complete) from a registry version
    (models:/NAME@ALIAS or models:/NAME/VERSION), an s3:// prefix or a folder; returns where
    it came from. The evaluation-only pipeline evaluates models this way."""
    import shutil

    from omnir1 import s3
    from omnir1.fsutil import atomic_dir
    from omnir1.models.loading import Manifest

    origin: dict = {"uri": uri}
    with atomic_dir(out) as staging:
        if uri.startswith("models:/"):
            from mlflow.artifacts import download_artifacts
            from mlflow.exceptions import MlflowException

            tracking = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or params.tracking.uri
            mv = _model_version(tracking, uri)
            try:
                got = Path(download_artifacts(mv.source, dst_path=str(staging)))
            except MlflowException as exc:
                raise TrackingError(public_uri(tracking), f"{uri}: {_first_line(exc)}") from None
            # staging/model/* -> staging/*; a pyfunc model keeps the folder in its artifacts
            inner = got / PYFUNC_MODELS if (got / "MLmodel").is_file() else got
            for item in list(inner.iterdir()):
                item.rename(staging / item.name)
            shutil.rmtree(got)
            origin |= {"version": str(mv.version), "run_id": mv.run_id, "source": mv.source}
        elif s3.is_s3(uri):
            s3.download_prefix(uri, staging)
        elif Path(uri).is_dir():
            shutil.copytree(uri, staging, dirs_exist_ok=True)
        else:
            raise InputError(uri, "no such model folder (nor models:/ or s3:// URI)")
        Manifest.read(staging)  # a folder without a valid models.json is not a model
    return origin


def builds_tiny_models(models_dir: str) -> bool:
    """Whether `models.dir` means the embedded default's tiny models, built where they are
    needed (the default path, while no folder stands there)."""
    from omnir1.config import EMBEDDED_MODELS

    return models_dir == EMBEDDED_MODELS and not Path(models_dir).is_dir()


def base_models(params, out: str | Path) -> dict:
    """The models GRPO starts from, at `out`: params.yaml `models.dir` (a folder, s3:// prefix
    or models:/ registry version) copied there, or for the embedded default (`models/tiny`, not
    an existing folder) the tiny models of the production architectures built there. What the
    DVC `models` stage and the pipelines' base-models step run."""
    from omnir1.models.tiny import TinySizes, init_tiny

    cfg = params.models
    if builds_tiny_models(cfg.dir):
        sizes = TinySizes(sam2_image_size=cfg.tiny.sam2_size)
        return {"built": "tiny", **init_tiny(out, seed=cfg.tiny.seed, sizes=sizes)}
    return fetch_model(params, cfg.dir, out)


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{0.0 if abs(v) < EPS else v:.4f}"  # no -0.0000 from float noise


def markdown(decision: dict) -> str:
    d = decision
    lines = [
        f"# Registration of {d['model']} version {d['version']}",
        "",
        f"**{d['summary']}**",
        "",
        f"- aliases of version {d['version']}: {', '.join(d['aliases']) or 'none'}",
        f"- champion now: version {d['champion']}; before: "
        + (f"version {d['previous_champion']}" if d["previous_champion"] else "none"),
        f"- run {d['run_id']} on {d['tracking_uri']}",
        *(f"- {note}" for note in d["notes"]),
        "",
        "| metric | against | better | challenger | reference | delta | worse by | tolerance "
        "| result |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in d["reasons"]:
        better = {"higher": "higher", "lower": "lower"}.get(r["direction"], f"near {r['target']}")
        name = r["metric"] + (" (hallucination)" if r["hallucination"] else "")
        lines.append(
            f"| {name} | {r.get('against', 'champion')} | {better} | {_num(r['challenger'])} | "
            f"{_num(r['champion'])} | "
            f"{_num(r['delta'])} | {_num(r['worse_by'])} | {r['tolerance']:g} | "
            f"{r['result']}: {r['note']} |"
        )
    return "\n".join(lines) + "\n"
