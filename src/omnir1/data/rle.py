"""COCO run-length encoding of binary masks.

Encoding uses pycocotools (trusted input: our own masks). Decoding is done here, in numpy, so
that RLE read from an annotation file is validated (alphabet, run lengths, total size) and a
bad entry becomes a DataError naming the file and field instead of garbage or a native crash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from omnir1.errors import DataError


def encode(mask: np.ndarray) -> dict:
    """Compressed COCO RLE ({"size": [h, w], "counts": str}) of a (H, W) boolean mask."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {
        "size": [int(rle["size"][0]), int(rle["size"][1])],
        "counts": rle["counts"].decode("ascii"),
    }


def _counts_from_string(s: str) -> list[int]:
    """Invert the LEB128-like, delta-coded string form of COCO's maskApi (rleFrString)."""
    counts: list[int] = []
    p, n = 0, len(s)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise ValueError("string ends inside a run length")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {s[p]!r} at position {p} is outside the RLE alphabet")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def decode(rle: Any, *, source: str | Path | None = None, field: str | None = None) -> np.ndarray:
    """Decode a COCO RLE (compressed string or uncompressed list counts) to a (H, W) bool mask."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise DataError(source, "RLE must be an object with 'size' and 'counts'", field)
    size = rle["size"]
    if (
        not isinstance(size, list | tuple)
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in size)
    ):
        raise DataError(
            source, f"RLE size must be [height, width] of non-negative ints, got {size!r}", field
        )
    h, w = size
    raw = rle["counts"]
    try:
        if isinstance(raw, bytes):
            raw = raw.decode("ascii")
        if isinstance(raw, str):
            counts = _counts_from_string(raw)
        elif isinstance(raw, list) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in raw
        ):
            counts = list(raw)
        else:
            raise ValueError(f"counts must be a string or a list of ints, got {type(raw).__name__}")
        if any(c < 0 for c in counts):
            raise ValueError("negative run length")
        if sum(counts) != h * w:
            raise ValueError(f"run lengths sum to {sum(counts)}, expected {h}x{w}={h * w}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(source, f"RLE does not decode: {exc}", field) from None
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True  # runs alternate, starting with background
    flat = np.repeat(values, counts)
    return flat.reshape(w, h).T  # COCO RLE is column-major
