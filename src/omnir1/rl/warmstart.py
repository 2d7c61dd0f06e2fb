"""Supervised warm starts of the two systems on answers derived from the ground truth.

GRPO needs a policy whose completions sometimes earn rewards: a randomly initialised model
writes no valid answer, every completion of a group scores the same and the advantages are
zero (docs/design.md §7). On the embedded default both systems therefore get a short supervised
start, with the loss on the answer tokens only:
- the grounder (System 2): (frame at the grounder's resolution, "the red circle") ->
  `[{"bbox_2d": box of the object's GT mask in the shown image's pixels, "label": ...}]`;
- System 1: (video + audio, expression) -> `<think>..</think><answer>[moments]</answer>`, one
  single-frame moment for each of up to `moments` frames where the target is visible, spread
  over the frames where it is, each with the target's single-frame description.

Descriptions come from the data set's object descriptions (`synth_objects.json`, written by the
synthetic generator); a data set without them uses the expression itself.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from omnir1.config import FinetuneParams
from omnir1.data.synth.generate import OBJECTS_FILE
from omnir1.fsutil import read_json
from omnir1.lazy import LazySequence
from omnir1.systems.parsing import FrameTimes
from omnir1.systems.prompts import format_time

END_OF_TURN = "<|im_end|>"


@dataclass
class Example:
    """One supervised example: prompt and answer token ids and the prompt's multimodal tensors
    (batch dimension 1)."""

    prompt_ids: list[int]
    answer_ids: list[int]
    fields: dict = field(repr=False)


class LazyExamples(LazySequence):
    """Examples made when a step draws them, from small `plans` (an index, frames, a text) by
    `make(plan)`; the last `cache` are kept. A warm start draws a few examples per step out of
    thousands: made up front they would all sit in memory with their pixels. Ready examples
    can be added (`examples + [...]`, research's rendered ones)."""

    def __init__(self, plans: Sequence, make, cache: int = 32):
        self.plans, self.make = list(plans), make
        super().__init__(len(self.plans), self._build, cache)

    def _build(self, index: int) -> Example:
        plan = self.plans[index]
        return plan if isinstance(plan, Example) else self.make(plan)

    def __add__(self, other: Sequence[Example]) -> LazyExamples:
        return LazyExamples([*self.plans, *other], self.make)


def collate(examples: Sequence[Example], pad_id: int) -> dict:
    """A right-padded batch with labels on the answer tokens only."""
    import torch

    width = max(len(e.prompt_ids) + len(e.answer_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id)
    labels = torch.full((len(examples), width), -100)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n, m = len(e.prompt_ids), len(e.answer_ids)
        ids[row, : n + m] = torch.tensor(e.prompt_ids + e.answer_ids)
        labels[row, n : n + m] = torch.tensor(e.answer_ids)
        mask[row, : n + m] = 1
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    for key in examples[0].fields:
        if key in ("input_features", "feature_attention_mask"):  # Whisper: pad to the longest
            length = max(e.fields[key].shape[-1] for e in examples)
            pad = torch.nn.functional.pad
            batch[key] = torch.cat(
                [pad(e.fields[key], (0, length - e.fields[key].shape[-1])) for e in examples]
            )
        else:
            batch[key] = torch.cat([e.fields[key] for e in examples])
    if "input_features" in batch:  # interleaved with the video, or a block of its own
        batch["use_audio_in_video"] = "pixel_values_videos" in batch
    return batch


def answer_loss(model, batch: dict):
    """The thinker's causal-LM loss on `batch` (collate's), with logits only where a label is:
    the mean cross-entropy of the answer tokens, as `model(**batch).loss`. The prompt, mostly
    video and audio tokens, is ~70 % of a System-1 sequence; its logits were wasted work."""
    import torch

    fields = {k: v for k, v in batch.items() if k != "labels"}
    hidden = model.model(**fields)[0]
    target = batch["labels"][:, 1:]  # position t predicts token t + 1
    answer = target != -100
    logits = model.lm_head(hidden[:, :-1][answer]).float()
    return torch.nn.functional.cross_entropy(logits, target[answer])


def finetune(
    model,
    examples: Sequence[Example],
    cfg: FinetuneParams,
    pad_id: int,
    *,
    seed: int = 0,
    desc: str = "sft",
) -> list[float]:
    """Train `model` on `examples` as `cfg` (params.yaml `warm_start.grounder` / `system1`)
    says: AdamW, warm-up then linear decay; the loss of every step."""
    import torch
    from tqdm import tqdm

    from omnir1.models.loading import check_master_weights

    if not examples:
        raise ValueError("no examples to train on")
    check_master_weights(model)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]  # frozen towers stay as they are
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=0.0)

    def lr_factor(step: int) -> float:
        warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
        decay = 1.0 - (1.0 - cfg.final_lr_ratio) * step / max(1, cfg.steps - 1)
        return warm * decay

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    losses = []
    bar = tqdm(range(cfg.steps), desc=desc, mininterval=2.0)
    for _ in bar:
        batch = collate(
            [examples[rng.randrange(len(examples))] for _ in range(cfg.batch_size)], pad_id
        )
        loss = answer_loss(
            model, {k: v.to(model.device) if hasattr(v, "to") else v for k, v in batch.items()}
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    model.eval()
    return losses


# --- what the answers are derived from ---------------------------------------------------------


def _synth_objects(data: str | Path) -> dict[str, dict[str, dict]]:
    """video id -> object id -> its attributes, from the data set's `synth_objects.json`
    (empty when the data set has none: real data sets)."""
    path = Path(data) / OBJECTS_FILE
    return read_json(path) if path.is_file() else {}


def object_descriptions(data: str | Path) -> dict[tuple[str, str], str]:
    """(video id, object id) -> "the red circle" (empty without `synth_objects.json`)."""
    return {
        (vid, oid): f"the {o['color']} {o['shape']}"
        for vid, objects in _synth_objects(data).items()
        for oid, o in objects.items()
    }


def target_description(sample, descriptions: dict[tuple[str, str], str]) -> str:
    """The single-frame description of a sample's referents (the expression when unknown)."""
    named = [descriptions.get((sample.video_id, str(o))) for o in sample.object_ids]
    if named and all(named):
        return " and ".join(named)
    return sample.expression


def spread(frames: Sequence[int], k: int) -> list[int]:
    """Up to k of `frames`, evenly spread from the first to the last."""
    if len(frames) <= k:
        return list(frames)
    picks = np.linspace(0, len(frames) - 1, k)
    return sorted({frames[round(float(p))] for p in picks})


def system1_answer(
    visible: Sequence[int], description: str, moments: int, frame_times: FrameTimes
) -> str:
    """The answer a perfect System 1 would write: single-frame moments on frames where the
    target is visible, each at its frame's own sample time (which the parser maps back to it)."""
    items = []
    for frame in spread(visible, moments):
        time = format_time(frame_times.times_s[frame])
        items.append({"start_time": time, "end_time": time, "description": description})
    think = f"The expression refers to {description}."
    return f"<think>{think}</think><answer>{json.dumps(items)}</answer>"


def grounder_answer(boxes: Sequence[Sequence[int]], description: str) -> str:
    return json.dumps([{"bbox_2d": list(b), "label": description} for b in boxes])


# --- examples ----------------------------------------------------------------------------------


def system1_examples(reasoner, samples, clips, targets, descriptions, seed: int = 0):
    """One example per sample whose target is visible on some System-1 frame."""
    plans = []
    for i, (sample, target) in enumerate(zip(samples, targets, strict=True)):
        visible = [f for f, area in enumerate(target.union_areas) if area > 0]
        if visible:
            plans.append((i, visible, target_description(sample, descriptions)))

    def make(plan) -> Example:
        i, visible, description = plan
        rng = random.Random(seed * 1_000_003 + i)
        return _system1_example(
            reasoner, clips[i], samples[i].expression, visible, description, rng
        )

    return LazyExamples(plans, make)


def _system1_example(reasoner, clip, expression: str, visible, description: str, rng) -> Example:
    """System 1's prompt on `clip` -> the answer naming `description` on the `visible` frames."""
    inputs = reasoner.inputs(clip, expression, rng)
    answer = system1_answer(visible, description, reasoner.cfg.moments, clip.frame_times)
    tok = reasoner.processor.tokenizer
    return Example(
        inputs["input_ids"][0].tolist(), tok(answer + END_OF_TURN)["input_ids"], _fields(inputs)
    )


def target_boxes(samples, descriptions, *, frame_stride: int = 3):
    """(sample, frame, the sample's target description, the boxes of the target's objects) on
    every `frame_stride`-th frame where the target is visible; each (video, objects, frame)
    once."""
    from omnir1.data.masks import mask_box

    seen = set()
    for sample in samples:
        if sample.mask_source is None or sample.is_null:
            continue
        height, width = sample.frame_size()
        text = target_description(sample, descriptions)
        for t in range(0, sample.num_frames, frame_stride):
            key = (sample.video_id, sample.object_ids, t)
            if key in seen:
                continue
            seen.add(key)
            boxes = [mask_box(m) for m in sample.mask_source.frame_masks(t, height, width)]
            boxes = [b for b in boxes if b is not None]
            if boxes:
                yield sample, t, text, boxes


def _box_example(grounder, image: np.ndarray, text: str, boxes) -> Example:
    """The grounder's prompt on `image` (resized as it sees it) -> `boxes`, scaled alike."""
    shown = grounder._resized(image)
    sx, sy = shown.shape[1] / image.shape[1], shown.shape[0] / image.shape[0]
    scaled = [
        [round(b[0] * sx), round(b[1] * sy), round(b[2] * sx), round(b[3] * sy)] for b in boxes
    ]
    inputs = grounder.processor(
        text=[grounder._prompt(text)],
        images=[np.array(shown)],
        images_kwargs={"do_resize": False},
        return_tensors="pt",
    )
    answer = grounder.processor.tokenizer(grounder_answer(scaled, text) + END_OF_TURN)
    return Example(inputs["input_ids"][0].tolist(), answer["input_ids"], _fields(inputs))


def grounder_examples(grounder, samples, descriptions, *, frame_stride: int = 3):
    """(frame, the sample's target description) -> the boxes of the target's objects, for
    every frame of `target_boxes`."""
    from omnir1.media.video import read_image

    def make(plan) -> Example:
        sample, t, text, boxes = plan
        return _box_example(grounder, read_image(sample.frame_paths[t]), text, boxes)

    return LazyExamples(list(target_boxes(samples, descriptions, frame_stride=frame_stride)), make)


def _fields(inputs) -> dict:
    """The multimodal tensors of one example. Whisper features come padded to 30 s: kept to the
    clip's own length (collate pads a batch to its longest), a 4 s clip's take 7x less memory."""
    fields = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    if "feature_attention_mask" in fields:
        length = int(fields["feature_attention_mask"].sum(-1).max())
        for key in ("input_features", "feature_attention_mask"):
            fields[key] = fields[key][..., :length].clone()  # a slice would keep all 30 s
    return fields


# --- the warm-start step -----------------------------------------------------------------------


@dataclass(frozen=True)
class System1Stage:
    """One supervised stage of System 1: its optimiser settings, which of the training set's
    expressions it trains on (`select`: a sample's index -> bool; None: all), and a maker of more
    examples (`extra(reasoner, number)`, e.g. research's freshly rendered clips). `info` goes
    into the stage's summary."""

    finetune: FinetuneParams
    select: Callable[[int], bool] | None = None
    extra: Callable[[object, int], list[Example]] | None = None
    info: Mapping = field(default_factory=dict)


def run_warm_start(
    params,
    *,
    data: str | Path,
    fmt: str,
    models_dir: str | Path,
    out: str | Path,
    grounder_from: str | Path | None = None,
    system1_stages: Sequence[System1Stage] | None = None,
    grounder_extra: Callable[[object], list[Example]] | None = None,
    grounder_info: Mapping | None = None,
    samples: Sequence | None = None,
) -> dict:
    """Warm-start the grounder and/or System 1 of `models_dir` on the data set's train split
    (as `params.warm_start` says) and write the result as a model folder at `out`.
    `grounder_from` takes an already warm-started grounder from that model folder instead.
    `system1_stages` (default: one stage, `warm_start.system1` on every expression) train one
    after the other, each from the last one's weights; `grounder_extra(grounder)` adds grounder
    examples (omnir1.experimental.warmstart builds both from research knobs). `samples`: the
    train split's expressions when the caller has them (default: `trainable_samples`)."""
    import torch

    from omnir1.lazy import Picked
    from omnir1.models.loading import (
        Manifest,
        freeze_towers,
        link_tree,
        load_models,
        load_thinker,
        part_saver,
        stored_dtype,
        write_model_folder,
    )
    from omnir1.rl.inputs import ClipsOf, LazyContexts, SampleViews
    from omnir1.rl.train import trainable_samples
    from omnir1.systems.grounding import Grounder
    from omnir1.systems.reasoning import GlobalReasoner
    from omnir1.timing import Stopwatch

    ws = params.warm_start
    watch = Stopwatch()
    if samples is None:
        samples = trainable_samples(fmt, data)
    stages = list(system1_stages) if system1_stages is not None else [System1Stage(ws.system1)]
    # float32 masters whatever the stored dtype: both thinkers are trained here
    attention = params.system1.attn_implementation
    models = load_models(
        models_dir, system2=False, system1_dtype=torch.float32, attn_implementation=attention
    )
    descriptions = object_descriptions(data)
    summary: dict = {"samples": len(samples), "described": bool(descriptions)}
    savers = {}

    if grounder_from is not None:
        source = Manifest.read(grounder_from).grounder
        savers["grounder"] = lambda folder: link_tree(source, folder)
        summary["grounder"] = {"from": str(grounder_from)}
    elif ws.grounder.steps > 0:
        grounder_model, grounder_processor = load_thinker(
            Manifest.read(models_dir).grounder, dtype=torch.float32, attn_implementation=attention
        )
        grounder = Grounder(grounder_model, grounder_processor, params.grounder)
        with watch("grounder_examples"):
            examples = grounder_examples(
                grounder, samples, descriptions, frame_stride=ws.grounder_frame_stride
            )
            if grounder_extra is not None:
                examples += grounder_extra(grounder)
        freeze_towers(grounder_model, vision=ws.grounder.train_vision)
        with watch("grounder_train"):
            losses = finetune(
                grounder_model,
                examples,
                ws.grounder,
                grounder_processor.tokenizer.pad_token_id,
                seed=params.train.seed,
                desc="warm start: grounder",
            )
        grounder_dtype = stored_dtype(Manifest.read(models_dir).grounder)
        savers["grounder"] = part_saver(grounder_model, grounder_processor, grounder_dtype)
        summary["grounder"] = {
            "examples": len(examples),
            **(grounder_info or {}),
            "loss": _ends(losses),
        }
    if any(stage.finetune.steps > 0 for stage in stages):
        s1 = params.system1
        reasoner = GlobalReasoner(models.system1, models.system1_processor, s1)
        with watch("system1_examples"):
            # clips are loaded as examples are drawn (a few videos kept), the targets (a few
            # numbers per frame) once: memory stays flat in the number of samples
            views = SampleViews(samples, s1)
            clips = Picked(ClipsOf(views), range(len(samples)))
            targets = [t.target for t in LazyContexts(samples, s1, views)]
        done = []
        for number, stage in enumerate(stages):
            if stage.finetune.steps == 0:
                continue
            with watch("system1_examples"):
                chosen = [i for i in range(len(samples)) if stage.select is None or stage.select(i)]
                examples = system1_examples(
                    reasoner,
                    [samples[i] for i in chosen],
                    Picked(clips, chosen),
                    [targets[i] for i in chosen],
                    descriptions,
                    seed=params.train.seed,
                )
                if stage.extra is not None:
                    examples += stage.extra(reasoner, number)
            freeze_towers(models.system1, vision=stage.finetune.train_vision)
            desc = "warm start: system 1"
            if len(stages) > 1:
                desc += f" (stage {number + 1}/{len(stages)})"
            with watch("system1_train"):
                losses = finetune(
                    models.system1,
                    examples,
                    stage.finetune,
                    models.system1_processor.tokenizer.pad_token_id,
                    seed=params.train.seed,
                    desc=desc,
                )
            done.append({"examples": len(examples), **stage.info, "loss": _ends(losses)})
        system1_dtype = stored_dtype(models.manifest.system1)
        savers["system1"] = part_saver(models.system1, models.system1_processor, system1_dtype)
        summary["system1"] = done[0] if len(done) == 1 else {"stages": done, **done[-1]}
    name = f"{models.manifest.name}-warm"
    write_model_folder(models_dir, out, name=name, **savers)
    summary["seconds"] = watch.timings
    return summary


def _ends(losses: Sequence[float]) -> dict:
    """First and last loss (the mean of up to 10 steps each)."""
    head, tail = losses[:10], losses[-10:]
    return {"first": sum(head) / len(head), "last": sum(tail) / len(tail), "steps": len(losses)}
