"""Memory of `omnir1 infer` as videos get longer: peak RSS for 10 s, 30 s and 60 s clips.

    .venv/bin/python bench/bench_long_video.py [--out reports/bench_long_video.json]

640x360 at 30 fps with audio; tiny models with SAM2 at 128 px; a replayed answer with one
keyframe at 1 s and one box, so SAM2 tracks one object through every frame. Frames are streamed
(memory-mapped at SAM2's size), masks written as produced and SAM2's state pruned, so peak
memory should stay flat while time grows linearly with the frames.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_infer import run  # the same measured subprocess runner

ANSWER = (
    '<think>x</think><answer>[{"start_time": "00:01.00", "end_time": "00:01.20", '
    '"description": "the red ball"}]</answer>'
)
BOXES = '[{"bbox_2d": [60, 100, 240, 260], "label": "the red ball"}]'


def make_clip(path: Path, seconds: int, fps: int = 30) -> Path:
    from omnir1.media import write_video

    h, w = 360, 640
    yy, xx = np.mgrid[:h, :w]
    audio = (0.3 * np.sin(np.arange(seconds * 16000) / 5.0)).astype(np.float32)

    def frames():
        for i in range(seconds * fps):
            img = np.full((h, w, 3), 40, np.uint8)
            cx = 150 + (i % 300)
            img[(xx - cx) ** 2 + (yy - 180) ** 2 < 45**2] = (220, 30, 30)
            yield img

    return write_video(path, frames(), fps=fps, audio=audio)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reports/bench_long_video.json")
    parser.add_argument("--seconds", default="10,30,60")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models = tmp / "models"
        init = ["models", "init-tiny", "--out", str(models), "--sam2-size", "128"]
        subprocess.run(
            [sys.executable, "-m", "omnir1.cli", *init], check=True, stdout=subprocess.DEVNULL
        )
        for seconds in [int(s) for s in args.seconds.split(",")]:
            clip = make_clip(tmp / f"clip{seconds}.mp4", seconds)
            extra = ["--system1-answer", ANSWER, "--grounder-answer", BOXES, "--no-overlay"]
            r = run(models, clip, tmp / f"out{seconds}", extra)
            per_frame = r["timings_s"]["sam2"] / r["frames"]
            results[f"{seconds}s"] = {**r, "sam2_s_per_frame": per_frame}
            print(
                f"{seconds:3d} s ({r['frames']} frames): peak RSS {r['peak_rss_mb']:.0f} MB, "
                f"SAM2 {r['timings_s']['sam2']:.1f} s ({per_frame * 1000:.0f} ms/frame), "
                f"total {r['timings_s']['total']:.1f} s"
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
