"""Drawing masks on frames, for reports and overlay videos."""

from __future__ import annotations

import numpy as np

MASK_COLOR = np.array([230, 40, 40], np.float32)  # predictions: red
MASK_ALPHA = 0.45


def tint(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A copy of an RGB uint8 frame with `mask` tinted. Only the masked pixels are blended:
    whole-frame float maths would be most of the cost of an overlay video."""
    out = np.array(image, dtype=np.uint8)
    out[mask] = ((1 - MASK_ALPHA) * out[mask] + MASK_ALPHA * MASK_COLOR).astype(np.uint8)
    return out
