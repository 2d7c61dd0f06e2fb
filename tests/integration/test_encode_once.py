"""omnir1.rl.encode_once: the G completions of a prompt share one pass of its video (or images)
and audio through the encoders, in generation and in every log-prob forward, and the
log-probs are what encoding every row gives."""

from __future__ import annotations

import pytest
import torch

from omnir1.benchmarks.registry import load
from omnir1.config import System1Params
from omnir1.experimental.params import StudySystem1Params
from omnir1.models.loading import load_models
from omnir1.rl.encode_once import encode_each_input_once
from omnir1.rl.inputs import LazyPrompts, SampleViews
from omnir1.rl.trainer import media_fields
from omnir1.systems.reasoning import GlobalReasoner

pytestmark = pytest.mark.slow
G = 3


def grpo_batch(models, synth_sets, cfg, completion: int = 8):
    """Two prompts (different videos) x G completions of random tokens, as TRL lays them out:
    rows left-padded prompt + completion, the prompts' media repeated per row."""
    samples = [s for s in load("revos", synth_sets["revos"]) if s.split == "train"]
    first = samples[0]
    second = next(s for s in samples if s.video_id != first.video_id)
    reasoner = GlobalReasoner(models.system1, models.system1_processor, cfg)
    prompts = LazyPrompts(reasoner, SampleViews([first, second], cfg), [first.expression] * 2)
    rows = [0] * G + [1] * G
    fields = media_fields(prompts, rows)
    generator = torch.Generator().manual_seed(0)
    ids = [prompts[r]["input_ids"][0] for r in rows]
    ids = [torch.cat([p, torch.randint(10, 200, (completion,), generator=generator)]) for p in ids]
    width = max(len(i) for i in ids)
    input_ids = torch.stack([torch.nn.functional.pad(i, (width - len(i), 0)) for i in ids])
    mask = torch.stack(
        [torch.nn.functional.pad(torch.ones_like(i), (width - len(i), 0)) for i in ids]
    )
    return {"input_ids": input_ids, "attention_mask": mask, **fields}


def counting(thinker) -> tuple[dict[str, list[int]], list]:
    """Rows (patches; audio frames) each tower sees, per call."""
    seen: dict[str, list[int]] = {"visual": [], "audio": []}
    hooks = [
        thinker.model.visual.register_forward_pre_hook(
            lambda m, args: seen["visual"].append(args[0].size(0))
        ),
        thinker.model.audio_tower.register_forward_pre_hook(
            lambda m, args: seen["audio"].append(args[0].size(-1))
        ),
    ]
    return seen, hooks


@pytest.mark.parametrize(
    "cfg",
    [System1Params(), StudySystem1Params(frames="images", max_pixels=1568)],
    ids=["video", "images"],
)
def test_a_prompt_is_encoded_once_for_its_completions_with_the_same_log_probs(
    cfg, tiny_models, synth_sets
):
    models = load_models(tiny_models, system2=False)
    thinker = models.system1.eval()
    batch = grpo_batch(models, synth_sets, cfg)
    seen, hooks = counting(thinker)
    try:
        with torch.no_grad():
            every_row = thinker(**batch).logits
            counted = {k: sum(v) for k, v in seen.items()}
            for v in seen.values():
                v.clear()
            encode_each_input_once(thinker)
            encode_each_input_once(thinker)  # idempotent
            once = thinker(**batch).logits
    finally:
        for h in hooks:
            h.remove()
    # the towers saw each prompt's media once instead of G times
    assert sum(seen["visual"]) * G == counted["visual"] > 0
    assert sum(seen["audio"]) * G == counted["audio"] > 0
    # and the log-probs of every row are those of encoding every row
    diff = (once.log_softmax(-1) - every_row.log_softmax(-1)).abs().max().item()
    assert diff <= 1e-5, diff


def test_generation_encodes_a_prompt_once_for_its_completions(tiny_models, synth_sets):
    """Generation encodes videos before its prefill (GenerationMixin picks the encoder's
    arguments by name) and audio in it: both see each prompt once; greedy tokens unchanged."""
    models = load_models(tiny_models, system2=False)
    thinker = models.system1.eval()
    batch = grpo_batch(models, synth_sets, System1Params(), completion=0)
    seen, hooks = counting(thinker)
    settings = {"max_new_tokens": 6, "do_sample": False}
    try:
        every_row = thinker.generate(**batch, **settings)
        counted = {k: sum(v) for k, v in seen.items()}
        for v in seen.values():
            v.clear()
        encode_each_input_once(thinker)
        once = thinker.generate(**batch, **settings)
    finally:
        for h in hooks:
            h.remove()
    assert sum(seen["visual"]) * G == counted["visual"] > 0
    assert sum(seen["audio"]) * G == counted["audio"] > 0
    assert torch.equal(once, every_row)
