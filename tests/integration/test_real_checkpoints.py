"""Checkpoints as they are published (omnir1.models.importing) and weights that learn from them
(omnir1.models.loading): a Qwen2.5-Omni snapshot in bf16, sharded, with its talker and token2wav
(conftest's `hub_snapshot`), and SAM2 as Meta ships it; warm start and GRPO from the import."""

from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch

from conftest import WARM as WARM_STARTS
from omnir1.cli import main
from omnir1.errors import ConfigError
from omnir1.models.loading import (
    Manifest,
    check_attention,
    check_master_weights,
    load_models,
    load_thinker,
)

# conftest's two-step warm starts, and two GRPO steps
WARM = WARM_STARTS.replace(
    "tracking:",
    """train:
  num_generations: 2
  max_completion_length: 12
  learning_rate: 1.0e-3
  save_steps: 2
  max_steps: 2
tracking:""",
)


def folder_weights(folder) -> dict:
    out = {}
    for shard in sorted(folder.glob("*.safetensors")):
        out.update(safetensors.torch.load_file(shard))
    return out


@pytest.fixture(scope="module")
def imported(hub_snapshot, tiny_models, tmp_path_factory):
    tiny = Manifest.read(tiny_models)
    out = tmp_path_factory.mktemp("imported") / "models"
    args = ["models", "import", str(hub_snapshot), "--sam2", str(tiny.sam2_checkpoint)]
    args += ["--sam2-config", tiny.sam2_config, "--out", str(out)]
    args += [f"--sam2-override={o}" for o in tiny.sam2_overrides]
    assert main(args) == 0
    return out


def test_import_keeps_the_thinker_its_shards_and_the_processor(hub_snapshot, imported):
    from transformers import Qwen2_5OmniForConditionalGeneration

    manifest = json.loads((imported / "models.json").read_text())
    system1 = imported / "system1"
    config = json.loads((system1 / "config.json").read_text())
    assert config["architectures"] == ["Qwen2_5OmniThinkerForConditionalGeneration"]
    assert config["dtype"] == "bfloat16"
    # the snapshot's shards that hold thinker tensors, under their own names, with an index
    index = json.loads((system1 / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and all((system1 / s).is_file() for s in shards)
    assert {p.name for p in system1.glob("*.safetensors")} == set(shards)
    assert (system1 / "processor_config.json").is_file() and (system1 / "tokenizer.json").is_file()
    assert not (system1 / "spk_dict.pt").exists()  # the talker's
    # every file written, with its sha256
    import hashlib

    for name, digest in manifest["sha256"].items():
        assert hashlib.sha256((imported / name).read_bytes()).hexdigest() == digest
    assert "models.json" not in manifest["sha256"] and f"system1/{shards[0]}" in manifest["sha256"]
    # the thinker's weights, bit for bit, in the stored bf16
    full = Qwen2_5OmniForConditionalGeneration.from_pretrained(hub_snapshot)
    thinker, _ = load_thinker(system1)
    expected = dict(full.thinker.named_parameters())
    got = dict(thinker.named_parameters())
    assert got.keys() == expected.keys()
    assert all(v.dtype == torch.bfloat16 and torch.equal(v, expected[k]) for k, v in got.items())
    # and the folder loads whole: SAM2 from Meta's {"model": state_dict}
    models = load_models(imported)
    assert models.sam2 is not None and models.grounder is not None


def test_bad_inputs_to_import_are_clear_errors(hub_snapshot, tiny_models, tmp_path, capsys):
    sam2 = Manifest.read(tiny_models).sam2_checkpoint
    base = ["models", "import", str(hub_snapshot), "--out", str(tmp_path / "out")]
    assert main([*base, "--sam2", str(sam2), "--sam2-config", "configs/none.yaml"]) == 2
    assert "--sam2-config" in capsys.readouterr().err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert main([*base, "--sam2", str(junk)]) == 2
    assert "junk.pt" in capsys.readouterr().err
    args = ["models", "import", str(tmp_path), "--sam2", str(sam2), "--out", str(tmp_path / "o")]
    assert main(args) == 2
    assert "config.json" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()


def test_weights_that_would_not_learn_are_refused():
    model = torch.nn.Linear(4, 4).to(torch.bfloat16)
    # the failure this guards against: AdamW at lr 1e-6 does not move bf16 weights at all
    before = model.weight.detach().clone()
    model.weight.grad = torch.ones_like(model.weight)
    torch.optim.AdamW(model.parameters(), lr=1e-6).step()
    assert torch.equal(model.weight, before)
    with pytest.raises(ConfigError, match="would not learn") as err:
        check_master_weights(model)
    assert err.value.field == "train.bf16"
    check_master_weights(model, deepspeed=True)  # DeepSpeed keeps float32 masters of its own
    check_master_weights(model.float())


def test_attention_implementations(hub_snapshot):
    with pytest.raises(ConfigError, match="flash-attn") as err:
        check_attention("flash_attention_2")  # not installed here
    assert err.value.field == "system1.attn_implementation"
    thinker, _ = load_thinker(hub_snapshot, attn_implementation="eager")
    assert thinker.config._attn_implementation == "eager"


def test_a_full_snapshot_is_refused_for_grpo(hub_snapshot, tiny_models, synth_sets, tmp_path):
    """Training straight from the snapshot would build TRL's reference as the full model."""
    folder = tmp_path / "models"
    tiny = json.loads((tiny_models / "models.json").read_text())
    folder.mkdir()
    (folder / "system1").symlink_to(hub_snapshot)
    (folder / "sam2").symlink_to(tiny_models / "sam2")
    (folder / "models.json").write_text(json.dumps({**tiny, "grounder": "system1"}))
    params = tmp_path / "params.yaml"
    params.write_text(WARM)
    args = ["train", "--data", str(synth_sets["revos"]), "--format", "revos"]
    args += ["--models", str(folder), "--out", str(tmp_path / "run"), "--params", str(params)]
    assert main(args) == 2


@pytest.mark.slow
def test_warm_start_and_grpo_from_an_imported_bf16_snapshot(imported, synth_sets, tmp_path):
    """Both train in float32 masters (a bf16 checkpoint under AdamW would not move), save back in
    bf16, and GRPO's frozen reference is the thinker class."""
    params = tmp_path / "params.yaml"
    params.write_text(WARM)
    data = ["--data", str(synth_sets["revos"]), "--format", "revos", "--params", str(params)]
    warm = tmp_path / "warm"
    assert main(["warm-start", *data, "--models", str(imported), "--out", str(warm)]) == 0
    run = tmp_path / "run"
    assert main(["train", *data, "--models", str(warm), "--out", str(run)]) == 0
    summary = json.loads((run / "train.json").read_text())
    assert summary["steps"] == 2
    assert summary["reference_model"] == "Qwen2_5OmniThinkerForConditionalGeneration"
    for before, after in [(imported, warm), (warm, run / "model")]:
        old = folder_weights(Manifest.read(before).system1)
        new = folder_weights(Manifest.read(after).system1)
        assert all(v.dtype == torch.bfloat16 for v in new.values())
        changed = [k for k in old if not torch.equal(old[k], new[k])]
        assert changed and not any("audio_tower" in k or "visual" in k for k in changed)
    # and the trained folder predicts (System 1, the imported grounder, Meta's SAM2)
    pred = tmp_path / "pred"
    args = ["predict", "--data", str(synth_sets["revos"]), "--format", "revos", "--limit", "1"]
    assert (
        main([*args, "--models", str(run / "model"), "--out", str(pred), "--params", str(params)])
        == 0
    )
    assert (pred / "answers.jsonl").read_text().count("\n") == 1
