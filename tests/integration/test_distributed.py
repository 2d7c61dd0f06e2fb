"""`omnir1 train` under `accelerate launch` with the repository's own DeepSpeed configs
(configs/accelerate/*.yaml -> configs/deepspeed/*.json): ZeRO-2, and ZeRO-3 with optimizer and
parameters offloaded to CPU. Two processes on CPU (gloo), two GRPO steps each.

The files are used as they are; only the process count comes from the command line (the
files say 8 GPUs). On CPU, DeepSpeed compiles its ops (shared-memory collectives, CPU Adam)
into TORCH_EXTENSIONS_DIR on first use; the tests keep their own, so a build for another
torch version is never picked up.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from omnir1.models.loading import load_models

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
STEPS = 2
# per process: one prompt, num_generations completions; the global batch (2 processes) is a
# multiple of num_generations, as TRL requires
PARAMS = f"""
train:
  num_generations: 2
  max_completion_length: 12
  learning_rate: 1.0e-3
  save_steps: 1
  max_steps: {STEPS}
tracking:
  enabled: false
"""


def cpu_ranks_env() -> dict:
    """This environment without a launcher's or a tracking server's variables, on the CPU even
    where there is a GPU, one thread per process (two processes share the cores)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ACCELERATE_", "MLFLOW_")) and k not in ("RANK", "WORLD_SIZE")
    }
    env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def torch_extensions(tmp_path_factory) -> Path:
    import torch

    # shared by the two runs of this module: DeepSpeed's ops are built once per session
    return tmp_path_factory.mktemp(f"torch_extensions_{torch.__version__.replace('+', '_')}")


def _zero_states(checkpoint: Path) -> list[dict]:
    import torch

    step = checkpoint / f"global_step{checkpoint.name.split('-')[-1]}"
    files = sorted(step.glob("zero_pp_rank_*_mp_rank_00_optim_states.pt"))
    return [torch.load(f, map_location="cpu", weights_only=False) for f in files]


@pytest.mark.timeout(1500)
@pytest.mark.parametrize("name", ["zero2", "zero3_offload"])
def test_train_under_accelerate_launch_with_deepspeed(
    name, tiny_models, synth_sets, tmp_path, torch_extensions
):
    accelerate_config = ROOT / "configs" / "accelerate" / f"{name}.yaml"
    ds_file = json.loads((ROOT / "configs" / "deepspeed" / f"{name}.json").read_text())
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    out = tmp_path / "run"
    env = cpu_ranks_env()
    env["TORCH_EXTENSIONS_DIR"] = str(torch_extensions)
    launcher = Path(sys.executable).with_name("accelerate")
    cmd = [str(launcher), "launch", "--config_file", str(accelerate_config)]
    cmd += ["--num_processes", "2", "--num_machines", "1"]
    cmd += ["--main_process_port", str(_free_port())]
    cmd += ["-m", "omnir1.cli", "train", "--data", str(synth_sets["revos"]), "--format", "revos"]
    cmd += ["--models", str(tiny_models), "--out", str(out), "--params", str(params)]
    cmd += ["--device", "cpu"]
    start = time.perf_counter()
    # from the repository root, as configs/README.md says: the YAML names its JSON relatively
    run = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1400, check=False
    )
    print(f"{name}: accelerate launch, 2 processes: {time.perf_counter() - start:.1f} s")
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]

    summary = json.loads((out / "train.json").read_text())
    assert summary["steps"] == STEPS
    checkpoints = sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*"))
    assert checkpoints == [f"checkpoint-{i}" for i in range(1, STEPS + 1)]

    # DeepSpeed really trained it, with the repository's config: both ranks saved their
    # partition of the optimizer state, and the config the engine ran with is the file's
    # (its "auto" values filled in from params.yaml)
    states = _zero_states(out / "checkpoints" / f"checkpoint-{STEPS}")
    assert len(states) == 2
    ran = states[0]["ds_config"]
    zero = ds_file["zero_optimization"]
    assert int(states[0]["optimizer_state_dict"]["zero_stage"]) == zero["stage"]
    assert ran["zero_optimization"]["stage"] == zero["stage"]
    for key in ("offload_optimizer", "offload_param"):
        assert ran["zero_optimization"].get(key) == zero.get(key)
    assert ran["train_micro_batch_size_per_gpu"] == 2 and ran["train_batch_size"] == 4
    assert ran["bf16"]["enabled"] is False  # "auto" follows --device cpu
    if zero.get("offload_optimizer", {}).get("device") == "cpu":
        # the offloaded optimizer is DeepSpeed's CPU Adam, compiled for this run
        assert list(torch_extensions.glob("**/cpu_adam*.so"))

    # OUT/model: a complete, loadable folder with the gathered, trained System 1 (not the
    # base weights, not a rank's empty ZeRO-3 partition)
    assert not list(out.glob(".model.*"))
    trained = load_models(out / "model", system2=False)
    assert trained.manifest.name == "omnir1-tiny-seed0-grpo"
    after = trained.system1.state_dict()
    before = load_models(tiny_models, system2=False).system1.state_dict()
    assert after.keys() == before.keys()
    assert all(after[k].shape == before[k].shape for k in before)
    assert any(not after[k].equal(before[k]) for k in before)


@pytest.mark.timeout(900)
def test_train_gpus_per_node_launches_one_process_each(synth_sets, tiny_models, tmp_path):
    """`train.gpus_per_node: 2`: a plain `omnir1 train` (what the DVC stage and the Kubeflow
    one-node step run) starts itself again as 2 ranks under `accelerate launch` with the
    repository's DDP config; on CPU they form a gloo group and train one model together."""
    params = tmp_path / "params.yaml"
    config = ROOT / "configs" / "accelerate" / "multi_gpu.yaml"
    launch = f"  gpus_per_node: 2\n  accelerate_config: {config}\ntracking:"
    params.write_text(PARAMS.replace("tracking:", launch))
    out = tmp_path / "run"
    env = cpu_ranks_env()
    omnir1 = Path(sys.executable).with_name("omnir1")
    cmd = [str(omnir1), "train", "--data", str(synth_sets["revos"]), "--format", "revos"]
    cmd += ["--models", str(tiny_models), "--out", str(out), "--params", str(params)]
    cmd += ["--device", "cpu", "--metrics", str(tmp_path / "train.json")]
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=800)
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
    summary = json.loads((out / "train.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == STEPS
    assert json.loads((tmp_path / "train.json").read_text())["processes"] == 2
    trained = load_models(out / "model", system2=False).system1.state_dict()
    before = load_models(tiny_models, system2=False).system1.state_dict()
    assert any(not trained[k].equal(before[k]) for k in before)
