"""`dvc repro` runs the pipeline of dvc.yaml (data, models, warm start, GRPO training with its
metrics and plots), a second run with nothing changed reruns nothing, and a changed reward
weight reruns only training."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_dvc_repro_pipeline(tmp_path):
    work = tmp_path / "project"
    work.mkdir()
    shutil.copy(ROOT / "dvc.yaml", work)
    shutil.copytree(
        ROOT / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["synth"]["videos"] = (
        6  # every split of every format; same stages, a smaller set and shorter runs
    )
    params["warm_start"]["grounder"].update(steps=2, batch_size=2)
    params["warm_start"]["system1"].update(steps=2, batch_size=2)
    params["train"].update(num_generations=2, max_completion_length=16, max_steps=2)
    params["tracking"]["enabled"] = False
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PATH": f"{ROOT / '.venv/bin'}:{os.environ['PATH']}"}

    def dvc(*args: str) -> str:
        out = subprocess.run(["dvc", *args], cwd=work, env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        return out.stdout

    dvc("init", "--no-scm", "-q")
    dvc("repro")
    for fmt in params["data"]["formats"]:
        assert (work / "data" / "synth" / fmt / "synth_summary.json").exists()
        assert "data@" + fmt in (work / "dvc.lock").read_text()
        report = json.loads((work / "reports/validation" / fmt / "report.json").read_text())
        assert report["ok"] and not report["failed"], fmt
        assert (work / "data" / "shards" / fmt / "index.json").is_file()
    train = json.loads((work / "metrics" / "train.json").read_text())
    assert train["steps"] == 2 and set(train["step_seconds"]) >= {"generation_s", "update_s"}
    assert "reward" in json.loads((work / "metrics" / "train_curve.json").read_text())[0]
    assert (work / "runs" / "train" / "model" / "models.json").is_file()
    shown = dvc("metrics", "show", "--json")
    assert "metrics/train.json" in shown
    again = dvc("repro")
    assert "Data and pipelines are up to date" in again

    params["rewards"]["weights"]["a_k"] = 0.5  # a reward weight: only training reruns
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    stale = dvc("status", "--json")
    assert set(json.loads(stale)) == {"train"}
    params["data"]["synth"]["seed"] = 1
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    changed = dvc("status")
    assert "data@revos" in changed and "modified" in changed
