"""`bench/run_all.py` (`make bench`) at smoke size: two cheap benchmarks, the table it prints
and the JSON it writes (a row per figure, each with its baseline, ratio and command)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_run_all_writes_every_figure_with_its_baseline_and_command(tmp_path):
    out = tmp_path / "reports" / "bench.json"
    cmd = [sys.executable, str(ROOT / "bench" / "run_all.py"), "--quick"]
    cmd += ["--only", "media", "preprocess", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads(out.read_text())
    assert report["quick"] is True and set(report["seconds"]) == {"total", "media", "preprocess"}
    rows = report["rows"]
    assert [r["name"] for r in rows] == [
        "media/System 1 2 fps",
        "media/System 2 2 fps",
        "preprocess/1x",
        "preprocess/2x",
        "preprocess/4x",
    ]
    for r in rows:
        assert r["value"] > 0 and r["baseline"] > 0, r
        assert r["ratio"] == pytest.approx(r["value"] / r["baseline"])  # both are rates
        bench = r["name"].split("/")[0]
        assert r["command"].endswith(f"bench/run_all.py --only {bench} --quick"), r
        assert r["figure"] and r["unit"]
    assert rows[2]["ratio"] == pytest.approx(1.0)  # 1x is its own baseline
    assert "media/System 1 2 fps" in done.stdout and "ratio" in done.stdout  # the table
    assert [p.name for p in out.parent.iterdir()] == ["bench.json"]  # no temporary file left
