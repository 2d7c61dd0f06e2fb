"""`make demo`'s job on a fresh folder: synthesise and check all three formats."""

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_script(tmp_path):
    out = subprocess.run(
        ["bash", str(ROOT / "scripts/demo.sh"), str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    for fmt in ("refavs", "revos", "mevis"):
        report = json.loads((tmp_path / "demo" / f"{fmt}.check.json").read_text())
        assert report["ok"] and report["videos"] == 24 and report["null_expressions"] > 0
