"""Per-stage time of `omnir1 infer` on a 10 s 720p clip (30 fps, with audio), tiny models.

    .venv/bin/python bench/bench_infer.py [--out reports/bench_infer.json]

Two runs on the same clip:
- `generate`: System 1 generates (up to --max-new-tokens); a randomly initialised model rarely
  writes a valid answer, so System 2 usually has nothing to do: this times System 1.
- `replayed`: a fixed System-1 answer with 4 keyframes and a fixed grounder answer with one box
  per keyframe, so that SAM2 tracks 4 objects through all 300 frames: this times System 2.
Also records peak resident memory of each run (a subprocess each).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ANSWER = (
    "<think>the target whistles at the start and then moves right.</think><answer>["
    '{"start_time": "00:01.00", "end_time": "00:01.50", "description": "the red ball"}, '
    '{"start_time": "00:04.00", "end_time": "00:04.40", "description": "the red ball"}, '
    '{"start_time": "00:08.00", "end_time": "00:08.20", "description": "the red ball"}]</answer>'
)
BOXES = '[{"bbox_2d": [300, 200, 520, 420], "label": "the red ball"}]'


def make_clip(path: Path, seconds: int = 10, fps: int = 30) -> Path:
    from omnir1.media import write_video

    h, w = 720, 1280
    yy, xx = np.mgrid[:h, :w]
    t_audio = np.arange(seconds * 16000) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 440 * t_audio)).astype(np.float32)

    def frames():
        for i in range(seconds * fps):
            img = np.full((h, w, 3), 40, np.uint8)
            cx, cy = 200 + 80 * i / fps, 360
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < 90**2] = (220, 30, 30)
            yield img

    return write_video(path, frames(), fps=fps, audio=audio)


# the CLI in a fresh interpreter that reports its own peak memory on its last stderr line
MEASURED_CLI = (
    "import resource, sys; from omnir1.cli import main; rc = main(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(rc)"
)


def run(models: Path, clip: Path, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-c", MEASURED_CLI, "infer", "--video", str(clip)]
    cmd += ["--expression", "the ball that whistles", "--models", str(models), "--out", str(out)]
    done = subprocess.run(
        [*cmd, *extra], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    peak_kb = int(done.stderr.strip().splitlines()[-1])
    report = json.loads((out / "result.json").read_text())
    return {
        "timings_s": report["timings_s"],
        "keyframes": len(report["keyframes"]),
        "boxes": sum(len(k["boxes"]) for k in report["keyframes"]),
        "frames": report["masks"]["frames"],
        "peak_rss_mb": peak_kb / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reports/bench_infer.json")
    parser.add_argument("--max-new-tokens", default="256")
    parser.add_argument("--sam2-size", default="256")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models = tmp / "models"
        init = ["models", "init-tiny", "--out", str(models), "--sam2-size", args.sam2_size]
        subprocess.run(
            [sys.executable, "-m", "omnir1.cli", *init], check=True, stdout=subprocess.DEVNULL
        )
        clip = make_clip(tmp / "clip720p.mp4")
        results = {
            "generate": run(models, clip, tmp / "gen", ["--max-new-tokens", args.max_new_tokens]),
            "replayed": run(
                models,
                clip,
                tmp / "replay",
                ["--system1-answer", ANSWER, "--grounder-answer", BOXES],
            ),
        }
    stages = sorted({s for r in results.values() for s in r["timings_s"]})
    print(f"{'stage':18} {'generate s':>11} {'replayed s':>11}")
    for stage in stages:
        cells = [results[k]["timings_s"].get(stage) for k in ("generate", "replayed")]
        print(
            f"{stage:18} " + " ".join("          -" if c is None else f"{c:11.2f}" for c in cells)
        )
    for name, r in results.items():
        print(
            f"{name}: {r['keyframes']} keyframes, {r['boxes']} boxes, {r['frames']} masks, "
            f"peak RSS {r['peak_rss_mb']:.0f} MB"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
