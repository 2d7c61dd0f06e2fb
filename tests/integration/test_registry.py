"""`omnir1 register` against a real MLflow server on 127.0.0.1: versions, aliases, gates."""

from __future__ import annotations

import json
import socket
import time
import uuid
from pathlib import Path

import pytest

from omnir1.cli import main

pytestmark = pytest.mark.slow


def model_folder(root: Path, name: str = "tiny-grpo") -> Path:
    """A folder `Manifest.read` accepts: models.json, a System-1 folder, a SAM2 checkpoint."""
    (root / "system1").mkdir(parents=True)
    (root / "system1" / "config.json").write_text('{"model_type": "qwen2_5_omni_thinker"}')
    (root / "system1" / "model.safetensors").write_bytes(bytes(range(256)) * 2048)  # 512 KiB
    (root / "sam2").mkdir()
    (root / "sam2" / "sam2.1_tiny.pt").write_bytes(b"\x00" * 4096)
    manifest = {
        "name": name,
        "system1": "system1",
        "grounder": "system1",
        "sam2": {
            "config": "configs/sam2.1/sam2.1_hiera_t.yaml",
            "checkpoint": "sam2/sam2.1_tiny.pt",
        },
        "base": "tiny",
    }
    (root / "models.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture
def registry(tmp_path, mlflow_server, monkeypatch):
    """register(jf, hr) -> decision, with a registered-model name of its own per test."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    name = f"omnir1-test-{uuid.uuid4().hex[:8]}"
    params = tmp_path / "params.yaml"
    params.write_text(
        "register:\n"
        f"  model_name: {name}\n"
        "  tolerance: 0.02\n"
        "  higher_is_better: [eval.summary.overall.JF]\n"
        "  lower_is_better: [probe.cmm.hr]\n"
        "  closer_to: {}\n"
        "  hallucination: [probe.cmm.hr]\n"
    )
    model = model_folder(tmp_path / "model")
    calls = []

    def register(jf: float | None, hr: float | None) -> dict:
        i = len(calls)
        ev, probe = tmp_path / f"eval{i}.json", tmp_path / f"probe{i}.json"
        overall = {"J": 0.5, "J&F": jf} if jf is None else {"J": 0.5, "JF": jf, "J&F": jf}
        ev.write_text(json.dumps({"benchmark": "revos", "summary": {"overall": overall}}))
        probe.write_text(json.dumps({"cmm": {"hr": hr, "pa": 0.7}, "n": 12}))
        out = tmp_path / f"register{i}.json"
        argv = ["register", "--model", str(model), "--out", str(out), "--params", str(params)]
        argv += ["--metrics", f"eval={ev}", "--metrics", f"probe={probe}"]
        assert main(argv) == 0
        calls.append(out)
        return json.loads(out.read_text())

    register.name = name
    return register


def client(url):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=url, registry_uri=url)


def reason(decision: dict, metric: str) -> dict:
    return next(r for r in decision["reasons"] if r["metric"] == metric)


def test_first_version_is_champion_and_a_better_one_takes_over(registry, mlflow_server, tmp_path):
    first = registry(0.50, 0.20)
    assert first["promoted"] and first["version"] == "1"
    assert first["previous_champion"] is None and first["summary"] == "promoted: first version"
    assert all(r["result"] == "pass" and r["champion"] is None for r in first["reasons"])

    second = registry(0.60, 0.20)
    assert second["promoted"] and second["version"] == "2"
    assert second["previous_champion"] == "1" and second["champion"] == "2"
    jf = reason(second, "eval.summary.overall.JF")
    assert jf["challenger"] == 0.60 and jf["champion"] == 0.50
    assert jf["delta"] == pytest.approx(0.10) and jf["result"] == "pass"

    mlflow = client(mlflow_server)
    champion = mlflow.get_model_version_by_alias(registry.name, "champion")
    assert champion.version == "2" and set(champion.aliases) == {"champion", "challenger"}
    old = mlflow.get_model_version(registry.name, "1")
    assert old.aliases == [] and old.run_id == first["run_id"]  # kept, alias moved
    assert champion.tags["base_model"] == "tiny" and champion.tags["model_name"] == "tiny-grpo"
    assert len(champion.tags["params_hash"]) == 64 and champion.tags["dataset"] == "synth:revos"
    assert len(champion.tags.get("git_commit", "0" * 40)) == 40
    run = mlflow.get_run(second["run_id"])
    assert run.data.metrics["eval.summary.overall.J_F"] == 0.60  # & is not allowed by MLflow
    assert run.data.metrics["probe.n"] == 12

    from mlflow.artifacts import download_artifacts

    uri = f"models:/{registry.name}@champion"
    pyfunc = Path(
        download_artifacts(uri, dst_path=str(tmp_path / "dl"), tracking_uri=mlflow_server)
    )
    assert (pyfunc / "MLmodel").is_file()  # an MLflow model, the folder in its artifacts
    folder = pyfunc / "artifacts" / "models"
    assert json.loads((folder / "models.json").read_text())["name"] == "tiny-grpo"
    assert (folder / "system1" / "model.safetensors").stat().st_size == 512 * 1024
    md = (tmp_path / "register1.md").read_text()
    assert "promoted" in md
    assert "| eval.summary.overall.JF | champion | higher | 0.6000 | 0.5000 |" in md


def test_worse_beyond_tolerance_stays_challenger(registry, mlflow_server):
    registry(0.60, 0.20)
    within = registry(0.59, 0.20)  # 0.01 worse, tolerance 0.02
    assert within["promoted"], within["summary"]
    assert reason(within, "eval.summary.overall.JF")["note"] == "worse, within tolerance"
    worse = registry(0.55, 0.20)  # 0.04 worse than the champion (0.59)
    assert not worse["promoted"] and worse["version"] == "3"
    assert worse["champion"] == "2" and worse["previous_champion"] == "2"
    jf = reason(worse, "eval.summary.overall.JF")
    assert jf["result"] == "fail" and jf["worse_by"] == pytest.approx(0.04)
    assert jf["tolerance"] == 0.02 and jf["delta"] == pytest.approx(-0.04)
    assert "eval.summary.overall.JF worse by 0.04 (tolerance 0.02)" in worse["summary"]
    mlflow = client(mlflow_server)
    assert mlflow.get_model_version_by_alias(registry.name, "champion").version == "2"
    version = mlflow.get_model_version_by_alias(registry.name, "challenger")
    assert version.version == "3" and version.tags["gate"] == "failed"


def test_worse_hallucination_metric_refuses_promotion_even_within_tolerance(registry):
    registry(0.60, 0.20)
    decision = registry(0.65, 0.21)  # better J&F, hallucination rate up by 0.01 < 0.02
    assert not decision["promoted"] and decision["champion"] == "1"
    hr = reason(decision, "probe.cmm.hr")
    assert hr["result"] == "fail" and hr["hallucination"] and hr["tolerance"] == 0.0
    assert hr["worse_by"] == pytest.approx(0.01) and hr["note"] == "hallucination metric worse"
    assert reason(decision, "eval.summary.overall.JF")["result"] == "pass"


def test_missing_metrics_refuse_on_the_challenger_and_are_ignored_on_the_champion(registry):
    registry(None, 0.20)  # first version without J&F: refused, there is no champion at all
    first = registry(0.50, 0.20)
    assert first["promoted"] and first["previous_champion"] is None
    missing = registry(None, 0.20)
    assert not missing["promoted"]
    assert reason(missing, "eval.summary.overall.JF")["note"] == "missing on the challenger"


def test_unreachable_tracking_server_fails_fast_naming_it(tmp_path, monkeypatch, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    metrics = tmp_path / "eval.json"
    metrics.write_text('{"JF": 0.5}')
    start = time.monotonic()
    argv = ["register", "--model", str(model_folder(tmp_path / "m")), "--metrics", str(metrics)]
    code = main([*argv, "--out", str(tmp_path / "r.json")])
    assert code == 2 and time.monotonic() - start < 30
    err = capsys.readouterr().err
    assert uri in err and "unreachable" in err and "MLFLOW_TRACKING_URI" in err
    assert not (tmp_path / "r.json").exists()


def test_bad_inputs_exit_2_before_any_tracking_call(tmp_path, capsys):
    good = tmp_path / "ok.json"
    good.write_text('{"JF": 0.5}')
    bad = tmp_path / "bad.json"
    bad.write_text('{"JF": ')
    model = model_folder(tmp_path / "m")
    empty = tmp_path / "empty"
    empty.mkdir()
    out = ["--out", str(tmp_path / "r.json")]
    assert main(["register", "--model", str(empty), "--metrics", str(good), *out]) == 2
    assert "models.json: model manifest not found" in capsys.readouterr().err
    assert main(["register", "--model", str(model), "--metrics", str(bad), *out]) == 2
    assert f"{bad}: invalid JSON" in capsys.readouterr().err
    assert main(["register", "--model", str(model), "--metrics", str(tmp_path), *out]) == 2
    assert f"{tmp_path}: is a folder, not a JSON file" in capsys.readouterr().err


def test_the_images_revision_tags_the_version(registry, mlflow_server, monkeypatch):
    revision = "0123456789abcdef" * 2 + "01234567"  # what docker/*.Dockerfile set from GIT_REVISION
    monkeypatch.setenv("OMNIR1_GIT_REVISION", revision)
    decision = registry(0.50, 0.20)
    assert decision["tags"]["git_commit"] == revision
    version = client(mlflow_server).get_model_version(registry.name, decision["version"])
    assert version.tags["git_commit"] == revision


def test_the_version_is_a_pyfunc_model_in_the_training_run_with_its_report(
    tiny_models, media_files, mlflow_server, tmp_path, monkeypatch
):
    """`--training train.json`: the version joins the training's MLflow run (its params and
    per-step metrics stay, the evaluation figures and the model are added);
    `mlflow.pyfunc.load_model("models:/NAME@champion")` predicts with both systems; the
    evaluation pipeline's fetch gets the model folder back; `omnir1 report` logs the report."""
    import mlflow
    import numpy as np
    import pandas as pd

    from omnir1.config import load_params
    from omnir1.data import rle
    from omnir1.models.loading import load_models
    from omnir1.registry import fetch_model

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    name = f"omnir1-pyfunc-{uuid.uuid4().hex[:8]}"
    params = tmp_path / "params.yaml"
    params.write_text(
        f"register:\n  model_name: {name}\n  higher_is_better: [eval.summary.overall.JF]\n"
        "  lower_is_better: []\n  closer_to: {}\n  hallucination: []\n"
        "tracking:\n  experiment: pyfunc\n"
    )
    mlflow_client = client(mlflow_server)
    # the training run as `omnir1 train` leaves it (tests/integration/test_train.py)
    experiment = mlflow_client.create_experiment(f"pyfunc-{uuid.uuid4().hex[:6]}")
    trained = mlflow_client.create_run(experiment, run_name="train").info.run_id
    mlflow_client.log_param(trained, "train.learning_rate", "1e-06")
    for step in (1, 2):
        mlflow_client.log_metric(trained, "rewards/format/mean", 0.4 + step / 10, step=step)
    mlflow_client.set_terminated(trained)
    summary = tmp_path / "train.json"
    summary.write_text(json.dumps({"steps": 2, "mlflow": {"run_id": trained}}))
    ev, probe = tmp_path / "evaluate.json", tmp_path / "probe.json"
    ev.write_text(json.dumps({"summary": {"overall": {"JF": 0.5}}}))
    probe.write_text(json.dumps({"cmm": {"hr": 0.2}}))
    reports = tmp_path / "reports"
    argv = ["register", "--model", str(tiny_models), "--params", str(params)]
    argv += ["--metrics", f"eval={ev}", "--metrics", f"probe={probe}", "--training", str(summary)]
    assert main([*argv, "--out", str(reports / "register.json")]) == 0
    decision = json.loads((reports / "register.json").read_text())

    assert decision["run_id"] == trained
    version = mlflow_client.get_model_version_by_alias(name, "champion")
    assert version.run_id == trained
    run = mlflow_client.get_run(trained)
    assert run.info.status == "FINISHED" and run.data.params["train.learning_rate"] == "1e-06"
    assert run.data.metrics["rewards/format/mean"] == pytest.approx(0.6)  # the hierarchy kept
    assert run.data.metrics["eval.summary.overall.JF"] == 0.5
    assert [m.step for m in mlflow_client.get_metric_history(trained, "rewards/format/mean")] == [
        1,
        2,
    ]

    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    assert model.metadata.get_input_schema().input_names() == ["video", "expression", "fps", "seed"]
    video = media_files["odd_mp4"]  # 30 frames
    answer = model.predict(pd.DataFrame([{"video": str(video), "expression": "the grey shape"}]))
    assert list(answer.columns) == ["completion", "answer", "keyframes", "masks"]
    masks = [rle.decode(m) for m in json.loads(answer["masks"][0])]
    assert len(masks) == 30 and all(m.dtype == np.bool_ for m in masks)
    assert isinstance(json.loads(answer["keyframes"][0]), list)

    fetched = tmp_path / "fetched"
    origin = fetch_model(load_params(params), f"models:/{name}@champion", fetched)
    assert origin["run_id"] == trained and (fetched / "models.json").is_file()
    assert load_models(fetched, system2=False).manifest.name == "omnir1-tiny-seed0"

    out = reports / "index.html"
    args = ["report", "--metrics", str(tmp_path / "metrics"), "--reports", str(reports)]
    assert main([*args, "--out", str(out), "--params", str(params)]) == 0
    logged = {a.path for a in mlflow_client.list_artifacts(trained, "report")}
    assert logged == {"report/index.html", "report/index.md"}


def test_a_dvc_experiment_records_a_version_and_moves_no_alias(
    registry, mlflow_server, monkeypatch
):
    """`dvc exp run` sets DVC_EXP_NAME: its model is a version with the gates' verdict and the
    experiment's name, never the challenger or champion the cluster compares to and serves."""
    first = registry(0.50, 0.20)
    monkeypatch.setenv("DVC_EXP_NAME", "exp-lr-high")
    better = registry(0.70, 0.10)
    assert better["gates_passed"] and not better["promoted"] and better["aliases"] == []
    assert better["experiment"] == "exp-lr-high" and better["champion"] == first["version"]
    assert better["summary"].startswith("dvc experiment exp-lr-high: recorded, no alias moved")
    mlflow = client(mlflow_server)
    for alias in ("champion", "challenger"):
        assert mlflow.get_model_version_by_alias(registry.name, alias).version == "1"
    version = mlflow.get_model_version(registry.name, better["version"])
    assert version.tags["dvc_experiment"] == "exp-lr-high" and version.tags["gate"] == "passed"
