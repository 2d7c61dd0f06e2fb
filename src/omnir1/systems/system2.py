"""System 2 on one video for many requests at once: the unit of work of inference, of GRPO (all
completions of a group) and of the System-2 service.

A request is a list of keyframes, each a frame index with a description (and, optionally, known
boxes that take the grounder's place, to study SAM2 alone or replay a run). All grounding
requests of the batch are deduplicated and generated together; every box is a SAM2 object tracked
from its own keyframe (so a request's masks never depend on the rest of the batch), identical
boxes are tracked once for the whole batch, every frame's image features are shared by all of
them (and kept for later calls on the same frames: `segmentation.FeatureStore`), and the masks
of a request's boxes are unioned per frame.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from omnir1.config import GrounderParams
from omnir1.systems.grounding import Grounder, GroundingRequest
from omnir1.systems.segmentation import BoxPrompt, FeatureStore, SAM2Frames, segment
from omnir1.timing import Stopwatch


@dataclass(frozen=True)
class KeyframeRequest:
    frame: int  # index in the video's frames
    description: str
    boxes: tuple[tuple[float, float, float, float], ...] | None = None  # given: no grounder


@dataclass(frozen=True)
class System2Request:
    id: str
    keyframes: tuple[KeyframeRequest, ...]


@dataclass
class KeyframeResult:
    frame: int
    description: str
    boxes: list[list[float]]
    grounding: dict = field(default_factory=dict)  # grounder text + parse diagnostics


@dataclass
class System2Result:
    id: str
    keyframes: list[KeyframeResult]


MaskSink = Callable[[int, dict[str, np.ndarray]], None]


def run_system2(
    models,
    video: str | Path | np.ndarray,
    requests: Sequence[System2Request],
    on_frame: MaskSink,
    *,
    grounder_cfg: GrounderParams | None = None,
    folder_fps: float = 1.0,
    grounder_answer: str | None = None,
    timings: dict[str, float] | None = None,
    segment_masks: bool = True,
    features: FeatureStore | Literal["shared"] | None = "shared",
) -> list[System2Result]:
    """Ground and segment every request; `on_frame(frame, {request id: union mask})` gets each
    frame of the video once for every request (one call carries some of the requests: those
    segmented together). `grounder_answer` replays one grounder answer for every keyframe.
    `segment_masks=False` stops after the boxes (on_frame is never called). `video` may be
    the decoded frames, (N, H, W, 3) uint8 (a preprocessed shard's frames.npy). SAM2's image
    features come from and go to `features` (`segment`'s: by default the process's store, so
    later calls on the same video skip the image encoder for frames computed before)."""
    watch = Stopwatch()
    ids = [r.id for r in requests]
    if len(set(ids)) != len(ids):
        raise ValueError("request ids must be unique")
    wanted = {k.frame for r in requests for k in r.keyframes}
    with watch("decode_system2"):
        frames = SAM2Frames(video, models.sam2.image_size, folder_fps=folder_fps, keep=wanted)
    try:
        for r in requests:
            for k in r.keyframes:
                if not 0 <= k.frame < len(frames):
                    raise ValueError(
                        f"request {r.id!r}: keyframe {k.frame} outside the video's "
                        f"{len(frames)} frames"
                    )
        grounder = Grounder(models.grounder, models.grounder_processor, grounder_cfg)
        to_ground = [
            GroundingRequest(k.frame, frames.kept[k.frame], k.description)
            for r in requests
            for k in r.keyframes
            if k.boxes is None
        ]
        with watch("grounder"):
            if grounder_answer is None:
                grounded = iter(grounder.ground(to_ground))
            else:
                grounded = iter([grounder.result(g, grounder_answer) for g in to_ground])
        results, prompts = [], []
        for r in requests:
            keyframes = []
            for i, k in enumerate(r.keyframes):
                if k.boxes is None:
                    g = next(grounded)
                    kr = KeyframeResult(
                        k.frame, k.description, g.boxes, {"text": g.text, "parse": g.parse}
                    )
                else:
                    kr = KeyframeResult(k.frame, k.description, [list(b) for b in k.boxes])
                keyframes.append(kr)
                prompts += [
                    BoxPrompt((r.id, i, j), k.frame, tuple(b)) for j, b in enumerate(kr.boxes)
                ]
            results.append(System2Result(r.id, keyframes))
        with watch("sam2"):
            if segment_masks:
                _union_per_request(models.sam2, frames, ids, prompts, on_frame, features)
    finally:
        frames.close()
    if timings is not None:
        for k, v in watch.timings.items():
            timings[k] = timings.get(k, 0.0) + v
    return results


def _union_per_request(
    sam2, frames: SAM2Frames, ids, prompts, on_frame: MaskSink, features="shared"
) -> None:
    """Call `on_frame` with each request's union of its boxes' masks on every frame, as soon
    as the frame's last part has come from `segment`. Unions still waiting for a part are kept
    packed 8 pixels to a byte: only frames between the group's earliest and latest keyframes
    wait, and only for the requests with boxes on both sides of them."""
    shape = (frames.video_height, frames.video_width)
    empty = np.zeros(shape, bool)
    objects: dict[str, set] = {}
    for p in prompts:
        objects.setdefault(p.obj[0], set()).add(p.obj)
    waiting: dict[tuple[int, str], tuple[np.ndarray, int]] = {}  # packed union, parts seen
    for frame_idx, masks in segment(sam2, frames, prompts, features=features):
        parts: dict[str, list[np.ndarray]] = {}
        for obj, mask in masks.items():
            parts.setdefault(obj[0], []).append(mask)
        done = {}
        for rid, got in parts.items():
            union, seen = np.logical_or.reduce(got), len(got)  # a new array
            if (frame_idx, rid) in waiting:
                packed, before = waiting.pop((frame_idx, rid))
                union |= np.unpackbits(packed, count=union.size).reshape(shape).view(bool)
                seen += before
            if seen == len(objects[rid]):
                done[rid] = union
            else:
                waiting[(frame_idx, rid)] = (np.packbits(union), seen)
        if done:
            on_frame(frame_idx, done)
    if waiting:
        raise RuntimeError(f"SAM2 left {len(waiting)} request masks incomplete")
    unprompted = [rid for rid in ids if rid not in objects]
    if unprompted:
        for frame_idx in range(len(frames)):  # no box: empty masks
            on_frame(frame_idx, dict.fromkeys(unprompted, empty))


def collect_rle() -> tuple[MaskSink, dict[str, dict[int, dict]]]:
    """A sink that keeps every request's masks as COCO RLE per frame (compact: what the service
    returns and what rewards decode)."""
    from omnir1.data import rle

    store: dict[str, dict[int, dict]] = {}

    def sink(frame: int, masks: dict[str, np.ndarray]) -> None:
        for rid, mask in masks.items():
            store.setdefault(rid, {})[frame] = rle.encode(mask)

    return sink, store
