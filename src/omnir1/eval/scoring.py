"""Scores of one expression: every frame of its video, ground truth vs prediction.

Per frame (docs/design.md §4): J and F at native resolution with the objects of the expression
unioned, pixel accuracy A, and for ReVOS the robustness term max(1 - FP / |FG|, 0) with FG all
annotated objects of the video (the official script divides by |FG| + 1e-6). For RefAVS also
the statistics its official protocol needs at 256x256 (see `omnir1.eval.protocols`), so that
batches and pooled figures can be formed afterwards from per-frame numbers.

Null expressions (no referent) are scored frame by frame like any other, as the official ReVOS
and MeViS code does (an empty prediction on an empty frame is J = F = 1, any foreground 0), and
averaged over frames. The stricter all-or-nothing rule (1 only when every frame is predicted
empty) is a figure of its own, `N_acc` (MeViS v2's no-target accuracy), None for expressions
with a referent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from omnir1.data.records import Sample
from omnir1.eval.metrics import boundary_f, jaccard
from omnir1.eval.predictions import expression_dir, frame_file, read_mask_png

REFAVS_SIZE = 256
R_EPS = 1e-6  # as in the official ReVOS script
IOU_EPS = 1e-7  # as in the official RefAVS mask_iou
PR_EPS = 1e-20  # as in the official RefAVS _eval_pr
BETA2 = 0.3
OFFICIAL_PNG_VALUE = 255  # the foreground value of VISA's prediction PNGs (official_png)


@dataclass
class RefAVSFrameStats:
    """Per-frame numbers of the official RefAVS protocol (masks resized to 256x256)."""

    iou: list[float] = field(default_factory=list)  # mIoU term of every frame
    # (F at threshold 0, F at every other threshold) of frames with foreground. A binary mask
    # used as probabilities is >= t for t = 0 everywhere and for t > 0 on its foreground only,
    # so the 255-threshold curve takes just these two values.
    f_curve: list[tuple[float, float]] = field(default_factory=list)
    pred_pixels: int = 0  # predicted foreground pixels (probability > 0.5), for S
    pixels: int = 0


@dataclass
class ExpressionScore:
    dataset: str
    split: str
    video_id: str
    expression_id: str
    expression: str
    expression_type: str
    type_id: int | None
    num_objects: int
    num_frames: int
    missing_frames: int  # frames without a prediction file (scored as empty masks)
    prediction_empty: bool  # no foreground on any frame
    J: float
    F: float
    JF: float
    A: float
    R: float | None  # ReVOS only
    frame_j: list[float]
    frame_f: list[float]
    refavs: RefAVSFrameStats | None = None
    # no-target accuracy of a null expression: 1 when every frame is predicted empty (None for
    # expressions with a referent)
    N_acc: float | None = None
    index: int = 0  # position in the data set's order (RefAVS batches follow it)

    @property
    def missing(self) -> bool:
        return self.missing_frames == self.num_frames

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ExpressionScore:
        d = dict(d)
        if d.get("refavs") is not None:
            stats = dict(d["refavs"])
            stats["f_curve"] = [tuple(x) for x in stats["f_curve"]]
            d["refavs"] = RefAVSFrameStats(**stats)
        return cls(**d)


def resize_for_refavs(mask: np.ndarray) -> np.ndarray:
    """The official RefAVS preprocessing of a binary mask: 0/255 image, cv2 INTER_LINEAR
    resize to 256x256, then > 0."""
    import cv2

    img = mask.astype(np.uint8) * 255
    return cv2.resize(img, (REFAVS_SIZE, REFAVS_SIZE), interpolation=cv2.INTER_LINEAR) > 0


def refavs_frame_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Official mIoU term: on a frame without ground-truth foreground the true negatives over
    all pixels, else intersection over union (eps 1e-7 in the denominator)."""
    if not gt.any():
        return (gt.size - np.count_nonzero(pred)) / (gt.size + IOU_EPS)
    inter = np.count_nonzero(pred & gt)
    return inter / (np.count_nonzero(pred | gt) + IOU_EPS)


def _f_beta(precision: float, recall: float) -> float:
    denom = BETA2 * precision + recall
    return 0.0 if denom == 0 else (1 + BETA2) * precision * recall / denom


def refavs_frame_f_curve(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """(F at threshold 0, F at thresholds > 0) of a frame with foreground (see RefAVSFrameStats)."""
    n_gt, n_pred = np.count_nonzero(gt), np.count_nonzero(pred)
    f0 = _f_beta(n_gt / (gt.size + PR_EPS), n_gt / (n_gt + PR_EPS))
    tp = np.count_nonzero(pred & gt)
    f1 = _f_beta(tp / (n_pred + PR_EPS), tp / (n_gt + PR_EPS))
    return f0, f1


def official_false_positives(objects: np.ndarray, pred: np.ndarray) -> int:
    """The official ReVOS script's false-positive term, ((1 - gt) * pred).sum(), in its uint8
    arithmetic: gt is the sum of the expression's object masks (2 where two overlap) and pred
    VISA's 0/255 PNG, so a predicted background pixel weighs 255, a predicted pixel covered by
    one object 0 and one covered by g >= 2 objects g - 1 (the product wraps modulo 256)."""
    if not pred.any():
        return 0
    covered = (
        objects.sum(axis=0, dtype=np.int64)[pred] % 256
        if len(objects)
        else np.zeros(np.count_nonzero(pred), np.int64)
    )
    return int(((1 - covered) * OFFICIAL_PNG_VALUE % 256).sum())


def score_expression(
    sample: Sample,
    pred_root: Path,
    benchmark,
    *,
    foreground_count: Callable[[int], int] | None = None,
    index: int = 0,
    official_png: bool = False,
) -> ExpressionScore:
    """Score one expression of `benchmark` (omnir1.benchmarks: its prediction layout, whether
    its protocol needs the official per-frame statistics). `foreground_count(t)`: pixels of all
    annotated objects of the video in frame t (ReVOS R); `index`: the expression's position in
    the data set. `official_png`: A and R as the official ReVOS script computes them from the
    0/255 PNG values VISA writes (A counts only pixels both call background; R is
    max(1 - 255 FP / |FG|, 0), with `official_false_positives`' weights where objects
    overlap), and an expression with any prediction missing scored J = F = A =
    R = 0, so that figures match published tables."""
    height, width = sample.frame_size()
    folder = expression_dir(sample, pred_root, benchmark)
    frame_j, frame_f, frame_a, frame_r = [], [], [], []
    refavs = RefAVSFrameStats() if benchmark.official_frame_stats else None
    missing, any_pred = 0, False
    for t, objects in enumerate(sample.masks()):
        gt = objects.any(axis=0) if len(objects) else np.zeros((height, width), bool)
        pred = read_mask_png(frame_file(sample, folder, t, benchmark), (height, width))
        if pred is None:
            missing += 1
            pred = np.zeros((height, width), bool)
        any_pred = any_pred or bool(pred.any())
        frame_j.append(float(jaccard(pred, gt)))
        frame_f.append(float(boundary_f(pred, gt)))
        # 0/255 predictions against 0/1 ground truth agree only where both are background
        agree = np.count_nonzero(~pred & ~gt) if official_png else np.count_nonzero(pred == gt)
        frame_a.append(float(agree / pred.size))
        if foreground_count is not None:
            if official_png:
                false_pos = official_false_positives(objects, pred)
            else:
                false_pos = np.count_nonzero(pred & ~gt)
            frame_r.append(max(1.0 - false_pos / (foreground_count(t) + R_EPS), 0.0))
        if refavs is not None:
            p256, g256 = resize_for_refavs(pred), resize_for_refavs(gt)
            refavs.iou.append(float(refavs_frame_iou(p256, g256)))
            if g256.any():
                refavs.f_curve.append(refavs_frame_f_curve(p256, g256))
            refavs.pred_pixels += int(np.count_nonzero(p256))
            refavs.pixels += p256.size
    j, f = float(np.mean(frame_j)), float(np.mean(frame_f))
    a, r = float(np.mean(frame_a)), float(np.mean(frame_r)) if frame_r else None
    if official_png and missing:  # the official script scores the expression [0, 0, 0, 0]
        j = f = a = 0.0
        r = None if r is None else 0.0
    return ExpressionScore(
        dataset=sample.dataset,
        split=sample.split,
        video_id=sample.video_id,
        expression_id=sample.expression_id,
        expression=sample.expression,
        expression_type=sample.expression_type,
        type_id=sample.type_id,
        num_objects=len(sample.object_ids),
        num_frames=sample.num_frames,
        missing_frames=missing,
        prediction_empty=not any_pred,
        J=j,
        F=f,
        JF=(j + f) / 2,
        A=a,
        R=r,
        N_acc=(0.0 if any_pred else 1.0) if sample.is_null else None,
        frame_j=frame_j,
        frame_f=frame_f,
        refavs=refavs,
        index=index,
    )
