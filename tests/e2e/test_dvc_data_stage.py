"""`dvc repro` runs the data stage from dvc.yaml, and a second run with nothing changed reruns
nothing."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_dvc_repro_data_stage(tmp_path):
    work = tmp_path / "project"
    work.mkdir()
    shutil.copy(ROOT / "dvc.yaml", work)
    shutil.copytree(
        ROOT / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["synth"]["videos"] = 2  # same stages, a smaller set
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
    again = dvc("repro")
    assert "Data and pipelines are up to date" in again
    params["data"]["synth"]["seed"] = 1
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    changed = dvc("status")
    assert "data@revos" in changed and "modified" in changed
