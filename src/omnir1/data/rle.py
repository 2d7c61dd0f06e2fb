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
from omnir1.media.video import MAX_FRAME_PIXELS


def encode(mask: np.ndarray) -> dict:
    """Compressed COCO RLE ({"size": [h, w], "counts": str}) of a (H, W) boolean mask."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {
        "size": [int(rle["size"][0]), int(rle["size"][1])],
        "counts": rle["counts"].decode("ascii"),
    }


_MAX_CHARS_PER_RUN = 12  # 60 bits: far beyond any real run length, and no int64 overflow


def _counts_from_string(s: str) -> np.ndarray:
    """Invert the LEB128-like, delta-coded string form of COCO's maskApi (rleFrString).

    Each run length is a group of 6-bit characters (offset 48): 5 payload bits each, the
    0x20 bit set on all but the group's last character, whose 0x10 bit is the sign. From the
    fourth value on, each is stored as the difference to the value two places before.
    Vectorised over the whole string: masks of long videos have long strings.
    """
    try:
        codes = np.frombuffer(s.encode("ascii"), np.uint8).astype(np.int64) - 48
    except UnicodeEncodeError:
        raise ValueError("counts string is not ASCII") from None
    bad = np.flatnonzero((codes < 0) | (codes >= 64))
    if bad.size:
        p = int(bad[0])
        raise ValueError(f"character {s[p]!r} at position {p} is outside the RLE alphabet")
    if codes.size == 0:
        return np.zeros(0, np.int64)
    more = (codes & 0x20) != 0
    if more[-1]:
        raise ValueError("string ends inside a run length")
    ends = np.flatnonzero(~more)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > _MAX_CHARS_PER_RUN:
        raise ValueError("run length too long")
    k = np.arange(codes.size) - np.repeat(starts, lengths)  # position within the group
    values = np.add.reduceat((codes & 0x1F) << (5 * k), starts)
    negative = (codes[ends] & 0x10) != 0
    values[negative] -= np.int64(1) << (5 * lengths[negative])
    # undo the delta coding: value i (i >= 3) was stored minus value i - 2
    for first in (1, 2):
        if values.size > first + 2:
            values[first::2] = np.cumsum(values[first::2])
    return values


def decode(
    rle: Any,
    *,
    source: str | Path | None = None,
    field: str | None = None,
    shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Decode a COCO RLE (compressed string or uncompressed list counts) to a (H, W) bool mask.
    Its size is checked before anything is decoded: against `shape` (the frame's (H, W)) when
    given, and always against the largest frame accepted (a size may claim anything)."""
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
    if shape is not None and (h, w) != tuple(shape):
        raise DataError(
            source, f"mask size {h}x{w} does not match its frame {shape[0]}x{shape[1]}", field
        )
    if h * w > MAX_FRAME_PIXELS:
        raise DataError(
            source, f"RLE size {w}x{h} is over the limit of {MAX_FRAME_PIXELS:,} pixels", field
        )
    raw = rle["counts"]
    try:
        if isinstance(raw, bytes):
            raw = raw.decode("ascii")
        if isinstance(raw, str):
            counts = _counts_from_string(raw)
        elif isinstance(raw, list) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in raw
        ):
            if any(v < 0 for v in raw):
                raise ValueError("negative run length")
            if any(v > h * w for v in raw):
                raise ValueError(f"run length beyond the {h}x{w} mask")
            counts = np.array(raw, dtype=np.int64)
        else:
            raise ValueError(f"counts must be a string or a list of ints, got {type(raw).__name__}")
        if (counts < 0).any():
            raise ValueError("negative run length")
        total = int(counts.sum())
        if total != h * w:
            raise ValueError(f"run lengths sum to {total}, expected {h}x{w}={h * w}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(source, f"RLE does not decode: {exc}", field) from None
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True  # runs alternate, starting with background
    flat = np.repeat(values, counts)
    return flat.reshape(w, h).T  # COCO RLE is column-major
