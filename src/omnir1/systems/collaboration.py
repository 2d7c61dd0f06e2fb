"""The two systems together on one video (docs/design.md §2): what `omnir1 infer` runs.

System 1 answers keyframes and descriptions; System 2 grounds each description on its keyframe
at high resolution, and SAM2 tracks every box through the whole video. The masks of all boxes
are unioned per frame (what every benchmark scores). Identity of objects across keyframes is
not guessed: each (keyframe, box) is tracked as its own SAM2 object, so a wrong association can
never corrupt a track.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from omnir1.config import GrounderParams, System1Params
from omnir1.systems.parsing import parse_answer
from omnir1.systems.reasoning import GlobalReasoner, VideoClip, load_clip
from omnir1.systems.system2 import KeyframeRequest, System2Request, run_system2
from omnir1.timing import Stopwatch


@dataclass
class Keyframe:
    sample_index: int  # index among System 1's 2 fps frames
    frame: int  # index in the full video
    time_s: float
    description: str
    boxes: list[list[float]] = field(default_factory=list)
    grounding: dict = field(default_factory=dict)  # the grounder's raw text and parse diagnostics


@dataclass
class Collaboration:
    completion: str
    answer: dict  # ParsedAnswer.to_dict()
    keyframes: list[Keyframe]
    timings_s: dict[str, float]


def keyframes_from_answer(clip: VideoClip, answer) -> list[Keyframe]:
    return [
        Keyframe(
            sample_index=k,
            frame=int(clip.source_indices[k]),
            time_s=float(clip.times[k]),
            description=desc,
        )
        for k, desc in zip(answer.keyframes, answer.keyframe_descriptions, strict=True)
    ]


def run_collaboration(
    models,
    video: str | Path,
    expression: str,
    *,
    audio: str | Path | None = None,
    s1: System1Params | None = None,
    grounder_cfg: GrounderParams | None = None,
    seed: int = 0,
    on_masks: Callable[[int, np.ndarray], None],
    folder_fps: float = 1.0,
    system1_answer: str | None = None,
    grounder_answer: str | None = None,
    system2: Callable | None = None,
) -> Collaboration:
    """Run both systems; `on_masks(frame, union_mask)` receives every frame's mask once.

    `system1_answer` / `grounder_answer` replay a given completion instead of generating one
    (to reproduce a run, or to study System 2 with known keyframes or boxes); replayed text
    goes through the same parsers as generated text. `system2` replaces the in-process
    `run_system2` (same signature), e.g. by a client of the System-2 service.
    """
    s1 = s1 or System1Params()
    watch = Stopwatch()
    with watch("decode_system1"):
        clip = load_clip(video, audio=audio, cfg=s1, folder_fps=folder_fps)
    if system1_answer is None:
        reasoner = GlobalReasoner(models.system1, models.system1_processor, s1)
        with watch("system1_generate"):
            completion = reasoner.generate(clip, expression, seed=seed)[0]
    else:
        completion = system1_answer
    answer = parse_answer(
        completion, clip.frame_times, max_keyframes=s1.max_keyframes, max_moments=s1.max_moments
    )
    keyframes = keyframes_from_answer(clip, answer)
    request = System2Request("0", tuple(KeyframeRequest(k.frame, k.description) for k in keyframes))
    results = (system2 or run_system2)(
        models,
        video,
        [request],
        lambda frame, masks: on_masks(frame, masks["0"]),
        grounder_cfg=grounder_cfg,
        folder_fps=folder_fps,
        grounder_answer=grounder_answer,
        timings=watch.timings,
    )
    for k, r in zip(keyframes, results[0].keyframes, strict=True):
        k.boxes, k.grounding = r.boxes, r.grounding
    return Collaboration(completion, answer.to_dict(), keyframes, watch.timings)
