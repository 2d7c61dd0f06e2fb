"""Small pure functions on binary masks."""

from __future__ import annotations

import numpy as np


def mask_box(mask: np.ndarray) -> list[int] | None:
    """Tight [x0, y0, x1, y1] box of a (H, W) mask, inclusive-exclusive; None when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]


def union(masks: np.ndarray) -> np.ndarray:
    """Union over the object axis of (N, H, W) masks (all background when N == 0)."""
    return masks.any(axis=0)
