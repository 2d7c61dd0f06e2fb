"""Rewards of a GRPO group: System 2 called once with every completion's keyframes.

For one prompt (a sample: video, expression, ground truth) and its G completions, the engine
parses every completion, sends all of their keyframe requests to System 2 in one call (the
in-process `run_system2` or the service client: same signature), measures each completion's
propagated masks against the ground truth frame by frame (sam_j), and evaluates the recipe's
rewards by name. A System-2 failure is retried and then stops training with an error naming
the sample: it never turns into zero rewards.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from omnir1.config import VideoAccuracyParams, check_sam2_every
from omnir1.errors import OmniR1Error
from omnir1.eval.metrics import jaccard
from omnir1.rl.rewards import (
    RewardBreakdown,
    RewardTarget,
    System2Outcome,
    check_reward_names,
    get_reward,
    needs_system2,
)
from omnir1.systems.parsing import FrameTimes, ParsedAnswer, parse_answer
from omnir1.systems.system2 import KeyframeRequest, System2Request, run_system2


class System2FailedError(OmniR1Error):
    """System 2 kept failing on a group: the step cannot be scored honestly."""


@dataclass
class GroupContext:
    """What the rewards of one prompt's completions need."""

    key: str  # sample id, for messages and logs
    video: Path  # the file or frame folder System 2 reads
    folder_fps: float  # frame rate of a frame folder
    source_indices: list[int]  # System 1 frame -> frame of the video
    target: RewardTarget  # ground truth on System 1's frames, native pixels
    gt_union: Sequence[np.ndarray]  # ground-truth union mask of every video frame (sam_j)
    # the video's frames decoded by preprocessing (N, H, W, 3), which in-process System 2 reads
    # instead of decoding `video` (the System-2 service reads its own copy of `video`)
    frames: np.ndarray | None = None
    # when System 1's frames were sampled, and the clip's duration: answers' times are read
    # against them (2 fps only on clips up to max_frames / 2 seconds)
    frame_times: FrameTimes = field(kw_only=True)

    def __post_init__(self) -> None:
        if self.frame_times.num_frames != len(self.source_indices):
            raise ValueError(
                f"{self.key}: {self.frame_times.num_frames} frame times for "
                f"{len(self.source_indices)} System-1 frames"
            )

    @property
    def num_frames(self) -> int:
        return len(self.source_indices)


class LazyUnion(Sequence):
    """Ground-truth union masks of a sample's frames, decoded when asked for: a training set
    holds thousands of samples, and full-resolution masks of all their frames would not fit."""

    def __init__(self, sample):
        self.sample = sample
        self.height, self.width = sample.frame_size()

    def __len__(self) -> int:
        return self.sample.num_frames

    def __getitem__(self, t: int) -> np.ndarray:
        source = self.sample.mask_source
        if source is None or self.sample.is_null:
            return np.zeros((self.height, self.width), bool)
        objects = source.frame_masks(t, self.height, self.width)
        return objects.any(axis=0) if len(objects) else np.zeros((self.height, self.width), bool)


def context_from_sample(sample, cfg=None, clip=None, frames=None) -> GroupContext:
    """A GroupContext for a loaded data-set sample (omnir1.data.records.Sample); `clip` is
    System 1's view of its video when already loaded, `frames` its full frames (a shard's)."""
    from omnir1.config import System1Params
    from omnir1.systems.reasoning import load_clip

    cfg = cfg or System1Params()
    video = sample.frame_paths[0].parent
    if clip is None:
        clip = load_clip(video, audio=sample.audio_path, cfg=cfg, folder_fps=sample.fps)
    height, width = sample.frame_size()
    empty = np.zeros((0, height, width), bool)
    at_samples = []
    for i in clip.source_indices:
        objects = (
            sample.mask_source.frame_masks(int(i), height, width)
            if sample.mask_source is not None and not sample.is_null
            else empty
        )
        at_samples.append(objects)
    return GroupContext(
        key=f"{sample.video_id}/{sample.expression_id}",
        video=video,
        folder_fps=sample.fps,
        source_indices=[int(i) for i in clip.source_indices],
        target=RewardTarget.from_masks(at_samples),
        gt_union=LazyUnion(sample),
        frames=frames,
        frame_times=clip.frame_times,
    )


@dataclass
class GroupScores:
    parsed: list[ParsedAnswer]
    rewards: list[dict[str, RewardBreakdown]]  # per completion, by reward name
    outcomes: list[System2Outcome | None]
    system2_s: float  # time spent in System 2 for the group


class RewardEngine:
    def __init__(
        self,
        rewards: Sequence[str],
        models,
        *,
        weights: VideoAccuracyParams | None = None,
        system2: Callable = run_system2,
        retries: int = 2,
        backoff_s: float = 1.0,
        max_keyframes: int = 4,
        max_moments: int = 64,
        segment_masks: bool = True,
        local_frames: bool = True,
        grounder_cfg=None,
        sam2_every: int = 1,
        reward_weights: Mapping[str, float] | None = None,
    ):
        for name in rewards:
            get_reward(name)  # unknown names fail here, before any training step
        weights = weights or VideoAccuracyParams()
        check_sam2_every(sam2_every, weights.a_g)
        self.rewards = list(rewards)
        # each reward's weight in the total (params rewards.weights; TRL's reward_weights)
        self.reward_weights = {name: (reward_weights or {}).get(name, 1.0) for name in rewards}
        self.models = models
        self.weights = weights
        self.system2 = system2
        self.retries, self.backoff_s = retries, backoff_s
        self.grounder_cfg = grounder_cfg  # how the grounder sees keyframes (params.grounder)
        self.max_keyframes, self.max_moments = max_keyframes, max_moments
        # False: System 2 stops at the boxes (sam_j not computed), for assessments that do not
        # weigh SAM2's masks; training always segments, so that sam_j is logged
        self.segment_masks = segment_masks
        # with a_g 0, SAM2 on every Nth System-2 call only: its J is logged there, weighs nothing
        # and is most of a tiny CPU step's time (docs/training.md)
        self.sam2_every = sam2_every
        self.system2_calls = 0
        self.local_frames = local_frames  # False: System 2 is a service that reads `video`

    def total(self, rewards: Mapping[str, RewardBreakdown]) -> float:
        """A completion's total reward: its rewards weighted as GRPO weighs them."""
        return sum(self.reward_weights[name] * r.total for name, r in rewards.items())

    def score_group(self, ctx: GroupContext, completions: Sequence[str]) -> GroupScores:
        parsed = [
            parse_answer(
                c, ctx.frame_times, max_keyframes=self.max_keyframes, max_moments=self.max_moments
            )
            for c in completions
        ]
        outcomes: list[System2Outcome | None] = [None] * len(parsed)
        seconds = 0.0
        if any(needs_system2(n) for n in self.rewards) and any(p.keyframes for p in parsed):
            start = time.perf_counter()
            outcomes = self._run_system2(ctx, parsed)
            seconds = time.perf_counter() - start
        rewards = [
            {
                name: get_reward(name)(parsed=p, target=ctx.target, outcome=o, weights=self.weights)
                for name in self.rewards
            }
            for p, o in zip(parsed, outcomes, strict=True)
        ]
        return GroupScores(parsed, rewards, outcomes, seconds)

    def _run_system2(
        self, ctx: GroupContext, parsed: Sequence[ParsedAnswer]
    ) -> list[System2Outcome | None]:
        requests = [
            System2Request(
                str(i),
                tuple(
                    KeyframeRequest(ctx.source_indices[k], d)
                    for k, d in zip(p.keyframes, p.keyframe_descriptions, strict=True)
                ),
            )
            for i, p in enumerate(parsed)
            if p.keyframes
        ]
        segment = self.segment_masks and self.system2_calls % self.sam2_every == 0
        self.system2_calls += 1
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            j_sum = dict.fromkeys((r.id for r in requests), 0.0)
            frames = dict.fromkeys((r.id for r in requests), 0)

            def on_frame(frame: int, masks: dict[str, np.ndarray], j_sum=j_sum, frames=frames):
                for rid, mask in masks.items():
                    j_sum[rid] += float(jaccard(mask, ctx.gt_union[frame]))
                    frames[rid] += 1

            extra = {} if segment else {"segment_masks": False}
            if self.grounder_cfg is not None:
                extra["grounder_cfg"] = self.grounder_cfg
            try:
                local = ctx.frames is not None and self.local_frames
                results = self.system2(
                    self.models,
                    ctx.frames if local else ctx.video,
                    requests,
                    on_frame,
                    folder_fps=ctx.folder_fps,
                    **extra,
                )
                break
            except Exception as exc:  # any failure: retry, then stop the run
                last = exc
        else:
            raise System2FailedError(
                ctx.video,
                f"System 2 failed on {ctx.key} after {self.retries + 1} attempts: "
                f"{type(last).__name__}: {last}",
            )
        outcomes: list[System2Outcome | None] = [None] * len(parsed)
        for r in results:
            boxes = [k.boxes for k in r.keyframes]
            has_box = any(boxes)
            sam_j = j_sum[r.id] / frames[r.id] if has_box and frames[r.id] else None
            outcomes[int(r.id)] = System2Outcome(boxes=boxes, sam_j=sam_j)
        return outcomes


def engine_from_params(
    params,
    models,
    *,
    system2_url: str | None = None,
    system2_root: str | Path | None = None,
    segment_masks: bool = True,
) -> RewardEngine:
    """The recipe's RewardEngine (params.yaml rewards and system1); System 2 in process, or
    the service at `system2_url` (token from OMNIR1_SYSTEM2_TOKEN; `system2_root` is the
    local mount of the service's data root)."""
    check_reward_names(params.rewards.names)
    system2 = run_system2
    if system2_url is not None:
        from omnir1.service.client import System2Client

        system2 = System2Client(system2_url, data_root=system2_root).run_system2
    s1 = params.system1
    return RewardEngine(
        params.rewards.names,
        models,
        weights=params.rewards.video_accuracy,
        reward_weights=params.rewards.weights,
        system2=system2,
        retries=params.rewards.system2_retries,
        max_keyframes=s1.max_keyframes,
        max_moments=s1.max_moments,
        segment_masks=segment_masks,
        local_frames=system2_url is None,
        grounder_cfg=params.grounder,
        sam2_every=params.rewards.sam2_every,
    )
