"""`omnir1 infer`: both systems on one video, with every output a user wants to look at.

    OUT/result.json   keyframes, descriptions, boxes, parse diagnostics, per-stage timings,
                      model ids, the completion
    OUT/masks/        one PNG per frame of the video, native size (255 = target)
    OUT/overlay.mp4   the video with the masks tinted and the keyframes framed and captioned

Masks are written as SAM2 produces them (memory stays bounded on long videos) into a staging
folder that replaces OUT/masks only when every frame is there.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from omnir1.fsutil import atomic_dir, write_json
from omnir1.timing import Stopwatch

KEYFRAME_COLOR = (255, 210, 0)


def infer_video(
    models_dir: str | Path,
    video: str | Path,
    expression: str,
    out: str | Path,
    *,
    audio: str | Path | None = None,
    seed: int = 0,
    max_new_tokens: int | None = None,
    overlay: bool = True,
    device: str = "cpu",
    system1_answer: str | None = None,
    grounder_answer: str | None = None,
    folder_fps: float = 1.0,
    system2_url: str | None = None,
    system2_root: str | Path | None = None,
) -> dict:
    """Run both systems on `video` (a file, or a folder of frames at `folder_fps`); System 2
    in process, or through the service at `system2_url` (see omnir1.service.client)."""
    from PIL import Image

    from omnir1.config import System1Params
    from omnir1.media import inspect
    from omnir1.models.loading import load_models
    from omnir1.systems.collaboration import run_collaboration

    out = Path(out)
    # first, so that an unreadable video fails at once, naming the file
    info = inspect(video, folder_fps=folder_fps)
    start = time.perf_counter()
    watch = Stopwatch()
    with watch("load_models"):
        models = load_models(models_dir, device=device, system2=system2_url is None)
    s1 = System1Params()
    if max_new_tokens is not None:
        s1 = System1Params(max_new_tokens=max_new_tokens)
    system2 = None
    if system2_url is not None:
        from omnir1.service.client import System2Client

        system2 = System2Client(system2_url, data_root=system2_root).run_system2
    written = 0
    with atomic_dir(out / "masks") as staging:

        def save(frame: int, mask: np.ndarray) -> None:
            nonlocal written
            Image.fromarray(mask.astype(np.uint8) * 255).save(staging / f"{frame:05d}.png")
            written += 1

        result = run_collaboration(
            models,
            video,
            expression,
            audio=audio,
            s1=s1,
            seed=seed,
            on_masks=save,
            system1_answer=system1_answer,
            grounder_answer=grounder_answer,
            folder_fps=folder_fps,
            system2=system2,
        )
    if overlay:
        with watch("overlay"):
            write_overlay(
                video, out / "masks", result.keyframes, out / "overlay.mp4", info.fps, folder_fps
            )
    timings = {**watch.timings, **result.timings_s, "total": time.perf_counter() - start}
    report = {
        "video": str(video),
        "expression": expression,
        "video_info": info.to_dict(),
        "models": {
            "name": models.manifest.name,
            "system1": str(models.manifest.system1),
            "grounder": str(models.manifest.grounder),
            "sam2_config": models.manifest.sam2_config,
            "sam2_checkpoint": str(models.manifest.sam2_checkpoint),
        },
        "seed": seed,
        "replayed": {
            "system1": system1_answer is not None,
            "grounder": grounder_answer is not None,
        },
        "system2": system2_url or "in-process",
        "completion": result.completion,
        "answer": result.answer,
        "keyframes": [asdict(k) for k in result.keyframes],
        "masks": {"folder": "masks", "frames": written},
        "overlay": "overlay.mp4" if overlay else None,
        "timings_s": timings,
    }
    write_json(out / "result.json", report)
    return report


def write_overlay(
    video: str | Path,
    masks: Path,
    keyframes,
    path: Path,
    fps: float | None,
    folder_fps: float = 1.0,
) -> Path:
    """The video with its masks tinted red; keyframes framed in yellow with their description."""
    from PIL import Image, ImageDraw

    from omnir1.eval.predictions import read_mask_png
    from omnir1.media import iter_frames, write_video
    from omnir1.media.draw import tint

    captions = {k.frame: k.description for k in keyframes}

    def frames():
        for frame in iter_frames(video, folder_fps=folder_fps):
            mask = read_mask_png(masks / f"{frame.index:05d}.png", frame.image.shape[:2])
            pil = Image.fromarray(frame.image if mask is None else tint(frame.image, mask))
            if frame.index in captions:
                draw = ImageDraw.Draw(pil)
                w, h = pil.size
                draw.rectangle([0, 0, w - 1, h - 1], outline=KEYFRAME_COLOR, width=max(2, w // 160))
                draw.text((6, 4), f"keyframe: {captions[frame.index]}"[:120], fill=KEYFRAME_COLOR)
            yield np.asarray(pil)

    return write_video(path, frames(), fps=fps or 25.0)
