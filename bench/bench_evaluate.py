"""Whole-benchmark evaluation time with 1 and 2 worker processes.

    .venv/bin/python bench/bench_evaluate.py [--videos N] [--out FILE]

Synthesises a ReVOS-layout set (320x180, 60 frames per video), writes predictions derived
from its ground truth (shifted by a few pixels), and times `omnir1.eval.protocols.evaluate`
over its validation split with workers=1 and workers=2, checking both give the same scores.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from omnir1.benchmarks.registry import load
from omnir1.data.synth import SynthConfig, synthesize
from omnir1.eval.protocols import evaluate


def write_shifted_predictions(data: Path, out: Path) -> None:
    for s in load("revos", data):
        folder = out.joinpath(*s.video_id.split("/"), s.expression_id)
        folder.mkdir(parents=True, exist_ok=True)
        h, w = s.frame_size()
        for t, objects in enumerate(s.masks()):
            gt = objects.any(axis=0) if len(objects) else np.zeros((h, w), bool)
            pred = np.roll(gt, (2, -3), axis=(0, 1))
            Image.fromarray(pred.astype(np.uint8) * 255).save(folder / f"{s.frame_names[t]}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=64, help="a quarter become validation")
    parser.add_argument("--out", default="reports/bench_evaluate.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data, pred = Path(tmp) / "revos", Path(tmp) / "pred"
        synthesize(SynthConfig(format="revos", videos=args.videos, seed=0), data, progress=False)
        write_shifted_predictions(data, pred)
        results, scores = {}, {}
        for workers in (1, 2):
            start = time.perf_counter()
            ev = evaluate("revos", data, pred, workers=workers)
            seconds = time.perf_counter() - start
            scores[workers] = [s.to_dict() for s in ev.scores]
            frames = ev.counts["frames"]
            results[f"workers_{workers}"] = {
                "seconds": seconds,
                "expressions": ev.counts["scored"],
                "frames": frames,
                "frames_per_second": frames / seconds,
            }
            print(
                f"workers={workers}: {ev.counts['scored']} expressions, {frames} frames "
                f"in {seconds:.2f} s ({frames / seconds:.0f} frames/s)"
            )
        assert scores[1] == scores[2], "worker count changed the scores"
        speedup = results["workers_1"]["seconds"] / results["workers_2"]["seconds"]
        results["speedup_2_vs_1"] = speedup
        print(f"speed-up with 2 workers: {speedup:.2f}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
