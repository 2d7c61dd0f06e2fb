"""`omnir1 warm-start` on the tiny models and synthetic data: supervised starts change exactly
the parts they should, with the models' own loss."""

from __future__ import annotations

import pytest
import torch

from conftest import WARM
from omnir1.cli import main
from omnir1.models.loading import Manifest

pytestmark = pytest.mark.slow


def weights(folder):
    from safetensors.torch import load_file

    return load_file(next(folder.glob("*.safetensors")))


def test_warm_start_trains_the_language_models_and_keeps_the_towers(
    tiny_models, synth_sets, tmp_path
):
    params = tmp_path / "params.yaml"
    params.write_text(WARM)
    out = tmp_path / "warm"
    args = ["warm-start", "--data", str(synth_sets["revos"]), "--format", "revos"]
    args += ["--models", str(tiny_models), "--params", str(params)]
    assert main([*args, "--out", str(out)]) == 0
    base, warm = Manifest.read(tiny_models), Manifest.read(out)
    for part in ("system1", "grounder"):
        before, after = weights(getattr(base, part)), weights(getattr(warm, part))
        assert before.keys() == after.keys()
        changed = {k for k in before if not torch.equal(before[k], after[k])}
        towers = {k for k in before if "visual" in k or "audio_tower" in k}
        assert changed and not changed & towers, part  # towers frozen, the LM trained
    # SAM2 is shared with the base folder, not copied
    assert warm.sam2_checkpoint.stat().st_ino == base.sam2_checkpoint.stat().st_ino

    # train_vision: the grounder's vision tower trains too (never its audio tower)
    params.write_text(
        WARM.replace("grounder: {steps: 2,", "grounder: {train_vision: true, steps: 2,").replace(
            "system1: {steps: 2,", "system1: {steps: 0,"
        )
    )
    vision = tmp_path / "vision"
    assert main([*args, "--out", str(vision)]) == 0
    before, after = weights(base.grounder), weights(Manifest.read(vision).grounder)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any("visual" in k for k in changed)
    assert not any("audio_tower" in k for k in changed)

    # a second start reuses that grounder and leaves System 1 of its base alone when steps: 0
    params.write_text(WARM.replace("system1: {steps: 2,", "system1: {steps: 0,"))
    again = tmp_path / "again"
    assert main([*args, "--out", str(again), "--grounder-from", str(out)]) == 0
    reused = Manifest.read(again)
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            weights(reused.grounder).values(), weights(warm.grounder).values(), strict=True
        )
    )
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            weights(reused.system1).values(), weights(base.system1).values(), strict=True
        )
    )


def test_answer_loss_is_the_models_own_loss_on_video_audio_and_image_batches(
    tiny_models, synth_sets
):
    """finetune's loss computes logits on the answer tokens only; it must equal the thinker's
    own causal-LM loss (labels on the answers) on System 1's video + audio prompts and on the
    grounder's image prompts, padding included, and give the same gradients."""
    import random

    from omnir1.config import Params
    from omnir1.data.shards import clips_for
    from omnir1.media.video import read_image
    from omnir1.models.loading import load_models
    from omnir1.rl.engine import context_from_sample
    from omnir1.rl.train import trainable_samples
    from omnir1.rl.warmstart import (
        _box_example,
        _system1_example,
        answer_loss,
        collate,
        target_boxes,
    )
    from omnir1.systems.grounding import Grounder
    from omnir1.systems.reasoning import GlobalReasoner

    data = synth_sets["revos"]
    params = Params()
    s1 = params.system1
    models = load_models(tiny_models, system2=False)
    model, processor = models.system1, models.system1_processor
    reasoner = GlobalReasoner(model, processor, s1)
    samples = trainable_samples("revos", data)[:3]
    clips = clips_for(samples, s1)
    rng = random.Random(0)
    system1 = [
        _system1_example(reasoner, c, s.expression, [0, 2, 3 + i], "the red circle", rng)
        for i, (s, c) in enumerate(zip(samples, clips, strict=True))
    ]
    assert context_from_sample(samples[0], s1, clips[0]).num_frames > 3
    grounder = Grounder(model, processor, params.grounder)
    boxes = [
        _box_example(grounder, read_image(sample.frame_paths[t]), text, b)
        for sample, t, text, b in list(target_boxes(samples, {}, frame_stride=20))[:3]
    ]
    for examples in (system1, boxes):
        assert len({len(e.prompt_ids) + len(e.answer_ids) for e in examples}) > 1  # padded
        batch = collate(examples, processor.tokenizer.pad_token_id)
        model.zero_grad()
        own = model(**batch).loss
        own.backward()
        own_grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        model.zero_grad()
        ours = answer_loss(model, batch)
        ours.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert torch.allclose(ours, own, atol=1e-5)
        assert len(grads) == len(own_grads)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads, own_grads, strict=True))
