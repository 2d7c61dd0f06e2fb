"""Does the tiny grounder (System 2) localise? Warm start on the train split, box IoU on
frames of the held-out videos, against always answering the training set's mean box.

    OMP_NUM_THREADS=1 python research/scripts/grounder_localise.py --data DIR [--steps 300]
        [--lr 2e-3] [--max-pixels 6272] [--theta 1e6] [--mrope 4 6 6] [--digits] [--train-vision]
        [--results research/results/grounder_results.jsonl] [--tag NAME]

Uses the warm start's own code (omnir1.rl.warmstart.grounder_examples / finetune) and the
Grounder that GRPO's rewards call. Held-out frames: every 5th frame of each `valid` sample
where its target is visible, each (video, objects, frame) once; the IoU is the reward's
matched_box_iou (Hungarian, over the GT boxes). Nothing is tuned on them: they are only scored.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np


def items_of(samples, descriptions, stride: int):
    from omnir1.rl.warmstart import target_boxes

    return [
        (s, t, text, [list(map(float, b)) for b in boxes])
        for s, t, text, boxes in target_boxes(samples, descriptions, frame_stride=stride)
    ]


class _Frame:  # a rendered frame in the place of a sample
    def __init__(self, i, img):
        self.video_id, self.frame_paths, self.img = f"rendered{i}", None, img


def score(grounder, items):
    from omnir1.media.video import read_image
    from omnir1.rl.rewards import matched_box_iou
    from omnir1.systems.grounding import GroundingRequest

    requests = [
        GroundingRequest(
            (s.video_id, t),
            s.img if isinstance(s, _Frame) else np.array(read_image(s.frame_paths[t])),
            text,
        )
        for s, t, text, _ in items
    ]
    results = grounder.ground(requests)
    ious = [matched_box_iou(r.boxes, gt) for r, (_, _, _, gt) in zip(results, items, strict=True)]
    parsed = [bool(r.boxes) for r in results]
    shown = [
        {
            "pred": [[round(v) for v in b] for b in r.boxes],
            "gt": [[round(v) for v in b] for b in gt],
        }
        for r, (*_, gt) in list(zip(results, items, strict=True))[:6]
    ]
    return float(np.mean(ious)), float(np.mean(parsed)), shown


def main() -> None:
    import torch

    from omnir1.config import FinetuneParams, GrounderParams
    from omnir1.experimental import warmstart as rendered
    from omnir1.models.loading import Manifest, freeze_towers, load_thinker
    from omnir1.models.tiny import TinySizes, init_tiny
    from omnir1.rl import warmstart as ws
    from omnir1.rl.rewards import matched_box_iou
    from omnir1.rl.train import trainable_samples
    from omnir1.systems.grounding import Grounder

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--bs", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--max-pixels", type=int, default=6272)
    ap.add_argument("--min-pixels", type=int, default=4 * 28 * 28)
    ap.add_argument("--stride", type=int, default=3, help="train frames (warm_start stride)")
    ap.add_argument("--eval-stride", type=int, default=5)
    ap.add_argument("--theta", type=float, default=1e6)
    ap.add_argument("--mrope", type=int, nargs=3, default=None)
    ap.add_argument("--digits", action="store_true")
    ap.add_argument("--train-vision", action="store_true")
    ap.add_argument("--rendered", type=int, default=0, help="freshly drawn training frames")
    ap.add_argument("--objects", type=int, default=None, help="rendered frames: objects kept")
    ap.add_argument("--rendered-only", action="store_true", help="no video frames in training")
    ap.add_argument("--models-root", default="/tmp/i5b_data/models")
    ap.add_argument("--results", default="research/results/grounder_results.jsonl")
    ap.add_argument("--tag", default="")
    ap.add_argument("--eval-every", type=int, default=0, help="held-out IoU every N steps")
    ap.add_argument(
        "--curriculum", type=int, default=0, help="first N steps on single-object rendered frames"
    )
    a = ap.parse_args()
    torch.set_num_threads(1)

    sizes = TinySizes(
        sam2_image_size=64,
        rope_theta=a.theta,
        mrope_section=tuple(a.mrope) if a.mrope else None,
        digit_tokens=a.digits,
    )
    key = hashlib.sha1(repr((a.seed, sizes)).encode()).hexdigest()[:10]
    models = Path(a.models_root) / key
    if not (models / "models.json").is_file():
        init_tiny(models, seed=a.seed, sizes=sizes)
    model, processor = load_thinker(Manifest.read(models).grounder)
    cfg = GrounderParams(
        max_pixels=a.max_pixels, min_pixels=a.min_pixels, max_new_tokens=64, batch_size=8
    )
    grounder = Grounder(model, processor, cfg)
    descriptions = ws.object_descriptions(a.data)
    train = trainable_samples("revos", Path(a.data))
    held = items_of(trainable_samples("revos", Path(a.data), "valid"), descriptions, a.eval_stride)
    train_items = items_of(train, descriptions, a.stride)
    mean_box = np.mean([b for *_, boxes in train_items for b in boxes], axis=0).tolist()
    baseline = float(np.mean([matched_box_iou([mean_box], gt) for *_, gt in held]))
    print(f"held-out items {len(held)}; mean-box baseline IoU {baseline:.4f}", flush=True)

    t0 = time.perf_counter()
    examples = []
    if not a.rendered_only:
        examples = ws.grounder_examples(grounder, train, descriptions, frame_stride=a.stride)
    if a.rendered:
        examples += rendered.rendered_grounder_examples(
            grounder, a.data, a.rendered, seed=a.seed, objects=a.objects
        )
    shown = grounder._shown_size(np.zeros((180, 320, 3), np.uint8))
    tokens = examples[0].fields["image_grid_thw"].prod().item() // 4
    freeze_towers(model)
    if a.train_vision:
        model.model.visual.requires_grad_(True)
    prep_s = time.perf_counter() - t0
    curve = []
    probe = held[:80]
    if a.rendered_only:  # the curve on fresh rendered frames (another seed than training's)
        fresh = rendered.rendered_frames(a.data, 80, seed=a.seed + 2000, objects=a.objects)
        probe = [(_Frame(i, img), 0, text, b) for i, (img, text, b) in enumerate(fresh)]
    if a.eval_every:  # score the first 80 held-out items every N optimizer steps
        original = torch.optim.AdamW.step
        count = {"n": 0}

        def step(opt, *args, **kwargs):
            out = original(opt, *args, **kwargs)
            count["n"] += 1
            if count["n"] % a.eval_every == 0 and count["n"] < a.steps + a.curriculum:
                model.eval()
                with torch.no_grad():
                    iou = score(grounder, probe)[0]
                curve.append([count["n"], round(iou, 4)])
                print("curve", curve[-1], flush=True)
                model.train()
            return out

        torch.optim.AdamW.step = step
    t0 = time.perf_counter()
    if a.curriculum:
        first = rendered.rendered_grounder_examples(
            grounder, a.data, 3000, seed=a.seed + 3000, objects=1
        )
        ws.finetune(
            model,
            first,
            FinetuneParams(steps=a.curriculum, batch_size=a.bs, learning_rate=a.lr),
            processor.tokenizer.pad_token_id,
            seed=a.seed,
            desc="grounder: single objects",
        )
        model.train()
    losses = ws.finetune(
        model,
        examples,
        FinetuneParams(steps=a.steps, batch_size=a.bs, learning_rate=a.lr),
        processor.tokenizer.pad_token_id,
        seed=a.seed,
        desc="grounder",
    )
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with torch.no_grad():
        held_iou, held_parsed, example = score(grounder, held)
        rng = np.random.default_rng(0)
        pick = rng.choice(len(train_items), size=min(150, len(train_items)), replace=False)
        train_iou, _, _ = score(grounder, [train_items[i] for i in pick])
        rendered_iou = rendered_mean = None
        if a.rendered:  # fresh rendered frames of another seed than training's
            fresh = rendered.rendered_frames(a.data, 150, seed=a.seed + 1000, objects=a.objects)
            fresh_items = [(_Frame(i, img), 0, text, b) for i, (img, text, b) in enumerate(fresh)]
            rendered_iou = round(score(grounder, fresh_items)[0], 4)
            rendered_mean = round(
                float(np.mean([matched_box_iou([mean_box], b) for *_, b in fresh_items])), 4
            )
    result = {
        "tag": a.tag,
        **{k: v for k, v in vars(a).items() if k not in ("results", "models_root", "tag")},
        "shown_hw": list(shown),
        "visual_tokens": tokens,
        "examples": len(examples),
        "heldout_items": len(held),
        "mean_box_iou": round(baseline, 4),
        "heldout_iou": round(held_iou, 4),
        "heldout_parsed": round(held_parsed, 3),
        "train_iou": round(train_iou, 4),
        "rendered_iou": rendered_iou,
        "rendered_mean_box_iou": rendered_mean,
        "loss_first": round(float(np.mean(losses[:10])), 3),
        "loss_last": round(float(np.mean(losses[-10:])), 3),
        "prep_s": round(prep_s, 1),
        "train_s": round(train_s, 1),
        "eval_s": round(time.perf_counter() - t0, 1),
        "curve": curve,
        "examples_native_px": example,
    }
    print(json.dumps(result), flush=True)
    Path(a.results).parent.mkdir(parents=True, exist_ok=True)
    with Path(a.results).open("a") as fh:
        fh.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
