"""The environments `make setup` builds: exact pins, importable stacks, helm, idempotency."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def pins(text: str) -> dict[str, str]:
    """{normalised name: version} of the `name==version` lines of a lock or `pip freeze`."""
    out = {}
    for line in text.splitlines():
        if "==" in line and not line.startswith("#"):
            name, _, version = line.partition("==")
            out[name.lower().replace("_", "-")] = version
    return out


def installed(python: Path) -> dict[str, str]:
    out = subprocess.run(
        [str(python), "-m", "pip", "freeze", "--all"], capture_output=True, text=True, check=True
    )
    return pins(out.stdout)


@pytest.mark.parametrize(
    ("venv", "lock"), [(".venv", "main.lock"), (".venv-airflow", "airflow.lock")]
)
def test_venv_matches_its_lock(venv, lock):
    have = installed(ROOT / venv / "bin" / "python")
    want = pins((ROOT / "requirements" / lock).read_text())
    assert {k: have.get(k) for k in want} == want
    extra = set(have) - set(want) - {"pip", "sam2", "omnir1"}
    assert not extra, f"installed but not locked: {sorted(extra)}"


def test_main_venv_is_the_current_interpreter():
    assert Path(sys.prefix).resolve() == (ROOT / ".venv").resolve()


@pytest.mark.slow
def test_main_stack_imports_together():
    code = (
        "import torch, torchvision, transformers, trl, accelerate, datasets, av, sam2, kfp, "
        "kfp.kubernetes, mlflow, dvc, great_expectations, moto, boto3, kubernetes_validate; "
        "from sam2.build_sam import build_sam2_video_predictor; "
        "from transformers import Qwen2_5OmniThinkerForConditionalGeneration; "
        "assert torch.__version__.startswith('2.14.1'), torch.__version__; print('ok')"
    )
    out = subprocess.run(
        [str(ROOT / ".venv/bin/python"), "-c", code], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


@pytest.mark.slow
def test_airflow_venv_imports_provider():
    code = "import airflow, airflow.providers.cncf.kubernetes; print(airflow.__version__)"
    out = subprocess.run(
        [str(ROOT / ".venv-airflow/bin/python"), "-c", code], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "3.3.2"


def test_helm_binary():
    out = subprocess.run(
        [str(ROOT / ".tools/bin/helm"), "version", "--short"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith("v4.1.4")


def test_setup_is_idempotent():
    start = time.monotonic()
    out = subprocess.run(["bash", str(ROOT / "scripts/setup.sh")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert ".venv is up to date" in out.stderr and ".venv-airflow is up to date" in out.stderr
    assert "helm is up to date" in out.stderr
    assert time.monotonic() - start < 60  # nothing rebuilt (a rebuild takes minutes)


def test_cli_help_is_fast_and_lists_commands():
    heavy = "('torch', 'av', 'transformers', 'numpy')"
    code = (
        "import sys, omnir1.cli; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"  # no heavy import at CLI import time
    out = subprocess.run(
        [str(ROOT / ".venv/bin/omnir1"), "--help"], capture_output=True, text=True, check=True
    )
    assert "data" in out.stdout and "media" in out.stdout
