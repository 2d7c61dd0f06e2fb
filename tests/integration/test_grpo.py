"""GRPO steps of the tiny System 1 on real video + audio prompts, rewards from the engine."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset

from omnir1.data.loaders import load
from omnir1.models.loading import load_models
from omnir1.rl.engine import RewardEngine, context_from_sample
from omnir1.rl.trainer import GroupRewards, VideoGRPOTrainer, prepare_prompts
from omnir1.systems.reasoning import GlobalReasoner, load_clip

pytestmark = pytest.mark.slow


def test_two_grpo_steps_move_the_policy_and_not_the_grounder(tiny_models, synth_sets, tmp_path):
    from trl import GRPOConfig

    models = load_models(tiny_models)
    samples = [s for s in load("revos", synth_sets["revos"]) if s.split == "train"][:2]
    reasoner = GlobalReasoner(models.system1, models.system1_processor)
    clips = [
        load_clip(s.frame_paths[0].parent, audio=s.audio_path, folder_fps=s.fps) for s in samples
    ]
    assert all(c.audio is not None for c in clips)
    prompt_inputs = prepare_prompts(reasoner, clips, [s.expression for s in samples])
    contexts = [context_from_sample(s) for s in samples]
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
