"""The device check at the real sizes: Qwen2.5-Omni-3B and -7B thinkers and SAM2.1 hiera-l with
random weights, built on the GPU (nothing is downloaded), timed on a release-size prompt.

    PYTHONPATH=src python bench/gpu_scale.py --out $OUT/gpu_scale.json        # one GPU
    .venv/bin/python bench/gpu_scale.py --smoke --device cpu     # reports/gpu_scale.json

Stages: `sam2` first (SAM2.1 hiera-l at 1024 px tracking 1, 8 and 32 objects through 32
frames: masks/s), then per model (`--models 3b,7b`) `build` (the thinker in bf16, allocated
and initialised on the device), `prompt` (one release prompt through `GlobalReasoner.inputs`,
the processor path the trainer uses: 24 frames at system1.max_pixels with 12 s of audio
interleaved; its token count), `prefill` (one forward of G = 8 rows of it: generation's first
step), `rollout` (G = 8 sampled completions of exactly max_completion_length = 800 tokens:
generated tokens/s), `grounder` (System 2's grounder on a group's 32 keyframe requests at the
release budget: boxes/s) and `grpo` (two GRPO steps on those completions: reference log-probs,
the policy loss forward and backward, the optimiser step; which optimiser is recorded).

Each stage records its seconds and peak GPU memory (reset between stages); a stage that fails
(out of memory, a missing kernel) is recorded with its error and the next one runs; once
`--budget-s` (480 s) is spent the remaining stages are recorded as skipped, so that a run ends
inside one 10-minute device command. The JSON is rewritten (atomically) before and after every
stage: a run killed by a time limit keeps what finished and names the stage it was in.
`--smoke` runs the same code at toy sizes (tiny thinkers and SAM2, a few frames and tokens) in
well under a minute on a CPU (tests/integration/test_gpu_scale.py).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import random
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("prompt", "prefill", "rollout", "grounder", "grpo", "sam2")
PRESETS = {"3b": "qwen2.5-omni-3b", "7b": "qwen2.5-omni-7b"}
# what fits one card beside the float32 master weights and their gradients: AdamW's two float32
# states for the 3B (~25 GB), none for the 7B (AdamW's would be 61 GB: 122 GB with the masters
# and gradients); Adafactor keeps factored second moments only (a few MB)
OPTIMIZERS = {"3b": "adamw_fused", "7b": "adafactor"}
EXPRESSION = "the dog that barks before it jumps onto the sofa"
SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class Scale:
    """Everything a run's sizes depend on: the release recipe's sections, or toy ones."""

    system1: object  # omnir1.config.System1Params
    grounder: object  # GrounderParams
    train: object  # TrainParams
    native: tuple[int, int]  # (height, width) of the synthetic video
    audio_s: float
    grounder_frames: int  # distinct keyframes of a GRPO group's grounding requests
    grounder_descriptions: int  # descriptions per keyframe
    sam2: str  # presets.SAM2 name, or "tiny" (hiera-t at sam2_size px)
    sam2_size: int
    sam2_frames: int
    sam2_objects: tuple[int, ...] = (1, 8, 32)
    smoke: bool = False
    thinker_layers: dict = field(default_factory=dict)  # smoke: layers of each toy thinker


def release_scale() -> Scale:
    """The release recipe, configs/params/release.yaml (a whole params file: copied over
    params.yaml, not merged into it)."""
    from omnir1.config import load_params

    p = load_params(ROOT / "configs/params/release.yaml")
    return Scale(
        system1=p.system1,
        grounder=p.grounder,
        train=p.train,
        native=(720, 1280),
        audio_s=p.system1.max_frames / p.system1.fps,  # 24 frames at 2 fps: 12 s
        grounder_frames=8,  # G = 8 completions x 4 keyframes, 8 distinct frames
        grounder_descriptions=4,
        sam2="hiera-l",
        sam2_size=1024,
        sam2_frames=32,
    )


def smoke_scale() -> Scale:
    from omnir1.config import GrounderParams, System1Params, TrainParams

    return Scale(
        system1=System1Params(max_frames=4, max_pixels=4 * 28 * 28, max_new_tokens=8),
        grounder=GrounderParams(max_pixels=6272, max_new_tokens=6, batch_size=4),
        train=TrainParams(num_generations=4, max_completion_length=8),
        native=(90, 160),
        audio_s=2.0,
        grounder_frames=2,
        grounder_descriptions=2,
        sam2="tiny",
        sam2_size=64,
        sam2_frames=4,
        smoke=True,
        thinker_layers={"3b": 2, "7b": 3},
    )


class Report:
    """The JSON file, rewritten after every change; stages run through `stage`."""

    def __init__(self, path: Path, meta: dict, budget_s: float, device: str):
        self.path, self.budget_s, self.device = path, budget_s, device
        self.data = {**meta, "budget_s": budget_s, "elapsed_s": 0.0, "finished": False}
        self.data["stages"] = {}
        self.start = time.perf_counter()
        self.write()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def write(self) -> None:
        from omnir1.fsutil import write_json

        self.data["elapsed_s"] = round(self.elapsed(), 3)
        write_json(self.path, self.data)

    def skip(self, name: str, reason: str) -> None:
        self.data["stages"][name] = {"status": "skipped", "reason": reason}
        self.write()

    def stage(self, name: str, fn: Callable[[], dict]) -> bool:
        """Run `fn` (returns the stage's figures) unless the budget is spent; True on success."""
        if self.elapsed() > self.budget_s:
            self.skip(name, f"time budget of {self.budget_s:g} s spent")
            return False
        self.data["stages"][name] = {"status": "running"}
        self.write()
        _reset_peak(self.device)
        start = time.perf_counter()
        try:
            figures = fn()
            record = {"status": "ok", **figures}
        except Exception as exc:  # recorded: the next stage still runs
            lines = traceback.format_exception(exc)
            record = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:2000]}
            record["traceback"] = "".join(lines)[-4000:]
        record["seconds"] = round(time.perf_counter() - start, 3)
        record |= _memory(self.device)
        gc.collect()
        _empty_cache(self.device)
        self.data["stages"][name] = record
        self.write()
        print(f"{name}: {record['status']} in {record['seconds']:.1f} s", file=sys.stderr)
        return record["status"] == "ok"


def _reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)


def _empty_cache(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def _memory(device: str) -> dict:
    import resource

    import torch

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux
    if not device.startswith("cuda"):
        return {"peak_memory_gb": None, "process_peak_rss_gb": round(rss, 3)}
    return {
        "peak_memory_gb": round(torch.cuda.max_memory_allocated(device) / 1e9, 3),
        "peak_reserved_gb": round(torch.cuda.max_memory_reserved(device) / 1e9, 3),
        "process_peak_rss_gb": round(rss, 3),
    }


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _timed(device: str, fn: Callable[[], object]) -> tuple[float, object]:
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - start, out


def _autocast(device: str):
    import torch

    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------
# System 1


def build_thinker(key: str, scale: Scale, tokenizer, device: str, dtype: str, attn: str):
    """The thinker of `key` with random weights, created on `device` in `dtype`: under a
    torch.device context every parameter is allocated (and initialised) there, so the 7B never
    exists on the CPU."""
    import torch
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    from omnir1.models import presets, tiny

    if scale.smoke:
        sizes = tiny.TinySizes(layers=scale.thinker_layers[key])
        config = tiny.thinker_config(tokenizer, sizes)
    else:
        config = presets.thinker_config(PRESETS[key], tokenizer)
    with torch.device(device):
        model = Qwen2_5OmniThinkerForConditionalGeneration._from_config(
            config, dtype=getattr(torch, dtype), attn_implementation=attn
        )
    tiny.generation_ids(model, tokenizer)
    return model.eval()


def synthetic_clip(scale: Scale, seed: int):
    """System 1's view of a video at the scale's budget: max_frames frames at fps, each at the
    size `sample_frames` gives a `native` video, and `audio_s` of audio (noise: the compute does
    not depend on what the pixels show)."""
    from omnir1.media.video import smart_resize
    from omnir1.systems.reasoning import VideoClip

    s1, rng = scale.system1, np.random.default_rng(seed)
    h, w = smart_resize(*scale.native, max_pixels=s1.max_pixels)
    count = s1.max_frames
    times = np.arange(count) / s1.fps
    audio = 0.1 * rng.standard_normal(int(scale.audio_s * SAMPLE_RATE))
    return VideoClip(
        frames=rng.integers(0, 256, (count, h, w, 3), dtype=np.uint8),
        times=times,
        source_indices=np.arange(count),
        native_size=scale.native,
        audio=audio.astype(np.float32),
        duration_s=float(count / s1.fps),
    )


def repeat_rows(inputs: dict, rows: int) -> dict:
    """A one-row prompt as `rows` rows, as the trainer batches a group (each row carries its own
    copy of the video and audio: `VideoGRPOTrainer._video_fields`)."""
    import torch

    out = {}
    for key, value in inputs.items():
        if key in ("input_ids", "attention_mask"):
            out[key] = value.repeat(rows, 1)
        else:
            out[key] = torch.cat([value] * rows)
    return out


def _to(inputs: dict, device: str) -> dict:
    return {k: v.to(device) for k, v in inputs.items()}


def _count(module, trainable: bool | None = None) -> int:
    return sum(
        p.numel() for p in module.parameters() if trainable is None or p.requires_grad == trainable
    )


class ThinkerBench:
    """The stages of one thinker on one release prompt; each method returns its figures."""

    def __init__(self, key: str, scale: Scale, args, tokenizer, processor):
        self.key, self.scale, self.args = key, scale, args
        self.tokenizer, self.processor = tokenizer, processor
        self.device, self.g = args.device, scale.train.num_generations
        self.model = self.reasoner = self.inputs = self.completions = self.prefill_s = None
        self.clip = synthetic_clip(scale, args.seed)
        self.audio_in_video = False

    def build(self) -> dict:
        from omnir1.systems.reasoning import GlobalReasoner

        args = self.args

        def build():
            return build_thinker(
                self.key, self.scale, self.tokenizer, self.device, args.dtype, args.attn
            )

        seconds, m = _timed(self.device, build)
        self.model = m
        self.reasoner = GlobalReasoner(m, self.processor, self.scale.system1)
        self.audio_in_video = self.reasoner.audio_in_video(self.clip)
        tied = m.lm_head.weight is m.model.language_model.embed_tokens.weight
        return {
            "preset": "smoke" if self.scale.smoke else PRESETS[self.key],
            "dtype": args.dtype,
            "attn_implementation": args.attn,
            "build_s": round(seconds, 3),
            "parameters": _count(m),
            "language_model": _count(m.model.language_model),
            "vision": _count(m.model.visual),
            "audio": _count(m.model.audio_tower),
            "lm_head": 0 if tied else _count(m.lm_head),  # tied: the embedding's weights
        }

    def prompt(self) -> dict:
        """The prompt the trainer makes of a sample (`LazyPrompts` -> `GlobalReasoner.inputs`)."""
        rng = random.Random(self.args.seed)
        seconds, inputs = _timed("cpu", lambda: self.reasoner.inputs(self.clip, EXPRESSION, rng))
        self.inputs = dict(inputs)
        ids = self.inputs["input_ids"][0]
        tok = self.processor.tokenizer
        video = int((ids == tok.convert_tokens_to_ids("<|VIDEO|>")).sum())
        audio = int((ids == tok.convert_tokens_to_ids("<|AUDIO|>")).sum())
        return {
            "prompt_tokens": len(ids),
            "video_tokens": video,
            "audio_tokens": audio,
            "text_tokens": len(ids) - video - audio,
            "frames": self.clip.num_frames,
            "frame_size": list(self.clip.frames.shape[1:3]),
            "audio_s": self.scale.audio_s,
            "audio_in_video": self.audio_in_video,
            "processor_s": round(seconds, 3),
            "note": "text tokens from the project's tiny BPE tokenizer (Qwen's differs); the "
            "video and audio token counts are the processor's",
        }

    def prefill(self) -> dict:
        import torch

        batch = _to(repeat_rows(self.inputs, self.g), self.device)

        def forward():
            with torch.no_grad():
                out = self.model(**batch, use_cache=True, use_audio_in_video=self.audio_in_video)
            del out

        from omnir1.rl.encode_once import encode_each_input_once

        first, _ = _timed(self.device, forward)
        every_row_s, _ = _timed(self.device, forward)
        # as the trainer runs it (VideoGRPOTrainer): the prompt's media encoded once for G rows
        encode_each_input_once(self.model)
        self.prefill_s, _ = _timed(self.device, forward)
        tokens = batch["input_ids"].numel()
        return {
            "rows": self.g,
            "tokens_per_row": batch["input_ids"].shape[1],
            "tokens": tokens,
            "first_s": round(first, 4),
            "prefill_every_row_s": round(every_row_s, 4),
            "prefill_s": round(self.prefill_s, 4),
            "encode_once_ratio": round(every_row_s / self.prefill_s, 3),
            "tokens_per_s": round(tokens / self.prefill_s, 1),
            "note": "the whole forward (vision and audio towers, full logits) of G rows of one "
            "prompt: generation's first step and a log-prob forward; the towers on each row's "
            "copy (every_row), then once for all (omnir1.rl.encode_once, as the trainer runs)",
        }

    def rollout(self) -> dict:
        """G sampled completions of exactly max_completion_length tokens, one generate call
        (the prompt expanded to G rows, as `GlobalReasoner.sample_batch`)."""
        import torch

        g, n, train = self.g, self.scale.train.max_completion_length, self.scale.train
        inputs = _to(self.inputs, self.device)
        torch.manual_seed(self.args.seed)

        def generate():
            with torch.no_grad():
                return self.model.generate(
                    **inputs,
                    use_audio_in_video=self.audio_in_video,
                    max_new_tokens=n,
                    min_new_tokens=n,  # random weights would stop anywhere: always n tokens
                    do_sample=True,
                    temperature=train.temperature,
                    top_p=train.top_p,
                    num_return_sequences=g,
                    suppress_tokens=self.reasoner.suppress_tokens,
                )

        seconds, out = _timed(self.device, generate)
        self.completions = out[:, inputs["input_ids"].shape[1] :].cpu()
        if self.completions.shape != (g, n):
            raise RuntimeError(f"generated {tuple(self.completions.shape)}, wanted {(g, n)}")
        generated = self.completions.numel()
        figures = {
            "generations": g,
            "new_tokens": n,
            "generated_tokens": generated,
            "generate_s": round(seconds, 3),
            "tokens_per_s": round(generated / seconds, 1),
            "attn_implementation": self.args.attn,
        }
        if self.prefill_s is not None and n > 1:
            step = (seconds - self.prefill_s) / (n - 1)
            figures["decode_ms_per_step"] = round(1000 * step, 2)
        return figures

    def grounder(self) -> dict:
        return grounder_figures(self.model, self.processor, self.scale, self.args)

    def grpo(self) -> dict:
        return grpo_figures(self, self.key, self.scale, self.args)


def thinker_stages(report: Report, key: str, scale: Scale, args, tokenizer, processor) -> None:
    """Every selected stage of one thinker, in order (the prompt whenever a later stage needs
    it); the model is dropped at the end."""
    wanted = [s for s in STAGES[:-1] if s in args.stages]
    if {"prefill", "rollout", "grpo"} & set(wanted) and "prompt" not in wanted:
        wanted.insert(0, "prompt")
    bench = ThinkerBench(key, scale, args, tokenizer, processor)
    if not report.stage(f"{key}/build", bench.build):
        for name in wanted:
            report.skip(f"{key}/{name}", "the thinker did not build")
        return
    for name in wanted:
        if name in ("prefill", "rollout", "grpo") and bench.inputs is None:
            report.skip(f"{key}/{name}", "needs the prompt, which failed")
            continue
        report.stage(f"{key}/{name}", getattr(bench, name))
    bench.model = bench.reasoner = None  # the caller collects


def grounder_figures(model, processor, scale: Scale, args) -> dict:
    """A GRPO group's grounding requests (distinct keyframes x descriptions) through System 2's
    grounder, each answer forced to max_new_tokens (random weights answer no boxes: the time of
    a full-length answer, an upper bound on a box answer's)."""
    from omnir1.media.video import smart_resize
    from omnir1.systems.grounding import Grounder, GroundingRequest

    cfg, rng = scale.grounder, np.random.default_rng(args.seed)
    images = rng.integers(0, 256, (scale.grounder_frames, *scale.native, 3), dtype=np.uint8)
    requests = [
        GroundingRequest(key=f, image=images[f], description=f"object {d} in frame {f}")
        for f in range(scale.grounder_frames)
        for d in range(scale.grounder_descriptions)
    ]
    grounder = Grounder(model, processor, cfg)
    default = model.generation_config.min_new_tokens
    model.generation_config.min_new_tokens = cfg.max_new_tokens  # generate's default for a call
    try:
        warm, _ = _timed(args.device, lambda: grounder.ground(requests[:1]))
        seconds, results = _timed(args.device, lambda: grounder.ground(requests))
    finally:
        model.generation_config.min_new_tokens = default
    shown = smart_resize(*scale.native, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels)
    return {
        "requests": len(requests),
        "distinct_frames": scale.grounder_frames,
        "batch_size": cfg.batch_size,
        "image_size": list(shown),
        "image_tokens": shown[0] * shown[1] // (28 * 28),
        "new_tokens": cfg.max_new_tokens,
        "warmup_s": round(warm, 3),
        "ground_s": round(seconds, 3),
        "answers": len(results),
        "boxes_per_s": round(len(requests) / seconds, 2),
        "note": "one box per request (the release answer format), every answer forced to "
        "max_new_tokens",
    }


# ---------------------------------------------------------------------------------------------
# GRPO


def grpo_loss(logps, ref_logps, advantages, mask, beta: float, epsilon: float = 0.2):
    """TRL 1.16's `loss_type="grpo"` at one optimisation step per generation batch (old
    log-probs = the current ones, detached): clipped ratio times the advantage plus beta times
    the k3 KL to the reference, averaged over each completion's tokens, then over completions."""
    import torch

    ratio = torch.exp(logps - logps.detach())
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon)
    adv = advantages.unsqueeze(1)
    per_token = -torch.min(ratio * adv, clipped * adv)
    delta = ref_logps - logps
    per_token = per_token + beta * (torch.exp(delta) - delta - 1)
    return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()


def completion_logps(model, batch: dict, n: int, fused: bool, audio_in_video: bool):
    """Log-probs of the last `n` tokens of each row: TRL's fused LM head (the trainer's path,
    `VideoGRPOTrainer._get_per_token_logps_and_entropies`) or, without it, the backbone and a
    log-softmax over the completion positions only."""
    import torch

    ids, mask = batch["input_ids"], batch["attention_mask"]
    fields = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
    if fused:
        labels = ids.masked_fill(mask == 0, -100)
        labels[:, :-n] = -100
        out = model(
            input_ids=ids,
            attention_mask=mask,
            labels=labels,
            fused_lm_head=True,
            use_audio_in_video=audio_in_video,
            **fields,
        )
        return out.log_probs[:, -n:]
    out = model.model(
        input_ids=ids,
        attention_mask=mask,
        use_cache=False,
        use_audio_in_video=audio_in_video,
        **fields,
    )
    logits = model.lm_head(out.last_hidden_state[:, -n - 1 : -1]).float()
    return torch.log_softmax(logits, -1).gather(-1, ids[:, -n:, None]).squeeze(-1)


def make_optimizer(name: str, params: list, lr: float, weight_decay: float, on_cuda: bool):
    import torch

    if name == "adamw_fused":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=on_cuda)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)
    if name == "adafactor":
        return torch.optim.Adafactor(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}: adamw_fused, adamw, adafactor or sgd")


def _fused_head(model, temperature: float) -> str | None:
    """Patch TRL's fused LM head onto `model` as the trainer does; None when TRL is missing."""
    try:
        from trl.trainer.utils import add_fused_lm_head
    except ImportError as exc:
        return f"{type(exc).__name__}: {exc}"
    add_fused_lm_head(model, temperature=temperature, outputs=("log_probs", "entropy"))
    return None


def _gb(tensors) -> float:
    return round(sum(t.numel() * t.element_size() for t in tensors) / 1e9, 3)


def prepare_training(model, args, key: str, lr: float, weight_decay: float, temperature: float):
    """The policy as the trainer trains it: towers frozen, the language model's weights as
    `args.master_dtype` masters (the trainer's float32: AdamW's steps at lr 1e-6 vanish in
    bf16), activation checkpointing, TRL's fused LM head; returns (trainable parameters,
    optimiser, why the fused head is off or None)."""
    import torch

    from omnir1.models.loading import freeze_towers

    freeze_towers(model)
    model.model.language_model.to(getattr(torch, args.master_dtype))
    model.lm_head.to(getattr(torch, args.master_dtype))
    if args.checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
    model.train()
    fused_off = _fused_head(model, temperature) if args.logprobs == "fused" else "--logprobs plain"
    params = [p for p in model.parameters() if p.requires_grad]
    name = args.optim.get(key, OPTIMIZERS[key])
    on_cuda = args.device.startswith("cuda")
    return params, make_optimizer(name, params, lr, weight_decay, on_cuda), fused_off


def grpo_batch(bench: ThinkerBench, seed: int) -> dict:
    """The G rows of the loss: the prompt (each row with its own copy of the video and audio,
    as the trainer's) followed by the rollout's completions, or random tokens of the same
    shape when the rollout did not run."""
    import torch

    g, n = bench.g, bench.scale.train.max_completion_length
    completions = bench.completions
    if completions is None:
        gen = torch.Generator().manual_seed(seed)
        completions = torch.randint(0, len(bench.tokenizer), (g, n), generator=gen)
    batch = repeat_rows(bench.inputs, g)
    batch["input_ids"] = torch.cat([batch["input_ids"], completions], 1)
    ones = torch.ones_like(completions)
    batch["attention_mask"] = torch.cat([batch["attention_mask"], ones], 1)
    return _to(batch, bench.device)


def grpo_figures(bench: ThinkerBench, key: str, scale: Scale, args) -> dict:
    """`args.grpo_steps` GRPO steps on the rollout's G completions (`prepare_training`), under
    bf16 autocast on a GPU; the reference log-probs come from a no-grad forward of the same
    weights (equal to the reference's before the first update; a separate bf16 copy would add
    its weights). Out of memory, the rows are split into micro-batches (halved until they
    fit); if TRL's fused head fails (its Triton kernels need a C compiler at first use), the
    steps go on with a plain log-softmax and the error is recorded."""
    import torch

    train, device = scale.train, args.device
    g, n = train.num_generations, train.max_completion_length
    params, opt, fused_off = prepare_training(
        bench.model, args, key, train.learning_rate, train.weight_decay, train.temperature
    )
    rewards = torch.rand(g, generator=torch.Generator().manual_seed(args.seed))
    ctx = SimpleNamespace(
        model=bench.model,
        opt=opt,
        params=params,
        batch=grpo_batch(bench, args.seed),
        rows_of=_row_slicer(g),
        n=n,
        beta=train.beta,
        advantages=((rewards - rewards.mean()) / (rewards.std() + 1e-4)).to(device),
        mask=torch.ones(g, n, device=device),
        fused=fused_off is None,
        audio_in_video=bench.audio_in_video,
        device=device,
    )
    probe = params[len(params) // 2]
    before = probe.detach().flatten()[:4096].clone()
    micro, retries, steps = g, [], []
    while len(steps) < args.grpo_steps:
        try:
            steps.append(_grpo_step(ctx, micro))
            continue
        except torch.OutOfMemoryError:
            if micro == 1:
                raise
            retries.append(micro)
            micro //= 2
        except Exception as exc:
            if not ctx.fused or steps:
                raise
            ctx.fused, fused_off = False, f"failed: {type(exc).__name__}: {exc}"[:1000]
        # out of the handler: the failed step's tensors are no longer held by its traceback
        opt.zero_grad(set_to_none=True)
        gc.collect()
        _empty_cache(device)
    after = probe.detach().flatten()[:4096]
    state = [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t)]
    return {
        "optimizer": args.optim.get(key, OPTIMIZERS[key]),
        "learning_rate": train.learning_rate,
        "master_dtype": args.master_dtype,
        "trainable_parameters": sum(p.numel() for p in params),
        "frozen_parameters": _count(bench.model, trainable=False),
        "activation_checkpointing": args.checkpointing,
        "logprobs": "trl fused_lm_head" if ctx.fused else f"plain log-softmax ({fused_off})",
        "rows": g,
        "tokens_per_row": ctx.batch["input_ids"].shape[1],
        "completion_tokens": n,
        "micro_batch": micro,
        "out_of_memory_at_micro_batch": retries,
        "weights_gb": _gb(bench.model.parameters()),
        "gradients_gb": _gb(params),  # one gradient of each trainable weight's size and dtype
        "optimizer_state_gb": _gb(state),
        "steps": steps,
        "step_s": [s["step_s"] for s in steps],
        "weights_changed": bool((after != before).any()),
        "reference": "a no-grad forward of the policy's weights (the reference before any "
        "update); a separate bf16 reference model would add its weights",
    }


def _row_slicer(g: int) -> Callable[[dict, int, int], dict]:
    """Rows [a, b) of a G-row batch built by `repeat_rows`: per-row tensors by row, the video
    and audio fields by their share of rows (each row holds the same number of them)."""

    def rows(batch: dict, a: int, b: int) -> dict:
        out = {}
        for k, v in batch.items():
            per_row = v.shape[0] // g if k not in ("input_ids", "attention_mask") else 1
            out[k] = v[a * per_row : b * per_row]
        return out

    return rows


def _grpo_step(ctx, micro: int) -> dict:
    """One optimisation step on the G rows, `micro` rows per forward (gradients accumulated)."""
    import torch

    g, device = ctx.advantages.shape[0], ctx.device
    chunks = [(a, min(a + micro, g)) for a in range(0, g, micro)]

    def logps(a: int, b: int):
        rows = ctx.rows_of(ctx.batch, a, b)
        return completion_logps(ctx.model, rows, ctx.n, ctx.fused, ctx.audio_in_video)

    _sync(device)
    start = time.perf_counter()
    with torch.no_grad(), _autocast(device):
        ref = torch.cat([logps(a, b) for a, b in chunks])
    _sync(device)
    ref_s = time.perf_counter() - start
    loss_sum = 0.0
    for a, b in chunks:
        with _autocast(device):
            loss = grpo_loss(logps(a, b), ref[a:b], ctx.advantages[a:b], ctx.mask[a:b], ctx.beta)
            loss = loss * (b - a) / g  # the mean over all G completions
        loss.backward()
        loss_sum += float(loss.detach())
    _sync(device)
    backward_s = time.perf_counter() - start - ref_s
    torch.nn.utils.clip_grad_norm_(ctx.params, 1.0)
    ctx.opt.step()
    ctx.opt.zero_grad(set_to_none=True)
    _sync(device)
    total = time.perf_counter() - start
    if not np.isfinite(loss_sum):
        raise RuntimeError(f"GRPO loss is {loss_sum}")
    return {
        "step_s": round(total, 3),
        "reference_s": round(ref_s, 3),
        "forward_backward_s": round(backward_s, 3),
        "optimizer_s": round(total - ref_s - backward_s, 3),
        "loss": loss_sum,
    }


# ---------------------------------------------------------------------------------------------
# SAM2


def sam2_stages(report: Report, scale: Scale, args) -> None:
    """SAM2.1 at its own size tracking 1, 8 and 32 objects through one synthetic video, each
    object from its own keyframe (spread over 4 keyframes, as a GRPO group's boxes are)."""
    from omnir1.systems.segmentation import SAM2Frames

    st = SimpleNamespace(predictor=None, frames=None)
    device = args.device

    def build() -> dict:
        from omnir1.models import presets, tiny

        def make():
            if scale.sam2 == "tiny":
                return tiny.build_sam2(scale.sam2_size, device=device)
            return presets.build_sam2(scale.sam2, device=device)

        seconds, st.predictor = _timed(device, make)
        rng = np.random.default_rng(args.seed)
        video = rng.integers(0, 256, (scale.sam2_frames, *scale.native, 3), dtype=np.uint8)
        prep, st.frames = _timed("cpu", lambda: SAM2Frames(video, st.predictor.image_size))
        warm, _ = _timed(device, lambda: _track(st, 1, scale, args.seed))
        return {
            "model": scale.sam2,
            "image_size": st.predictor.image_size,
            "parameters": _count(st.predictor),
            "build_s": round(seconds, 3),
            "frames": scale.sam2_frames,
            "video_size": list(scale.native),
            "frames_prep_s": round(prep, 3),
            "warmup_s": round(warm, 3),
        }

    def objects(count: int) -> Callable[[], dict]:
        def run() -> dict:
            seconds, masks = _timed(device, lambda: _track(st, count, scale, args.seed))
            expected = count * scale.sam2_frames
            if masks != expected:
                raise RuntimeError(f"{masks} masks, expected {expected}")
            return {
                "objects": count,
                "frames": scale.sam2_frames,
                "masks": masks,
                "segment_s": round(seconds, 3),
                "masks_per_s": round(masks / seconds, 2),
            }

        return run

    if not report.stage("sam2/build", build):
        for count in scale.sam2_objects:
            report.skip(f"sam2/{count}", "SAM2 did not build")
        return
    try:
        for count in scale.sam2_objects:
            report.stage(f"sam2/{count}", objects(count))
    finally:
        st.frames.close()


def _track(st, count: int, scale: Scale, seed: int) -> int:
    from omnir1.systems.segmentation import BoxPrompt, segment

    h, w = scale.native
    frames = scale.sam2_frames
    keyframes = [k * frames // 4 for k in range(4)]
    rng = np.random.default_rng(seed + count)
    prompts = []
    for i in range(count):
        x0, y0 = rng.uniform(0, 0.5) * w, rng.uniform(0, 0.5) * h
        bw, bh = rng.uniform(0.1, 0.45) * w, rng.uniform(0.1, 0.45) * h
        box = (float(x0), float(y0), float(x0 + bw), float(y0 + bh))
        prompts.append(BoxPrompt(obj=i, frame=keyframes[i % 4], box=box))
    masks = 0
    # features=None: the image encoder in every figure (the shared store would hold these
    # frames from the warm-up track and leave it out)
    for _, part in segment(st.predictor, st.frames, prompts, features=None):
        masks += len(part)
    return masks


# ---------------------------------------------------------------------------------------------
# the run


def _versions(device: str) -> dict:
    import importlib.metadata as md

    import torch

    info: dict = {}
    for name in ("torch", "transformers", "trl", "sam2", "flash-attn"):
        try:
            info[name] = md.version(name)
        except md.PackageNotFoundError:
            info[name] = None
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        info["card"] = props.name
        info["card_memory_gb"] = round(props.total_memory / 1e9, 1)
        info["cuda"] = torch.version.cuda
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        info["git_revision"] = rev.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git_revision"] = None
    return info


def run(args) -> dict:
    """Every selected stage; returns the report's data (also written to `args.out`)."""
    import torch

    from omnir1.models.tiny import TinySizes, build_processor, build_tokenizer

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: use --device cpu (with --smoke)")
    torch.manual_seed(args.seed)
    scale = smoke_scale() if args.smoke else release_scale()
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "smoke": scale.smoke,
        "device": args.device,
        **_versions(args.device),
        "sizes": {
            "frames": scale.system1.max_frames,
            "frame_max_pixels": scale.system1.max_pixels,
            "audio_s": scale.audio_s,
            "generations": scale.train.num_generations,
            "completion_tokens": scale.train.max_completion_length,
            "grounder_max_pixels": scale.grounder.max_pixels,
            "grounder_new_tokens": scale.grounder.max_new_tokens,
            "sam2": scale.sam2,
            "sam2_frames": scale.sam2_frames,
            "sam2_objects": list(scale.sam2_objects),
        },
        "optimizers": {key: args.optim.get(key, OPTIMIZERS[key]) for key in args.models},
    }
    report = Report(args.out, meta, args.budget_s, args.device)
    if "sam2" in args.stages:  # cheap and independent of the thinkers: first
        sam2_stages(report, scale, args)
        gc.collect()
        _empty_cache(args.device)
    if set(args.stages) & set(STAGES[:-1]):
        tokenizer = build_tokenizer(TinySizes())  # ids inside both real vocabularies
        processor = build_processor(tokenizer)
        for key in args.models:
            thinker_stages(report, key, scale, args, tokenizer, processor)
            gc.collect()
            _empty_cache(args.device)
    report.data["finished"] = True
    report.write()
    return report.data


def _list(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [s.strip() for s in text.split(",") if s.strip()]
        unknown = sorted(set(items) - set(choices))
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {list(choices)}")
        return items

    return parse


def _optim(text: str) -> dict[str, str]:
    """`7b=adamw,3b=sgd` -> {"7b": "adamw", "3b": "sgd"}."""
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, _, name = item.partition("=")
        if key not in PRESETS or name not in ("adamw_fused", "adamw", "adafactor", "sgd"):
            raise argparse.ArgumentTypeError(f"bad optimizer choice {item!r}")
        out[key] = name
    return out


def parse_args(argv: list[str] | None = None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("reports/gpu_scale.json"))
    ap.add_argument("--models", type=_list(tuple(PRESETS)), default=list(PRESETS))
    ap.add_argument("--stages", type=_list(STAGES), default=list(STAGES))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--smoke", action="store_true", help="toy sizes (CPU, well under a minute)")
    ap.add_argument("--budget-s", type=float, default=480.0, help="later stages are skipped")
    ap.add_argument("--dtype", default=None, help="of the built thinkers (cuda: bfloat16)")
    ap.add_argument("--attn", default="sdpa", help="attn_implementation (params: sdpa)")
    ap.add_argument("--master-dtype", default="float32", help="trained weights (trainer: fp32)")
    ap.add_argument(
        "--optim",
        type=_optim,
        default={},
        help="per model, e.g. 7b=adamw (defaults: 3b=adamw_fused, 7b=adafactor)",
    )
    ap.add_argument("--logprobs", choices=("fused", "plain"), default="fused")
    ap.add_argument("--no-checkpointing", dest="checkpointing", action="store_false")
    ap.add_argument("--grpo-steps", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.dtype is None:  # bf16 on a GPU; CPU kernels are float32's
        args.dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    return args


def main(argv: list[str] | None = None) -> int:
    data = run(parse_args(argv))
    failed = [name for name, s in data["stages"].items() if s["status"] == "error"]
    print(f"wrote {data['elapsed_s']:.0f} s of figures; failed stages: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
