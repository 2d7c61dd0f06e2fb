"""GRPO rewards of System 1, computed from its parsed answer and what System 2 made of it.

System 1 writes moments (JSON objects with start_time, end_time, description); the valid ones
cover frames, the lowest `max_keyframes` covered frames are the keyframes, System 2 grounds each
keyframe's description into boxes and SAM2 propagates them into masks.

format = 1 if the completion is "<think>..</think><answer>..</answer>" else 0.

video accuracy = cumulated + a_k * (frame + overlap) + a_k_ratio * saliency + a_a * box_iou
                 + object_num_mismatch + a_g * sam_j
- cumulated: per JSON object of the answer (every one: an answer of more than
  `system1.max_moments` objects is read as none), 0.2 for being there, +0.2 if start, end and
  description all parse, +0.2 if the moment is valid (start <= end <= duration), + (valid ones
  only) the fraction of (GT object, covered frame) pairs whose GT mask is non-empty; averaged
  over the objects.
- frame: n unique frames covered by valid moments; 0.4 n if n <= 4 else 0.4 (7 - n).
- overlap: -0.2 (len(frames) - 1) per valid moment, -0.5 per duplicated frame.
- saliency: mean over keyframes of GT union area / the largest GT union area of the video.
- box_iou: the Hungarian-matched IoU of every (GT object, keyframe) pair that has a GT box,
  pooled (0 for a GT box left unmatched): sum of matched IoUs over all keyframes / number of GT
  boxes on them, as the released code averages its matched-IoU matrix.
- object_num_mismatch: sum over keyframes of -0.5 max(0, n_pred - n_gt_objects), divided by
  max(n_gt_objects, 1) * number of keyframes.
- sam_j: mean J of System 2's propagated masks (computed by the caller).
Gating: no `<answer>...</answer>` pair, or an answer read only in part (over `max_chars` or
`max_moments`) -> 0, as the released code extracts the answer between the tags first; no JSON
object -> 0; no valid moment -> cumulated only; no valid predicted box (or a_g == 0) -> the
SAM2 term is skipped. Optional clipping: when the weighted sum of every term but
cumulated is <= 0, the reward is cumulated.

Deliberate differences from the released code, each for a reason:
- Each term stands on its own, as in the paper's R = a_K R_K + a_A R_A + a_G R_G. The released
  code drops box_iou, saliency and the mismatch penalty whenever SAM2 is skipped; here a term
  that cannot be computed contributes 0 (and is reported as None) without taking the others
  with it, so a group where SAM2 fails still ranks completions by their boxes.
- Predicted boxes are clipped to the image and boxes without area are dropped (the parser's
  `parse_boxes`): the released code scores a box outside the frame with its raw coordinates.
- Times are read against the frames' real sample times (the released code assumes 2 fps).

RefAVS box reward = IoU of System 2's first box on frame 0 with frame 0's GT box (0 if either is
missing).

Every reward takes the keyword arguments `parsed`, `target`, `outcome`, `weights` and ignores
those it does not need, so a recipe can call any of them by name through `get_reward`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from omnir1.config import VideoAccuracyParams
from omnir1.data.masks import mask_box
from omnir1.errors import ConfigError
from omnir1.systems.parsing import ParsedAnswer

Box = list[float]  # [x0, y0, x1, y1] in pixels

# Reason codes of the parser that mean a field of the moment did not parse.
_UNPARSED = frozenset({"bad_start_time", "bad_end_time", "bad_description"})
# Parser codes that mean the answer was read only in part: no video accuracy, so that a longer
# answer can never escape the penalties its unread objects would earn.
_UNREAD = frozenset({"too_long", "too_many_moments"})
VIDEO_ACCURACY_TERMS = (
    "cumulated",
    "frame",
    "overlap",
    "saliency",
    "box_iou",
    "object_num_mismatch",
    "sam_j",
)


@dataclass(frozen=True)
class RewardTarget:
    """The ground truth of one expression on System 1's T frames, reduced to what rewards need.

    `object_areas[f][o]` is the pixel count of object o's GT mask on frame f (0: absent); every
    frame lists the same objects. `union_areas[f]` is the pixel count of their union.
    `gt_boxes[f]` holds the boxes of the objects visible on frame f, in object order.
    """

    num_frames: int
    object_areas: list[list[int]]
    union_areas: list[int]
    gt_boxes: list[list[Box]]

    def __post_init__(self) -> None:
        if isinstance(self.num_frames, bool) or not isinstance(self.num_frames, int):
            raise ValueError(f"num_frames must be an integer, got {self.num_frames!r}")
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        for name in ("object_areas", "union_areas", "gt_boxes"):
            if len(getattr(self, name)) != self.num_frames:
                raise ValueError(
                    f"{name} has {len(getattr(self, name))} frames, expected {self.num_frames}"
                )
        if len({len(row) for row in self.object_areas}) > 1:
            raise ValueError("object_areas must list the same number of objects on every frame")

    @property
    def num_objects(self) -> int:
        """GT objects of the expression."""
        return len(self.object_areas[0])

    @classmethod
    def from_masks(cls, masks: Sequence[np.ndarray]) -> RewardTarget:
        """From per-frame (num_objects, H, W) boolean GT masks."""
        if len(masks) == 0:
            raise ValueError("masks must hold at least one frame")
        object_areas: list[list[int]] = []
        union_areas: list[int] = []
        gt_boxes: list[list[Box]] = []
        for index, raw in enumerate(masks):
            frame = np.asarray(raw, dtype=bool)
            if frame.ndim != 3:
                raise ValueError(
                    f"frame {index}: expected (num_objects, H, W) masks, got shape {frame.shape}"
                )
            object_areas.append([int(m.sum()) for m in frame])
            union_areas.append(int(frame.any(axis=0).sum()) if len(frame) else 0)
            boxes = (mask_box(m) for m in frame)
            gt_boxes.append([[float(v) for v in box] for box in boxes if box is not None])
        return cls(len(masks), object_areas, union_areas, gt_boxes)


@dataclass
class System2Outcome:
    """What System 2 made of the keyframes: the boxes it predicted on each keyframe (in keyframe
    order, in the pixel space of the GT boxes) and the J of its propagated masks (None when SAM2
    was skipped or failed)."""

    boxes: list[list[Box]]
    sam_j: float | None = None

    def __post_init__(self) -> None:
        if self.sam_j is not None and not 0.0 <= self.sam_j <= 1.0:  # NaN fails this too
            raise ValueError(f"sam_j must be in [0, 1] or None, got {self.sam_j!r}")


@dataclass
class RewardBreakdown:
    """A reward: its total, every term by name (unweighted; None when not computed, gated or
    skipped) and notes saying why terms are missing."""

    total: float
    components: dict[str, float | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- boxes ------------------------------------------------------------------------------------


def _valid_box(box: Any) -> bool:
    """Four finite numbers with positive width and height."""
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        return False
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in box):
        return False
    if not all(math.isfinite(v) for v in box):
        return False
    return box[2] > box[0] and box[3] > box[1]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two [x0, y0, x1, y1] boxes; 0 when either has no area (or is not finite)."""
    if not (_valid_box(a) and _valid_box(b)):
        return 0.0
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, iw) * max(0.0, ih)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def matched_box_iou(pred: Sequence[Sequence[float]], gt: Sequence[Sequence[float]]) -> float:
    """Sum of IoUs of the one-to-one matching of predicted to GT boxes that maximises it
    (Hungarian: a greedy pick of the best pair can block a better total), over len(gt).

    Extra predictions are unmatched rather than penalised here (the mismatch term does that).
    Raises ValueError when `gt` is empty: the score is undefined there and callers skip it."""
    if len(gt) == 0:
        raise ValueError("matched_box_iou needs at least one GT box")
    if len(pred) == 0:
        return 0.0
    ious = np.array([[box_iou(p, g) for g in gt] for p in pred], dtype=float)
    rows, cols = linear_sum_assignment(ious, maximize=True)
    return float(ious[rows, cols].sum()) / len(gt)


# --- rewards ----------------------------------------------------------------------------------


def format_reward(parsed: ParsedAnswer, **_: Any) -> RewardBreakdown:
    """1.0 when the completion is <think>..</think><answer>..</answer>, else 0.0."""
    value = 1.0 if parsed.format_ok else 0.0
    return RewardBreakdown(total=value, components={"format": value})


def video_accuracy_reward(
    parsed: ParsedAnswer,
    target: RewardTarget,
    outcome: System2Outcome | None,
    weights: VideoAccuracyParams | None = None,
    **_: Any,
) -> RewardBreakdown:
    """The video accuracy reward (see the module docstring). `outcome` None means System 2 did
    not run: its terms are reported as None. Raises ValueError when `target` or `outcome` do not
    fit `parsed` (a covered frame beyond the target, a box list per keyframe missing)."""
    weights = weights or VideoAccuracyParams()
    components: dict[str, float | None] = dict.fromkeys(VIDEO_ACCURACY_TERMS)
    notes: list[str] = []
    moments = parsed.moments
    if not parsed.answer_found:
        components["cumulated"] = 0.0
        return RewardBreakdown(0.0, components, ["gated: no <answer>...</answer> pair"])
    unread = _UNREAD.intersection(parsed.problems)
    if unread:
        components["cumulated"] = 0.0
        return RewardBreakdown(0.0, components, [f"gated: answer read in part ({min(unread)})"])
    if parsed.num_objects == 0 or not moments:
        components["cumulated"] = 0.0
        return RewardBreakdown(0.0, components, ["gated: no JSON object"])

    valid = [m for m in moments if m.valid]
    covered = sorted({f for m in valid for f in m.frames})
    if covered and covered[-1] >= target.num_frames:
        raise ValueError(
            f"answer covers frame {covered[-1]} but the target has {target.num_frames} frames"
        )

    cumulated = 0.0
    for moment in moments:
        cumulated += 0.2
        if not _UNPARSED.intersection(moment.problems):
            cumulated += 0.2
        if moment.valid:
            cumulated += 0.2 + _visible_fraction(moment.frames, target)
    cumulated /= len(moments)
    components["cumulated"] = cumulated
    if not valid:
        notes.append("gated: no valid interval")
        return RewardBreakdown(cumulated, components, notes)

    n = len(covered)
    components["frame"] = 0.4 * n if n <= 4 else 0.4 * (7 - n)
    components["overlap"] = (
        sum(-0.2 * (len(m.frames) - 1) for m in valid) - 0.5 * parsed.duplicate_frames
    )

    keyframes = parsed.keyframes
    if keyframes:
        components["saliency"] = _saliency(keyframes, target)
    else:  # only when max_keyframes was 0
        notes.append("no keyframe: saliency, box_iou and object_num_mismatch not computed")

    pred_boxes = _keyframe_boxes(keyframes, outcome, notes)
    if pred_boxes is not None and keyframes:
        matched, gt_count = 0.0, 0
        for frame, pred in zip(keyframes, pred_boxes, strict=True):
            gt = target.gt_boxes[frame]
            if gt:  # pooled over (GT object, keyframe) pairs
                matched += matched_box_iou(pred, gt) * len(gt)
                gt_count += len(gt)
        if gt_count:
            components["box_iou"] = matched / gt_count
        else:
            notes.append("box_iou not computed: no GT box on any keyframe")
        n_gt = target.num_objects
        excess = sum(max(0, len(pred) - n_gt) for pred in pred_boxes)
        components["object_num_mismatch"] = -0.5 * excess / (max(n_gt, 1) * len(keyframes))

    if weights.a_g == 0:
        notes.append("sam2 skipped: a_g is 0")
    elif pred_boxes is None or not any(pred_boxes):
        notes.append("sam2 skipped: no valid box")
    elif outcome is None or outcome.sam_j is None:
        notes.append("sam2 skipped: no J (SAM2 not run or failed)")
    else:
        components["sam_j"] = outcome.sam_j

    def term(name: str) -> float:
        value = components[name]
        return 0.0 if value is None else value

    rest = (
        weights.a_k * (term("frame") + term("overlap"))
        + weights.a_k_ratio * term("saliency")
        + weights.a_a * term("box_iou")
        + term("object_num_mismatch")
        + weights.a_g * term("sam_j")
    )
    if weights.clip_to_cumulated and rest <= 0:
        notes.append("clipped to cumulated")
        return RewardBreakdown(cumulated, components, notes)
    return RewardBreakdown(cumulated + rest, components, notes)


def refavs_box_reward(
    outcome: System2Outcome | None, target: RewardTarget, **_: Any
) -> RewardBreakdown:
    """IoU of System 2's first box on frame 0 (`outcome.boxes[0]`: the caller asks about frame 0
    only) with the first GT box of frame 0; 0.0 when either is missing."""
    pred = outcome.boxes[0] if outcome is not None and outcome.boxes else []
    gt = target.gt_boxes[0]
    notes = []
    if not pred:
        notes.append("no predicted box on frame 0")
    if not gt:
        notes.append("no GT box on frame 0")
    if notes:
        return RewardBreakdown(0.0, {"box_iou": None}, notes)
    value = box_iou(pred[0], gt[0])
    return RewardBreakdown(value, {"box_iou": value})


# --- helpers ----------------------------------------------------------------------------------


def _visible_fraction(frames: list[int], target: RewardTarget) -> float:
    """Fraction of (GT object, frame) pairs over `frames` where the object's mask is non-empty:
    rewards moments placed where the target can be seen."""
    n_objects = target.num_objects
    if n_objects == 0 or not frames:
        return 0.0
    visible = sum(1 for f in frames for area in target.object_areas[f] if area > 0)
    return visible / (n_objects * len(frames))


def _saliency(keyframes: list[int], target: RewardTarget) -> float:
    """Mean over keyframes of the GT union area relative to the video's largest one."""
    largest = max(target.union_areas)
    if largest <= 0:
        return 0.0
    return sum(target.union_areas[f] / largest for f in keyframes) / len(keyframes)


def _keyframe_boxes(
    keyframes: list[int], outcome: System2Outcome | None, notes: list[str]
) -> list[list[Box]] | None:
    """The valid predicted boxes of each keyframe, or None when System 2 did not run. Invalid
    boxes (no area, not finite) are dropped so they neither match nor count as objects."""
    if outcome is None:
        notes.append("system2 not run: box_iou and object_num_mismatch not computed")
        return None
    if len(outcome.boxes) != len(keyframes):
        raise ValueError(
            f"outcome has boxes for {len(outcome.boxes)} keyframes, the answer has {len(keyframes)}"
        )
    kept = [[list(map(float, b)) for b in boxes if _valid_box(b)] for boxes in outcome.boxes]
    dropped = sum(len(boxes) for boxes in outcome.boxes) - sum(len(b) for b in kept)
    if dropped:
        notes.append(f"dropped {dropped} invalid predicted box(es)")
    return kept


REWARDS: dict[str, Callable[..., RewardBreakdown]] = {
    "format": format_reward,
    "video_accuracy": video_accuracy_reward,
    "refavs_box": refavs_box_reward,
}
_NEEDS_SYSTEM2 = frozenset({"video_accuracy", "refavs_box"})


def check_reward_names(names: Sequence[str], source=None) -> None:
    """params.yaml `rewards.names` must name registered rewards: a ConfigError naming the file
    and the field lists the valid ones (checked before anything loads or trains)."""
    unknown = [n for n in names if n not in REWARDS]
    if unknown:
        raise ConfigError(
            source, f"unknown reward(s) {unknown}; valid: {sorted(REWARDS)}", "rewards.names"
        )


def get_reward(name: str) -> Callable[..., RewardBreakdown]:
    """The reward called `name`; ValueError listing the valid names otherwise."""
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; valid names: {', '.join(sorted(REWARDS))}")
    return REWARDS[name]


def needs_system2(name: str) -> bool:
    """Whether the reward needs System 2's outcome (boxes, SAM2 J)."""
    get_reward(name)  # unknown names fail the same way everywhere
    return name in _NEEDS_SYSTEM2
