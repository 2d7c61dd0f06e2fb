"""Does the tiny System 1 learn to use the frames? Its supervised warm start (the warm start's
own code and examples), with the held-out keyframe hit rate every N steps, against the
ignore-the-video answer (the four frames most often showing the target in training) and the
read-the-words answer (the same, per expression template: omnir1.experimental.assess).

    OMP_NUM_THREADS=1 python research/scripts/system1_frames.py --data DIR [--steps 1200]
        [--every 200] [--lr 1e-3] [--bs 8] [--seed 0] [--limit 24] [--max-frames N]
        [--frames images]
        [--prompt compact] [--train-vision] [--no-audio] [--audio-first] [--appearance-only]
        [--word red [blue ...]] [--rendered N] [--moments K] [--hidden 256 --layers 6]
        [--init MODELS] [--save MODELS]
        [--results research/results/system1_results.jsonl]

Held-out: the first `--limit` expressions of the `valid` split, 2 sampled answers each (as
`omnir1 study` assesses); hit rate = keyframes on which the target is visible / keyframes.
Curve rows: [step, hit rate, well-formed rate, hits per answer] (the baselines name four
keyframes: compare hits per answer with 4 x their rate).
Nothing is tuned on them: they are only scored. Models are the embedded default's tiny ones
(params.yaml), built under /tmp/system1_frames/ once per seed.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def measure_every(model, every: int, measure) -> list[list[float]]:
    """Every `every` AdamW steps, [step, *measure()] (rounded) with `model` in eval mode: the
    curve of a training loop that is not ours to change (torch.optim.AdamW.step is wrapped)."""
    import torch

    curve: list[list[float]] = []
    step = torch.optim.AdamW.step
    calls = {"n": 0}

    def step_and_measure(opt, *args, **kwargs):
        out = step(opt, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] % every == 0:
            model.eval()
            with torch.no_grad():
                curve.append([calls["n"], *(round(v, 3) for v in measure())])
            print("curve", curve[-1], flush=True)
            model.train()
        return out

    torch.optim.AdamW.step = step_and_measure
    return curve


def main() -> None:
    import torch

    from omnir1.config import FinetuneParams
    from omnir1.data.synth.expressions import expression_kind
    from omnir1.experimental import warmstart as rendered
    from omnir1.experimental.assess import (
        ignore_video_completions,
        policy_completions,
        prior_frames,
        read_words_completions,
    )
    from omnir1.experimental.params import load_study_params
    from omnir1.experimental.study import _split_inputs
    from omnir1.models.loading import freeze_towers, load_models
    from omnir1.models.tiny import init_tiny
    from omnir1.rl import warmstart as ws
    from omnir1.systems.parsing import parse_answer
    from omnir1.systems.reasoning import GlobalReasoner

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--bs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--every", type=int, default=200)
    ap.add_argument("--limit", type=int, default=24)
    ap.add_argument("--max-frames", type=int, help="override system1.max_frames")
    ap.add_argument("--frames", choices=["video", "images"], help="override system1.frames")
    ap.add_argument("--prompt", choices=["release", "compact"], help="override system1.prompt")
    ap.add_argument("--no-audio", action="store_true", help="system1.audio false: frames only")
    ap.add_argument("--audio-first", action="store_true", help="system1.audio_first (images)")
    ap.add_argument("--train-vision", action="store_true", help="train the vision tower too")
    ap.add_argument(
        "--appearance-only",
        action="store_true",
        help="train and assess only expressions naming what the target looks like",
    )
    ap.add_argument(
        "--word",
        nargs="+",
        help="with --appearance-only: only expressions with one of these words (colours)",
    )
    ap.add_argument(
        "--rendered",
        type=int,
        default=0,
        help="add this many examples on freshly rendered clips like the set's (same filters)",
    )
    ap.add_argument("--moments", type=int, help="override system1.moments (answers' length)")
    ap.add_argument("--hidden", type=int, help="the thinker's hidden size (FFN twice it)")
    ap.add_argument("--layers", type=int, help="the thinker's layers")
    ap.add_argument("--init", help="start from this model folder (e.g. an earlier --save)")
    ap.add_argument("--save", help="write the trained models here as a model folder")
    ap.add_argument("--results", default="research/results/system1_results.jsonl")
    ap.add_argument("--tag", default="")
    a = ap.parse_args()
    torch.set_num_threads(1)

    params = load_study_params("params.yaml")
    if a.max_frames:
        params.system1.max_frames = a.max_frames
    if a.frames:
        params.system1.frames = a.frames
    if a.prompt:
        params.system1.prompt = a.prompt
    if a.moments:
        params.system1.moments = a.moments
    params.system1.audio_first = a.audio_first
    params.system1.audio = not a.no_audio
    s1 = params.system1
    sizes = params.models.tiny.sizes()
    if a.hidden:
        sizes = replace(sizes, hidden=a.hidden, ffn=2 * a.hidden)
    if a.layers:
        sizes = replace(sizes, layers=a.layers)
    # --init: a curriculum stage from an earlier run's models (their thinker size)
    base = Path(a.init or f"/tmp/system1_frames/seed{a.seed}_h{sizes.hidden}_l{sizes.layers}")
    if not a.init and not (base / "models.json").is_file():
        init_tiny(base, seed=a.seed, sizes=sizes)
    models = load_models(base, system2=False)
    reasoner = GlobalReasoner(models.system1, models.system1_processor, s1)

    def wanted(sample) -> bool:
        if not a.appearance_only:
            return True
        words = set(sample.expression.split())
        return expression_kind(sample.expression) == "appearance" and (
            not a.word or bool(set(a.word) & words)
        )

    samples, clips, contexts = _split_inputs(params, "revos", Path(a.data), "train", keep=wanted)
    targets = [c.target for c in contexts]
    held, held_clips, held_contexts = _split_inputs(
        params, "revos", Path(a.data), "valid", a.limit, keep=wanted
    )
    descriptions = ws.object_descriptions(a.data)
    examples = ws.system1_examples(reasoner, samples, clips, targets, descriptions, seed=a.seed)
    if a.rendered:
        kinds = {"appearance"} if a.appearance_only else None
        fresh = rendered.rendered_clips(
            a.data,
            a.rendered,
            s1,
            seed=a.seed,
            kinds=kinds,
            words=a.word or (),
        )
        examples += rendered.examples_of_rendered(reasoner, fresh, seed=a.seed)
    prior = prior_frames(targets, s1.moments)

    def visible(ctx, frame: int) -> bool:
        return ctx.target.union_areas[frame] > 0

    def baseline_hit(completions) -> float:  # a blind baseline: one answer per expression
        rates = []
        for (text,), ctx in zip(completions, held_contexts, strict=True):
            frames = parse_answer(text, ctx.frame_times).keyframes
            rates.append(np.mean([visible(ctx, k) for k in frames]))
        return float(np.mean(rates))

    expressions = [s.expression for s in held]
    times = [ctx.frame_times for ctx in held_contexts]
    prior_hit = baseline_hit(
        ignore_video_completions(targets, expressions, moments=s1.moments, frame_times=times)
    )
    words_hit = baseline_hit(
        read_words_completions(
            targets,
            [s.expression for s in samples],
            expressions,
            moments=s1.moments,
            object_words=rendered.object_words(a.data),
            frame_times=times,
        )
    )
    print(
        f"{len(examples)} examples; {len(held)} held-out; prior {prior} hit {prior_hit:.3f}; "
        f"read the words hit {words_hit:.3f}"
    )

    def hit_rate() -> tuple[float, float, float]:
        texts = policy_completions(reasoner, held_clips, expressions, per_sample=2, seed=1000)
        keyframes = hits = well_formed = answers = 0
        for ctx, sampled in zip(held_contexts, texts, strict=True):
            for text in sampled:
                parsed = parse_answer(text, ctx.num_frames)
                answers += 1
                well_formed += parsed.format_ok
                keyframes += len(parsed.keyframes)
                hits += sum(visible(ctx, k) for k in parsed.keyframes)
        return hits / max(keyframes, 1), well_formed / answers, hits / answers

    curve = measure_every(models.system1, a.every, hit_rate)
    freeze_towers(models.system1, vision=a.train_vision)
    start = time.perf_counter()
    cfg = FinetuneParams(steps=a.steps, batch_size=a.bs, learning_rate=a.lr)
    pad_id = models.system1_processor.tokenizer.pad_token_id
    ws.finetune(models.system1, examples, cfg, pad_id, seed=a.seed)
    if a.save:
        from omnir1.models.loading import part_saver, write_model_folder

        save = part_saver(models.system1, models.system1_processor)
        write_model_folder(base, a.save, name=f"system1-frames-{a.tag}", system1=save)
    result = {
        "tag": a.tag,
        **{k: v for k, v in vars(a).items() if k not in ("results", "tag")},
        "examples": len(examples),
        "heldout": len(held),
        "prior_hit": round(prior_hit, 3),
        "read_words_hit": round(words_hit, 3),
        "curve": curve,
        "seconds": round(time.perf_counter() - start),
    }
    print(json.dumps(result), flush=True)
    with Path(a.results).open("a") as fh:
        fh.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
