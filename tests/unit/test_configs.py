"""configs/: the accelerate launch files load in accelerate and point at DeepSpeed configs that
exist, parse and validate against DeepSpeed's own ZeRO schema (both reject unknown keys)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
# values the HF Trainer fills from the GRPO config; a number here would silently disagree
TRAINER_FILLED = [
    "train_batch_size",
    "train_micro_batch_size_per_gpu",
    "gradient_accumulation_steps",
    "gradient_clipping",
]


def _json(name: str) -> dict:
    return json.loads((CONFIGS / "deepspeed" / f"{name}.json").read_text())


def _yaml(name: str) -> dict:
    from accelerate.commands.config.config_args import ClusterConfig

    path = CONFIGS / "accelerate" / f"{name}.yaml"
    ClusterConfig.from_yaml_file(path)  # accelerate's own reader: unknown keys are errors
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize(
    ("name", "stage", "offload"), [("zero2", 2, None), ("zero3_offload", 3, "cpu")]
)
def test_deepspeed_configs(name, stage, offload):
    ds = _json(name)
    zero = ds["zero_optimization"]
    assert zero["stage"] == stage
    assert zero["overlap_comm"] is True and zero["contiguous_gradients"] is True
    assert all(ds[key] == "auto" for key in TRAINER_FILLED)
    assert ds["bf16"] == {"enabled": "auto"}
    if offload is None:
        assert zero.get("offload_optimizer", {}).get("device", "none") == "none"
        assert "offload_param" not in zero
    else:
        assert zero["offload_optimizer"]["device"] == offload
        assert zero["offload_param"]["device"] == offload
        # ZeRO-Offload refuses a client (torch) optimizer: DeepSpeed's own AdamW, which is
        # CPU Adam when offloaded, with its hyper-parameters from the trainer
        assert ds["optimizer"]["type"] == "AdamW"
        assert set(ds["optimizer"]["params"].values()) == {"auto"}
    if stage == 3:
        # OUT/model must be a plain from_pretrained folder, not shards
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True


@pytest.mark.parametrize("name", ["zero2", "zero3_offload"])
def test_deepspeed_configs_validate(name):
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    zero = {k: 1000 if v == "auto" else v for k, v in _json(name)["zero_optimization"].items()}
    DeepSpeedZeroConfig(**zero)


@pytest.mark.parametrize("name", ["zero2", "zero3_offload"])
def test_accelerate_deepspeed_launch_configs(name):
    cfg = _yaml(name)
    assert cfg["distributed_type"] == "DEEPSPEED"
    assert (cfg["num_processes"], cfg["num_machines"]) == (8, 1)
    assert cfg["use_cpu"] is False
    ds = cfg["deepspeed_config"]
    assert ds["deepspeed_config_file"] == f"configs/deepspeed/{name}.json"
    assert (ROOT / ds["deepspeed_config_file"]).is_file()
    # accelerate refuses these next to a deepspeed_config_file: they belong in the JSON
    refused = {"mixed_precision", "zero_stage", "gradient_accumulation_steps", "gradient_clipping"}
    assert not refused & (set(cfg) | set(ds))
    assert "offload_optimizer_device" not in ds and "offload_param_device" not in ds
    assert ds["zero3_init_flag"] is (_json(name)["zero_optimization"]["stage"] == 3)


def test_accelerate_ddp_launch_config():
    cfg = _yaml("multi_gpu")
    assert cfg["distributed_type"] == "MULTI_GPU" and cfg["mixed_precision"] == "bf16"
    assert (cfg["num_processes"], cfg["num_machines"]) == (8, 1)
    assert "deepspeed_config" not in cfg
