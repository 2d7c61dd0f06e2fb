"""The benchmark protocols' formulas and aggregation, on hand-made numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from omnir1.benchmarks.mevis import summarize_mevis
from omnir1.benchmarks.refavs import summarize_refavs
from omnir1.benchmarks.revos import summarize_revos
from omnir1.eval.scoring import (
    ExpressionScore,
    RefAVSFrameStats,
    refavs_frame_f_curve,
    refavs_frame_iou,
    resize_for_refavs,
)


def score(**kw) -> ExpressionScore:
    base = dict(
        dataset="revos",
        split="valid",
        video_id="v",
        expression_id="0",
        expression="x",
        expression_type="referring",
        type_id=0,
        num_objects=1,
        num_frames=2,
        missing_frames=0,
        prediction_empty=False,
        J=0.0,
        F=0.0,
        JF=0.0,
        A=1.0,
        R=1.0,
        frame_j=[0.0, 0.0],
        frame_f=[0.0, 0.0],
    )
    base.update(kw)
    if "JF" not in kw:
        base["JF"] = (base["J"] + base["F"]) / 2
    return ExpressionScore(**base)


# ------------------------------------------------------------------------ RefAVS formulas


def test_refavs_iou_hand_cases():
    gt = np.zeros((4, 4), bool)
    pred = np.zeros((4, 4), bool)
    pred[0, :] = True
    # empty ground truth: true negatives over all pixels
    assert refavs_frame_iou(pred, gt) == pytest.approx(12 / 16)
    assert refavs_frame_iou(gt, gt) == pytest.approx(1.0)
    gt[0, :2] = gt[1, :2] = True
    # 2 of 4 predicted pixels hit 4 ground-truth pixels: 2 / 6
    assert refavs_frame_iou(pred, gt) == pytest.approx(2 / 6)


def test_refavs_f_curve_hand_case():
    gt = np.zeros((4, 4), bool)
    gt[:2, :2] = True
    f0, f1 = refavs_frame_f_curve(gt, gt)
    # threshold 0 predicts everything: precision 4/16, recall 1
    assert f0 == pytest.approx(1.3 * 0.25 / (0.3 * 0.25 + 1))
    assert f1 == pytest.approx(1.0)
    assert refavs_frame_f_curve(np.zeros_like(gt), gt)[1] == 0.0  # NaN -> 0 in the official code


def official_max_f(probabilities: list[np.ndarray], gts: list[np.ndarray]) -> float:
    """The official saliency max-F restated: 255 thresholds, F per frame with foreground,
    mean curve over those frames, its maximum (0 when no frame has foreground)."""
    thresholds = np.linspace(0, 1 - 1e-10, 255)
    curves = []
    for p, g in zip(probabilities, gts, strict=True):
        if g.mean() == 0:
            continue
        curve = []
        for th in thresholds:
            y = p >= th
            tp = np.count_nonzero(y & g)
            prec, rec = tp / (y.sum() + 1e-20), tp / (g.sum() + 1e-20)
            with np.errstate(invalid="ignore"):
                f = 1.3 * prec * rec / (0.3 * prec + rec)
            curve.append(0.0 if math.isnan(f) else f)
        curves.append(curve)
    return float(np.max(np.mean(curves, axis=0))) if curves else 0.0


def test_two_value_curve_equals_the_255_threshold_curve_for_binary_masks():
    rng = np.random.default_rng(0)
    preds = [rng.random((9, 11)) < q for q in (0.1, 0.5, 0.0, 0.9)]
    gts = [rng.random((9, 11)) < q for q in (0.3, 0.0, 0.4, 0.2)]
    curves = [refavs_frame_f_curve(p, g) for p, g in zip(preds, gts, strict=True) if g.any()]
    ours = float(np.max(np.mean(curves, axis=0)))
    expected = official_max_f([p.astype(float) for p in preds], gts)
    assert ours == pytest.approx(expected, abs=1e-12)


def test_binary_masks_are_not_logits():
    # The official code applies a sigmoid: a binary mask fed as logits becomes 0.5 / 0.73, and
    # at the 0.4 threshold every background pixel counts as foreground. Ours scores the empty
    # prediction of an empty frame as perfect.
    empty = np.zeros((8, 8), bool)
    sigmoid = 1 / (1 + np.exp(-empty.astype(float)))
    assert (sigmoid > 0.4).all()  # the trap
    assert refavs_frame_iou(empty, empty) == pytest.approx(1.0)


def test_resize_matches_the_official_gt_preprocessing(tmp_path):
    import cv2
    from PIL import Image

    rng = np.random.default_rng(1)
    mask = np.zeros((181, 333), bool)
    mask[40:120, 50:270] = True
    mask &= rng.random(mask.shape) < 0.9  # ragged edges
    path = tmp_path / "00000.png"
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)
    official = cv2.cvtColor(cv2.resize(cv2.imread(str(path)), (256, 256)), cv2.COLOR_BGR2GRAY) > 0
    np.testing.assert_array_equal(resize_for_refavs(mask), official)


# ------------------------------------------------------------------------------ aggregation


def refavs_score(split: str, index: int, iou, f_curve, pred_pixels=0, pixels=100, **kw):
    stats = RefAVSFrameStats(
        iou=list(iou), f_curve=list(f_curve), pred_pixels=pred_pixels, pixels=pixels
    )
    return score(dataset="refavs", split=split, index=index, refavs=stats, R=None, **kw)


def test_refavs_official_batches_vs_pooled():
    # 5 expressions: the official loop makes batches [0..3] and [4] and averages batch scores
    scores = [refavs_score("test_s", i, [1.0, 1.0], [(0.3, 1.0)]) for i in range(4)]
    scores.append(refavs_score("test_s", 4, [0.0, 0.0], []))
    scores.reverse()  # aggregation follows the data-set index, not arrival order
    seen = summarize_refavs(scores)["seen"]
    assert seen["official"] == {"mIoU": 0.5, "F": 0.5, "batches": 2}
    assert seen["pooled"] == {"mIoU": pytest.approx(0.8), "F": 1.0}
    assert seen["expressions"] == 5


def test_refavs_null_split_reports_s():
    scores = [
        refavs_score("test_n", 0, [1.0], [], pred_pixels=0, pixels=100, num_objects=0),
        refavs_score("test_n", 1, [0.5], [], pred_pixels=25, pixels=100, num_objects=0),
    ]
    scores[0].prediction_empty = True
    null = summarize_refavs(scores)["null"]
    assert null["official"] == {"S": pytest.approx(math.sqrt(25 / 200)), "batches": 1}
    assert null["pooled"] == {"S": pytest.approx(math.sqrt(25 / 200))}
    assert null["empty_prediction_rate"] == 0.5


def test_revos_overall_is_the_mean_of_subset_means():
    scores = [
        score(type_id=0, J=1.0, F=1.0, R=1.0),
        score(type_id=0, J=0.5, F=0.5, R=0.5, num_objects=2),
        score(type_id=1, J=0.0, F=0.0, R=0.0, expression_type="reasoning"),
    ]
    out = summarize_revos(scores)
    assert out["referring"]["JF"] == 0.75
    assert out["reasoning"]["JF"] == 0.0
    assert out["overall"]["JF"] == 0.375  # not the pooled 0.5
    assert out["overall"]["R"] == 0.375
    assert out["overall"]["expressions"] == 3
    assert out["by_objects"]["single_object"]["expressions"] == 2
    assert out["by_objects"]["multi_object"]["JF"] == 0.5


def test_mevis_overall_is_the_mean_over_expressions():
    scores = [score(J=1.0, F=0.5), score(J=0.0, F=0.5), score(J=0.5, F=0.5, num_objects=0)]
    out = summarize_mevis(scores)
    assert out["overall"]["J"] == 0.5
    assert out["overall"]["JF"] == 0.5
    assert out["by_objects"]["null"]["expressions"] == 1
