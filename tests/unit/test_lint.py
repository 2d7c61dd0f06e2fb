"""The code base stays ruff-clean (lint rules and formatting from pyproject.toml)."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUFF = ROOT / ".venv" / "bin" / "ruff"
TARGETS = ["src", "tests", "scripts", "bench", "research", "components", "pipelines", "dags"]


def test_ruff_check():
    out = subprocess.run([str(RUFF), "check", *TARGETS], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]


def test_ruff_format():
    out = subprocess.run(
        [str(RUFF), "format", "--check", *TARGETS], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout[-3000:]
