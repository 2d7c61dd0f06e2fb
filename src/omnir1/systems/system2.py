"""System 2 on one video for many requests at once: the unit of work of inference, of GRPO (all
completions of a group) and of the System-2 service.

A request is a list of keyframes, each a frame index with a description (and, optionally, known
boxes that take the grounder's place, to study SAM2 alone or replay a run). All grounding
requests of the batch are deduplicated and generated together; every box of every request is
tracked by SAM2 in one inference state, so each frame's image features are computed once; the
masks of a request's boxes are unioned per frame.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from omnir1.config import GrounderParams
from omnir1.systems.grounding import Grounder, GroundingRequest
from omnir1.systems.segmentation import BoxPrompt, SAM2Frames, segment
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
) -> list[System2Result]:
    """Ground and segment every request; `on_frame(frame, {request id: union mask})` gets each
    frame of the video once for every request (one call carries some of the requests: those
    segmented together). `grounder_answer` replays one grounder answer for every keyframe.
    `segment_masks=False` stops after the boxes (on_frame is never called). `video` may be
    the decoded frames, (N, H, W, 3) uint8 (a preprocessed shard's frames.npy)."""
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
        empty = np.zeros((frames.video_height, frames.video_width), bool)
        with watch("sam2"):
            if segment_masks:
                for rids, group in _by_first_keyframe(ids, prompts):
                    done = set()
                    for frame_idx, masks in segment(models.sam2, frames, group):
                        union = dict.fromkeys(rids, empty)
                        for (rid, _, _), mask in masks.items():
                            union[rid] = union[rid] | mask
                        on_frame(frame_idx, union)
                        done.add(frame_idx)
                    for frame_idx in range(len(frames)):
                        if frame_idx not in done:  # frames no box reached: empty
                            on_frame(frame_idx, dict.fromkeys(rids, empty))
    finally:
        frames.close()
    if timings is not None:
        for k, v in watch.timings.items():
            timings[k] = timings.get(k, 0.0) + v
    return results


def _by_first_keyframe(ids: Sequence[str], prompts: Sequence[BoxPrompt]):
    """(request ids, their box prompts) per group of requests that share their earliest
    prompted frame, and last the requests without a box (no prompts: empty masks).

    SAM2 propagates a state from its earliest prompt, and each object's masks depend on where
    that is (frames before its own first box are tracked forward, not backward from it). One
    state per group makes a request's masks the same as if it had been sent alone, whatever
    else the GRPO group holds; requests with the same first keyframe still share a pass."""
    first: dict[str, int] = {}
    for p in prompts:
        first[p.obj[0]] = min(first.get(p.obj[0], p.frame), p.frame)
    for start in sorted(set(first.values())):
        rids = [rid for rid in ids if first.get(rid) == start]
        yield rids, [p for p in prompts if first[p.obj[0]] == start]
    unprompted = [rid for rid in ids if rid not in first]
    if unprompted:
        yield unprompted, []


def collect_rle() -> tuple[MaskSink, dict[str, dict[int, dict]]]:
    """A sink that keeps every request's masks as COCO RLE per frame (compact: what the service
    returns and what rewards decode)."""
    from omnir1.data import rle

    store: dict[str, dict[int, dict]] = {}

    def sink(frame: int, masks: dict[str, np.ndarray]) -> None:
        for rid, mask in masks.items():
            store.setdefault(rid, {})[frame] = rle.encode(mask)

    return sink, store
