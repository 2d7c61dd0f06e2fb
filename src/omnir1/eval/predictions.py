"""Where predicted masks live and how they are read.

Layouts (one PNG per frame, foreground = any non-zero value):
- ReVOS, MeViS: `PRED/{video_id}/{expression_id}/{frame_name}.png` (the layout the official
  evaluation scripts read; a ReVOS video id with slashes is a nested folder).
- RefAVS: the gt_mask layout, `PRED/{vid}/fid_{fid}/0000{i}.png`. The official gt_mask folder
  is named by object, and several expressions can name the same object, so each expression may
  also have its own folder `PRED/{vid}/{uid}/0000{i}.png`, which wins. A `fid_` folder shared by
  several expressions of a video is used for each of them (and counted as shared).

A missing file means an empty mask (the caller counts it); a file that cannot be decoded or has
the wrong size is an error naming the file.
"""

from __future__ import annotations

import io
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from omnir1.data.records import Sample
from omnir1.errors import InputError
from omnir1.fsutil import inside


class PredictionError(InputError):
    """A prediction file exists but cannot be used."""


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_PALETTE = 3  # IHDR colour type


def read_mask_png(path: Path, shape: tuple[int, int]) -> np.ndarray | None:
    """(H, W) bool mask from a PNG (None when the file does not exist).

    Palette PNGs are read by index (DAVIS-style label images), grey and 16-bit ones by value,
    colour ones by any non-zero channel; the alpha channel is ignored. Non-palette PNGs are
    decoded with OpenCV (about 1.5x faster than Pillow, and decoding is most of the cost of
    scoring a frame); everything else, and anything OpenCV cannot read, goes through Pillow.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PredictionError(path, f"cannot read the predicted mask ({exc})") from None
    _check_header_size(path, data, shape)
    arr = None
    if data[:8] == _PNG_SIGNATURE and len(data) > 25 and data[25] != _PNG_PALETTE:
        import cv2

        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is not None:
            arr = img[..., :3].any(axis=2) if img.ndim == 3 and img.shape[2] >= 3 else img > 0
            arr = arr[..., 0] if arr.ndim == 3 else arr
    if arr is None:
        arr = _read_with_pillow(path, data)
    if arr.shape != shape:
        raise PredictionError(
            path,
            f"predicted mask is {arr.shape[1]}x{arr.shape[0]} (WxH) but the frame is "
            f"{shape[1]}x{shape[0]}; predictions must have the frame's native size",
        )
    return arr


def _check_header_size(path: Path, data: bytes, shape: tuple[int, int]) -> None:
    """The size the file's header claims, compared with the frame's before any pixel is
    decoded: a header can claim 100000x100000 (a decompression bomb), or a wrong size that
    would only be found after decoding it all."""
    import struct

    if data[:8] == _PNG_SIGNATURE and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
    else:
        try:
            with Image.open(io.BytesIO(data)) as img:  # reads the header only
                width, height = img.size
        except (OSError, Image.DecompressionBombError) as exc:
            raise PredictionError(path, f"cannot decode the predicted mask ({exc})") from None
    if (height, width) != tuple(shape):
        raise PredictionError(
            path,
            f"predicted mask is {width}x{height} (WxH) but the frame is "
            f"{shape[1]}x{shape[0]}; predictions must have the frame's native size",
        )


def _read_with_pillow(path: Path, data: bytes) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
                return np.asarray(img.convert("RGB")).any(axis=2)
            if img.mode in ("LA", "PA"):
                return np.asarray(img)[..., 0] > 0
            return np.asarray(img) > 0
    except (OSError, Image.DecompressionBombError) as exc:
        raise PredictionError(path, f"cannot decode the predicted mask ({exc})") from None


def expression_dir(sample: Sample, pred_root: Path, benchmark) -> Path:
    """Folder holding the predicted masks of one expression (see the module docstring);
    `benchmark` (omnir1.benchmarks) says where else its layout may put them."""
    parts = sample.video_id.split("/")
    own = inside(pred_root, *parts, sample.expression_id, field="prediction folder")
    if own.is_dir():
        return own
    return benchmark.prediction_dir(sample, pred_root) or own


def frame_file(sample: Sample, folder: Path, index: int, benchmark) -> Path:
    """The PNG of frame `index` in an expression's prediction folder, named as `benchmark`
    names them."""
    return folder / benchmark.prediction_file(sample, index)


def shared_fid_counts(samples: Iterable[Sample]) -> Counter:
    """How many expressions name each (video, fid) in RefAVS: >1 means a shared gt_mask folder."""
    return Counter((s.video_id, s.refavs_fid) for s in samples if s.refavs_fid is not None)


def unexpected_folders(pred_root: Path, expected: set[Path]) -> list[str]:
    """Folders of PNG files under `pred_root` that no evaluated expression reads."""
    if not pred_root.is_dir():
        return []
    wanted = {p.resolve() for p in expected}
    extra = []
    for dirpath, _, files in os.walk(pred_root):
        folder = Path(dirpath)
        if any(f.endswith(".png") for f in files) and folder.resolve() not in wanted:
            extra.append(folder.relative_to(pred_root).as_posix())
    return sorted(extra)
