"""Straightforward implementations of the DAVIS-2017 J and F definitions.

They follow the toolkit's own steps (whole-frame boundary maps, dilation with a disk
structuring element, pixel counting) and serve as the yardstick that the fast metrics in
`omnir1.eval.metrics` are tested and benchmarked against. Not used for scoring.

`boundary_f_reference` dilates with scipy (plain and obviously right); `boundary_f_toolkit`
dilates with OpenCV on uint8 frames exactly as the DAVIS-2017 toolkit does, so the benchmark
can time the toolkit's own method on this machine.
"""

from __future__ import annotations

import numpy as np

from omnir1.eval.metrics import boundary_radius, seg2bmap


def disk(radius: int) -> np.ndarray:
    span = np.arange(-radius, radius + 1)
    x, y = np.meshgrid(span, span)
    return x * x + y * y <= radius * radius


def jaccard_reference(pred: np.ndarray, gt: np.ndarray) -> float:
    pred, gt = pred.astype(bool), gt.astype(bool)
    union = np.sum(pred | gt)
    return 1.0 if union == 0 else float(np.sum(pred & gt) / union)


def _scipy_dilate(boundary: np.ndarray, structure: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_dilation

    return binary_dilation(boundary, structure=structure)


def _cv2_dilate(boundary: np.ndarray, structure: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.dilate(boundary.astype(np.uint8), structure.astype(np.uint8)).astype(bool)


def boundary_f_reference(
    pred: np.ndarray, gt: np.ndarray, bound_th: float = 0.008, *, dilate=_scipy_dilate
) -> float:
    radius = boundary_radius(pred.shape, bound_th)
    fg_boundary = seg2bmap(pred.astype(bool))
    gt_boundary = seg2bmap(gt.astype(bool))
    structure = disk(radius)
    fg_dil = dilate(fg_boundary, structure)
    gt_dil = dilate(gt_boundary, structure)
    n_fg, n_gt = fg_boundary.sum(), gt_boundary.sum()
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = np.sum(fg_boundary & gt_dil) / n_fg
        recall = np.sum(gt_boundary & fg_dil) / n_gt
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def boundary_f_toolkit(pred: np.ndarray, gt: np.ndarray, bound_th: float = 0.008) -> float:
    """The DAVIS-2017 toolkit's method: OpenCV dilation of whole uint8 boundary maps."""
    return boundary_f_reference(pred, gt, bound_th, dilate=_cv2_dilate)
