"""GRPO of System 1 on video + audio prompts: a thin subclass of TRL 1.16's GRPOTrainer.

The stock trainer carries images only. Our prompts are videos with their audio interleaved,
prepared per sample when first asked for (`omnir1.rl.inputs.LazyPrompts` over
`GlobalReasoner.inputs`) (token ids with the video/audio
placeholders, pixel_values_videos, video_grid_thw, video_second_per_grid, Whisper features). The
subclass
- tokenises a batch by looking up each row's prepared inputs (rows carry `sample_index`),
- hands the video/audio tensors to generation as multimodal fields,
- adds them to every log-prob forward (policy, old policy, frozen reference) for the rows of
  each chunk, following the rows through TRL's splitting and shuffling by a `sample_index`
  tensor in the batch,
- encodes a prompt's video and audio once for its G rows (`omnir1.rl.encode_once`).
Rewards come from `omnir1.rl.engine.RewardEngine` through `reward_funcs`: one System-2 call
per group, shared by all reward functions of a batch.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers.trainer import TRAINING_ARGS_NAME
from trl import GRPOTrainer
from trl.trainer.utils import RepeatSampler

from omnir1.fsutil import write_json
from omnir1.models.loading import check_master_weights
from omnir1.rl.checkpoints import CHECKPOINT_DONE
from omnir1.rl.encode_once import encode_each_input_once
from omnir1.rl.engine import GroupContext, RewardEngine

# the processor's outputs for System 1's frames, by its `frames` setting
VIDEO_FIELDS = ("pixel_values_videos", "video_grid_thw", "video_second_per_grid")
IMAGE_FIELDS = ("pixel_values", "image_grid_thw")


def media_fields(prompt_inputs, rows: Sequence[int], device=None) -> dict:
    """The thinker's video/image/audio arguments for a batch of `rows` (sample indices), each
    row's prepared inputs stacked in order: a prompt's media once per row that carries it (the
    encoders see them once all the same: omnir1.rl.encode_once)."""
    prepared = [prompt_inputs[r] for r in rows]
    fields = {
        key: torch.cat([p[key] for p in prepared]).to(device)
        for key in (*VIDEO_FIELDS, *IMAGE_FIELDS, "input_features", "feature_attention_mask")
        if all(key in p for p in prepared)
    }
    if "input_features" in fields:
        fields["use_audio_in_video"] = "pixel_values_videos" in fields
    return fields


class EpochSampler(RepeatSampler):
    """TRL's RepeatSampler with one permutation per epoch, seeded by (seed, epoch).

    The stock one draws each epoch's permutation from a generator seeded once, so a process
    resumed in epoch e > 0 replays epoch 0's order. The Trainer calls `set_epoch` before each
    epoch's iterator (accelerate's DataLoaderShard forwards it, also past skip_first_batches)."""

    def set_epoch(self, epoch: int) -> None:
        if self.shuffle:
            self.generator.manual_seed(self.seed + epoch)


class VideoGRPOTrainer(GRPOTrainer):
    def __init__(
        self, *args, prompt_inputs: dict[int, dict], rewards: GroupRewards | None = None, **kwargs
    ):
        super().__init__(*args, **kwargs)
        check_master_weights(self.model, deepspeed=self.is_deepspeed_enabled)
        # G rows per prompt: its video and audio through the encoders once, not G times
        encode_each_input_once(self.accelerator.unwrap_model(self.model))
        self.prompt_inputs = prompt_inputs
        self.group_rewards = rewards  # for the step-time split (reward and System-2 time)
        self._generate_s = 0.0
        self._rows: list[int] = []  # sample index of each row of the batch being processed
        # the rows' video/audio tensors, built once per chunk of rows: generation, the old and
        # reference log-probs and the loss all ask for the same chunks
        self._fields_cache: tuple[tuple[int, ...], dict] | None = None

    def _get_train_sampler(self, dataset=None):
        s = super()._get_train_sampler(dataset)
        return EpochSampler(
            s.data_source, s.mini_repeat_count, s.batch_size, s.repeat_count, s.shuffle, s.seed
        )

    def _run_epoch(self, *args, **kwargs):
        # transformers 5 checks the step budget only after a step: a run resumed from its last
        # checkpoint (global_step == max_steps, inside the first epoch) trained one step more
        # than an uninterrupted run. A finished run resumed trains nothing.
        if self.state.global_step >= self.state.max_steps > 0:
            self.control.should_training_stop = True
            return None
        return super()._run_epoch(*args, **kwargs)

    def _save(self, output_dir=None, state_dict=None):
        # transformers 5's save_pretrained writes the Hub key layout (`audio_tower.*` for the
        # thinker's `model.audio_tower.*`) but Trainer._load_from_checkpoint reads it back with a
        # plain non-strict load_state_dict: every renamed weight was skipped, so --resume went on
        # from the base weights (huggingface/transformers#43701, #48805). Checkpoints keep the
        # model's own names (from_pretrained reads both layouts); OUT/model keeps the Hub layout.
        if not self.args.should_save:
            return
        output_dir = output_dir or self.args.output_dir
        self.model.save_pretrained(output_dir, state_dict=state_dict, save_original_format=False)
        self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, Path(output_dir) / TRAINING_ARGS_NAME)

    def _issue_warnings_after_load(self, load_result):
        # the stock trainer only warns: a partial restore must not go on silently (weights tied
        # to a saved one are left out of the file, as from_pretrained allows)
        tied = getattr(self.model, "all_tied_weights_keys", None) or {}
        missing = set(load_result.missing_keys) - tied.keys()
        if missing or load_result.unexpected_keys:
            raise RuntimeError(
                f"checkpoint weights do not match the model: missing {sorted(missing)}, "
                f"unexpected {load_result.unexpected_keys}"
            )

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        # TRL writes into checkpoint-N directly; a process killed while saving leaves a partial
        # folder. Once every rank wrote its files, flush them and mark the folder complete.
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            folder = Path(self._get_output_dir(trial)) / f"checkpoint-{self.state.global_step}"
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    with path.open("rb") as fh:
                        os.fsync(fh.fileno())
            write_json(folder / CHECKPOINT_DONE, {"global_step": self.state.global_step})

    def _generate_and_score_completions(self, inputs):
        self._rows = [int(x["sample_index"]) for x in inputs]
        start = time.perf_counter()
        out = super()._generate_and_score_completions(inputs)
        self._generate_s = time.perf_counter() - start
        # a per-row tensor: TRL splits and shuffles it with the rest of the batch
        out["sample_index"] = torch.tensor(self._rows, device=out["prompt_ids"].device)
        return out

    def training_step(self, model, inputs, num_items_in_batch=None):
        """One step, its time split into generation, System 2, the rest of the rewards and the
        update (forward and backward passes), logged with TRL's per-step metrics."""
        self._generate_s = 0.0
        start = time.perf_counter()
        loss = super().training_step(model, inputs, num_items_in_batch)
        total = time.perf_counter() - start
        reward_s, system2_s = (
            self.group_rewards.take_seconds() if self.group_rewards else (0.0, 0.0)
        )
        split = {
            "generation_s": self._generate_s - reward_s,
            "system2_s": system2_s,
            "reward_s": reward_s - system2_s,
            "update_s": total - self._generate_s,
        }
        for name, seconds in split.items():
            self._metrics["train"][f"time/{name}"].append(seconds)
        return loss

    def _compute_loss(self, model, inputs):
        self._rows = inputs["sample_index"].tolist()
        return super()._compute_loss(model, inputs)

    def _video_fields(self, rows: Sequence[int]) -> dict:
        key = tuple(rows)
        if self._fields_cache is not None and self._fields_cache[0] == key:
            return self._fields_cache[1]
        fields = media_fields(self.prompt_inputs, rows, self.accelerator.device)
        self._fields_cache = (key, fields)
        return fields

    def _tokenize_prompts(self, prompts):
        ids = [self.prompt_inputs[r]["input_ids"][0].tolist() for r in self._rows]
        return ids, None, self._video_fields(self._rows)

    def _get_per_token_logps_and_entropies(
        self,
        model,
        input_ids,
        attention_mask,
        logits_to_keep,
        batch_size=None,
        compute_entropy=False,
        compute_aux_loss=False,
        **image_fields,  # TRL's image inputs: always None here
    ):
        batch_size = batch_size or input_ids.size(0)
        logps, entropies = [], []
        for start in range(0, input_ids.size(0), batch_size):
            end = min(start + batch_size, input_ids.size(0))
            ids, mask = input_ids[start:end], attention_mask[start:end]
            labels = ids.masked_fill(mask == 0, -100)  # only completion tokens are scored
            labels[:, :-logits_to_keep] = -100
            with self.accelerator.autocast():
                out = model(
                    input_ids=ids,
                    attention_mask=mask,
                    labels=labels,
                    fused_lm_head=True,
                    **self._video_fields(self._rows[start:end]),
                )
            logps.append(out.log_probs[:, -logits_to_keep:])
            if compute_entropy:
                entropies.append(out.entropy[:, -logits_to_keep:])
        return torch.cat(logps), torch.cat(entropies) if compute_entropy else None, None


class GroupRewards:
    """TRL reward functions backed by one RewardEngine: the first function called on a batch
    scores every group (one System-2 call each); the others read the same results."""

    def __init__(self, engine: RewardEngine, contexts: Sequence[GroupContext]):
        self.engine = engine
        self.contexts = contexts
        self._key: tuple | None = None
        self._scores: list[dict] = []
        self.last_components: list[dict] = []  # per completion, for logging
        self.last_table: list[dict] = []  # completions with their rewards, for tracking
        self._system2_s = 0.0
        self._reward_s = 0.0

    def _score(self, completions: Sequence[str], sample_index: Sequence[int]) -> None:
        key = (tuple(sample_index), tuple(completions))
        if key == self._key:
            return
        start = time.perf_counter()
        scores: list[dict | None] = [None] * len(completions)
        for sample in dict.fromkeys(sample_index):
            rows = [i for i, s in enumerate(sample_index) if s == sample]
            group = self.engine.score_group(self.contexts[sample], [completions[i] for i in rows])
            self._system2_s += group.system2_s
            for i, rewards in zip(rows, group.rewards, strict=True):
                scores[i] = rewards
        self._key, self._scores = key, scores
        self.last_components = [
            {name: r.to_dict() for name, r in s.items()} for s in scores if s is not None
        ]
        self.last_table = [
            {
                "sample": self.contexts[sample_index[i]].key,
                "completion": completions[i][:2000],
                **{f"reward_{name}": r.total for name, r in scores[i].items()},
                "components": json.dumps(self.last_components[i]),
            }
            for i in range(len(completions))
        ]
        self._reward_s += time.perf_counter() - start

    def take_seconds(self) -> tuple[float, float]:
        """(time scoring rewards, of which System 2) since the last call."""
        times = (self._reward_s, self._system2_s)
        self._reward_s = self._system2_s = 0.0
        return times

    def functions(self) -> list:
        def make(name: str):
            def reward(prompts, completions, sample_index, **_):
                texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
                self._score(texts, [int(s) for s in sample_index])
                return [s[name].total for s in self._scores]

            reward.__name__ = name
            return reward

        return [make(name) for name in self.engine.rewards]
