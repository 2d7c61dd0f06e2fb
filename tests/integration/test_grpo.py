"""GRPO steps of the tiny System 1 on real video + audio prompts, rewards from the engine."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datasets import Dataset

from omnir1.benchmarks.registry import load
from omnir1.config import System1Params
from omnir1.experimental.params import StudySystem1Params
from omnir1.models.loading import load_models
from omnir1.rl.engine import RewardEngine, context_from_sample
from omnir1.rl.inputs import LazyContexts, LazyPrompts, SampleViews
from omnir1.rl.trainer import GroupRewards, VideoGRPOTrainer
from omnir1.systems.reasoning import GlobalReasoner, load_clip

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


# video: the frames as one video with the audio interleaved; images: each frame an image after
# its time in text (system1.frames), at the embedded default's 28 px
@pytest.mark.parametrize(
    "cfg",
    [System1Params(), StudySystem1Params(frames="images", max_pixels=1568)],
    ids=["video", "images"],
)
def test_two_grpo_steps_move_the_policy_and_not_the_grounder(
    cfg, tiny_models, synth_sets, tmp_path
):
    from trl import GRPOConfig

    models = load_models(tiny_models)
    samples = [s for s in load("revos", synth_sets["revos"]) if s.split == "train"][:2]
    reasoner = GlobalReasoner(models.system1, models.system1_processor, cfg)
    views = SampleViews(samples, cfg)
    assert all(views(i)[0].audio is not None for i in range(len(samples)))
    prompt_inputs = LazyPrompts(reasoner, views, [s.expression for s in samples])
    contexts = LazyContexts(samples, cfg, views)
    rewards = GroupRewards(RewardEngine(["format", "video_accuracy"], models), contexts)
    dataset = Dataset.from_list(
        [{"prompt": s.expression, "sample_index": i} for i, s in enumerate(samples)]
    )
    config = GRPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=16,
        max_steps=2,
        beta=0.04,
        loss_type="grpo",
        learning_rate=1e-3,
        temperature=1.0,
        top_p=0.95,
        generation_kwargs={"suppress_tokens": reasoner.suppress_tokens},
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        seed=0,
    )
    before = {k: v.detach().clone() for k, v in models.system1.named_parameters()}
    grounder_before = {k: v.detach().clone() for k, v in models.grounder.named_parameters()}

    def distinct_tokens(prompts, completions, **_):
        # a random policy earns no format or accuracy reward: this one varies within a group,
        # so the advantages are not all zero and the update has a direction
        return [len(set(c)) / 10 for c in completions]

    trainer = VideoGRPOTrainer(
        model=models.system1,
        processing_class=models.system1_processor,
        reward_funcs=[*rewards.functions(), distinct_tokens],
        args=config,
        train_dataset=dataset,
        prompt_inputs=prompt_inputs,
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2
    assert {"rewards/format/mean", "rewards/video_accuracy/mean", "kl"} <= logs[0].keys()
    assert logs[1]["kl"] > 0  # the policy left the reference after the first update
    moved = [k for k, v in models.system1.named_parameters() if not torch.equal(v, before[k])]
    assert any("model.layers" in k for k in moved)  # the language model trained
    for k, v in models.grounder.named_parameters():  # the frozen copy did not move
        assert torch.equal(v, grounder_before[k])
    assert len(rewards.last_components) == 4  # every completion's reward, with its parts


def test_advantages_and_kl_on_a_known_batch(tiny_models, synth_sets, tmp_path):
    """Our recipe in TRL terms on a batch whose rewards and reference are known: advantages are
    (r - group mean) / (group std + 1e-4), the KL is k3 = exp(ref - logp) - (ref - logp) - 1
    per token, and with one optimisation step per generation (ratio 1) the GRPO loss is
    mean(-A) + beta * KL."""
    import math

    from omnir1.config import load_params

    models = load_models(tiny_models, system2=False)
    sample = next(s for s in load("revos", synth_sets["revos"]) if s.split == "train")
    reasoner = GlobalReasoner(models.system1, models.system1_processor)
    views = SampleViews([sample], reasoner.cfg)
    prompt_inputs = LazyPrompts(reasoner, views, [sample.expression])
    train = load_params(ROOT / "configs/params/release.yaml").train.model_copy(
        update={"num_generations": 4, "max_completion_length": 8, "max_steps": 1}
    )
    config = train.grpo_config(tmp_path, use_cpu=True, suppress_tokens=reasoner.suppress_tokens)
    known = [1.0, 2.0, 3.0, 6.0]

    def known_rewards(prompts, completions, **_):
        return known[: len(completions)]

    trainer = VideoGRPOTrainer(
        model=models.system1,
        processing_class=models.system1_processor,
        reward_funcs=[known_rewards],
        args=config,
        train_dataset=Dataset.from_list([{"prompt": sample.expression, "sample_index": 0}]),
        prompt_inputs=prompt_inputs,
    )
    trainer.model.train()
    batch = trainer._generate_and_score_completions(
        [{"prompt": sample.expression, "sample_index": 0}] * 4
    )
    rewards = torch.tensor(known)
    expected = (rewards - rewards.mean()) / (rewards.std() + 1e-4)  # Bessel-corrected std
    assert torch.allclose(batch["advantages"], expected, atol=1e-6)

    # a reference 0.1 nat below the policy on every completion token: k3 = e^-0.1 + 0.1 - 1
    logps, _, _ = trainer._get_per_token_logps_and_entropies(
        trainer.model,
        torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1),
        torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1),
        batch["completion_ids"].size(1),
    )
    batch["ref_per_token_logps"] = logps.detach() - 0.1
    batch["old_per_token_logps"] = None
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop otherwise
    loss = trainer._compute_loss(trainer.model, batch)
    k3 = math.exp(-0.1) + 0.1 - 1
    assert trainer._metrics["train"]["kl"][-1] == pytest.approx(k3, rel=1e-4)
    assert float(loss) == pytest.approx(0.04 * k3 - float(batch["advantages"].mean()), abs=1e-6)


def test_lazy_inputs_are_what_building_them_all_at_once_gives(tiny_models, synth_sets):
    """Prompts and reward contexts made on first use (omnir1.rl.inputs) equal the eager ones:
    each prompt with its own seeded example times, each context at System 1's sample times."""
    import random

    models = load_models(tiny_models, system2=False)
    cfg = System1Params(max_pixels=1568)
    samples = [s for s in load("revos", synth_sets["revos"]) if s.split == "train"][:5]
    reasoner = GlobalReasoner(models.system1, models.system1_processor, cfg)
    views = SampleViews(samples, cfg)
    prompts = LazyPrompts(reasoner, views, [s.expression for s in samples], seed=3, cache=2)
    contexts = LazyContexts(samples, cfg, views, cache=2)
    for i in [4, 0, 3, 0, 1]:  # out of order, past the caches
        s = samples[i]
        clip = load_clip(s.frame_paths[0].parent, audio=s.audio_path, cfg=cfg, folder_fps=s.fps)
        eager = reasoner.inputs(clip, s.expression, random.Random(3 * 1_000_003 + i))
        lazy = prompts[i]
        assert lazy.keys() == eager.keys()
        assert all(torch.equal(lazy[k], eager[k]) for k in eager)
        assert contexts[i].target == context_from_sample(s, cfg, clip).target
        assert contexts[i].frame_times == clip.frame_times
    assert len(prompts) == len(contexts) == 5 and list(prompts) == [0, 1, 2, 3, 4]
