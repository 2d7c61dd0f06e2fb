"""docs/design.md §7's prototype task through the project's own System 1 path, to bisect why the
synthetic sets' warm starts do not jump: 8 frames of 28x28 px at 2 fps, a target square in a
contiguous run of 2-5 frames and a distractor of another colour elsewhere; every example freshly
drawn. The same tiny thinker, processor, prompt, answer format and warm-start loop as
`omnir1 warm-start`; held-out hit rate of the greedy answer every N steps.

    OMP_NUM_THREADS=1 python research/scripts/system1_prototype.py [--colours red] [--audio]
        [--query-first] [--audio-first] [--native 180 320] [--run-lengths 2 5]
        [--examples 4000] [--steps 800] [--every 100] [--seed 0]
        [--results research/results/system1_results.jsonl]

--colours: the target's possible colours, named in the expression ("the red square"); one
colour needs no binding of words to what is seen. --audio: 4 s of faint noise as the audio track
(its ~100 tokens sit between the frames and the answer). --query-first / --audio-first: the
expression / the audio before the frames in the user turn. --native 180 320: the synthetic
sets' shapes and sizes drawn on 320x180 frames, squeezed to 28x28 as theirs are.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np

FRAMES = 8


def prototype_clip(
    rng: np.random.Generator,
    colours: list[str],
    size: int,
    audio: bool,
    native: tuple[int, int] | None = None,
    run_lengths: tuple[int, int] = (2, 5),
):
    """(VideoClip, "the red square", the frames showing the target): the target in a run of
    2-5 (`run_lengths`) consecutive frames, a distractor square of another colour on 1-4 of the
    others.
    `native` (height, width): instead, synthetic-set shapes (circle, square, triangle; small or
    large at object scale 1.75) drawn at that size and resized to System 1's as a set's frames
    are (a 16:9 frame is squeezed into 28x28 px)."""
    from omnir1.data.synth.scene import COLORS, SEEN_SHAPES, SIZES, _shape_mask
    from omnir1.media.video import resize
    from omnir1.systems.reasoning import VideoClip

    h, w = native or (size, size)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    across, down = xx / w, yy / h
    background = np.stack([120 + 80 * across, 120 + 80 * down, np.full_like(xx, 140)], -1)
    frames = np.repeat(background[None], FRAMES, 0)
    target = colours[int(rng.integers(len(colours)))]
    distractor = str(rng.choice([c for c in COLORS if c != target]))
    shape = str(rng.choice(SEEN_SHAPES)) if native else "square"
    length = int(rng.integers(run_lengths[0], run_lengths[1] + 1))
    start = int(rng.integers(0, FRAMES - length + 1))
    shown = list(range(start, start + length))
    others = [f for f in range(FRAMES) if f not in shown]
    with_distractor = rng.choice(others, int(rng.integers(1, min(4, len(others)) + 1)), False)
    side = size // 3
    for frame, colour in [(f, target) for f in shown] + [(f, distractor) for f in with_distractor]:
        if native:
            r = SIZES[str(rng.choice(list(SIZES)))] * 1.75 * min(h, w)
            cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
            drawn = shape if colour == target else str(rng.choice(SEEN_SHAPES))
            frames[frame][_shape_mask(drawn, cx, cy, r, xx, yy)] = COLORS[colour]
        else:
            y, x = rng.integers(0, size - side, 2)
            frames[frame, y : y + side, x : x + side] = COLORS[colour]
    frames = np.stack([resize(f, (size, size)) for f in frames.astype(np.uint8)])
    track = (0.01 * rng.standard_normal(16_000 * FRAMES // 2)).astype(np.float32) if audio else None
    clip = VideoClip(
        frames=frames,
        times=np.arange(FRAMES) * 0.5,
        source_indices=np.arange(FRAMES),
        native_size=(h, w),
        audio=track,
        duration_s=FRAMES / 2,
    )
    return clip, f"the {target} {shape}", shown


def reordered(messages: list[dict], first: str) -> list[dict]:
    """The user turn with its items of type `first` ("text": the task, "audio") moved first."""
    user = messages[1]["content"]
    moved = [c for c in user if c["type"] == first]
    if first == "text":  # the task, not the frames' time stamps
        moved = user[-1:]
    rest = [c for c in user if not any(c is m for m in moved)]
    return [messages[0], {**messages[1], "content": moved + rest}]


def main() -> None:
    import torch
    from system1_frames import measure_every  # bench/ is the script's own folder

    from omnir1.config import FinetuneParams
    from omnir1.experimental.params import load_study_params
    from omnir1.models.loading import freeze_towers, load_models
    from omnir1.models.tiny import init_tiny
    from omnir1.rl import warmstart as ws
    from omnir1.systems.parsing import parse_answer
    from omnir1.systems.reasoning import GlobalReasoner

    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--bs", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--examples", type=int, default=4000)
    ap.add_argument("--heldout", type=int, default=64)
    ap.add_argument("--colours", nargs="+", default=["red"])
    ap.add_argument("--audio", action="store_true")
    ap.add_argument("--query-first", action="store_true")
    ap.add_argument("--audio-first", action="store_true")
    ap.add_argument("--native", type=int, nargs=2, metavar=("H", "W"), help="e.g. 180 320")
    ap.add_argument("--run-lengths", type=int, nargs=2, default=[2, 5], metavar=("MIN", "MAX"))
    ap.add_argument("--results", default="research/results/system1_results.jsonl")
    ap.add_argument("--tag", default="prototype")
    a = ap.parse_args()
    torch.set_num_threads(1)

    params = load_study_params("params.yaml")
    params.system1.frames, params.system1.prompt = "images", "compact"
    sizes = params.models.tiny.sizes()
    base = Path(f"/tmp/system1_frames/seed{a.seed}_h{sizes.hidden}_l{sizes.layers}")
    if not (base / "models.json").is_file():
        init_tiny(base, seed=a.seed, sizes=sizes)
    models = load_models(base, system2=False)
    reasoner = GlobalReasoner(models.system1, models.system1_processor, params.system1)
    messages = reasoner.messages
    for first, wanted in (("text", a.query_first), ("audio", a.audio_first)):
        if wanted:
            messages = (lambda inner, f: lambda *x: reordered(inner(*x), f))(messages, first)
    reasoner.messages = messages
    tok = models.system1_processor.tokenizer

    def draw(rng: np.random.Generator):
        return prototype_clip(rng, a.colours, 28, a.audio, a.native, tuple(a.run_lengths))

    start = time.perf_counter()
    rng = np.random.default_rng(a.seed)
    examples, counts = [], np.zeros(FRAMES)
    for i in range(a.examples):
        clip, expression, shown = draw(rng)
        counts[shown] += 1
        examples.append(
            ws._system1_example(reasoner, clip, expression, shown, expression, random.Random(i))
        )
    held_rng = np.random.default_rng([a.seed, 10_000])
    held = [draw(held_rng) for _ in range(a.heldout)]
    fixed = sorted(np.argsort(-counts, kind="stable")[: reasoner.cfg.moments].tolist())
    fixed_hit = float(np.mean([np.mean([f in shown for f in fixed]) for _, _, shown in held]))
    print(f"{len(examples)} examples; fixed answer {fixed} hit rate {fixed_hit:.3f}", flush=True)

    def hit_rate() -> tuple[float, float]:
        keyframes = hits = 0
        for clip, expression, shown in held:
            prompt = reasoner.chat_prompt(reasoner.messages(clip, expression, random.Random(0)))
            (text,) = reasoner.generate_greedy(clip, [prompt])
            frames = parse_answer(text, FRAMES).keyframes
            keyframes += len(frames)
            hits += sum(f in shown for f in frames)
        return hits / max(keyframes, 1), hits / len(held)

    curve = measure_every(models.system1, a.every, hit_rate)
    freeze_towers(models.system1, vision=False)
    cfg = FinetuneParams(steps=a.steps, batch_size=a.bs, learning_rate=a.lr)
    losses = ws.finetune(models.system1, examples, cfg, tok.pad_token_id, seed=a.seed)
    result = {
        "tag": a.tag,
        **{k: v for k, v in vars(a).items() if k not in ("results", "tag")},
        "fixed_hit": round(fixed_hit, 3),
        "curve": curve,
        "final_loss": round(float(np.mean(losses[-20:])), 4),
        "seconds": round(time.perf_counter() - start),
    }
    print(json.dumps(result), flush=True)
    with Path(a.results).open("a") as fh:
        fh.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
