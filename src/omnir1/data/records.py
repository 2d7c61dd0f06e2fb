"""The unified sample record every stage passes on (docs/design.md §3).

A Sample describes one (video, expression) pair. Masks are not held: `Sample.masks` decodes
them frame by frame from the data set's own files, so iterating a data set stays cheap.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from omnir1.data import rle
from omnir1.data.masks import mask_box
from omnir1.errors import DataError

EXPRESSION_TYPES = ("referring", "reasoning", "excluded", "null")


def _require_frame_size(
    mask: np.ndarray, height: int, width: int, path: Path, field: str | None = None
) -> None:
    if mask.shape != (height, width):
        raise DataError(
            path,
            f"mask size {mask.shape[0]}x{mask.shape[1]} does not match its frame {height}x{width}",
            field,
        )


class MaskSource(Protocol):
    """Per-frame masks of a sample's objects, decoded on demand."""

    def frame_masks(self, frame: int, height: int, width: int) -> np.ndarray:
        """(num_objects, H, W) bool masks of frame `frame`."""
        ...


@dataclass(frozen=True)
class RLEMaskSource:
    """Masks stored as one COCO RLE (or null = absent) per object per frame (ReVOS, MeViS)."""

    rles: Sequence[Sequence[dict | None]]  # [object][frame]
    source: Path
    object_fields: Sequence[str]  # how each object's list is named in `source`, for errors

    def frame_masks(self, frame: int, height: int, width: int) -> np.ndarray:
        out = np.zeros((len(self.rles), height, width), dtype=bool)
        for k, per_frame in enumerate(self.rles):
            entry = per_frame[frame]
            if entry is None:
                continue
            where = f"{self.object_fields[k]}[{frame}]"
            mask = rle.decode(entry, source=self.source, field=where, shape=(height, width))
            out[k] = mask
        return out


@dataclass(frozen=True)
class PNGMaskSource:
    """Masks stored as one PNG per object per frame (RefAVS gt_mask); None = no file (empty)."""

    paths: Sequence[Sequence[Path | None]]  # [object][frame]

    def frame_masks(self, frame: int, height: int, width: int) -> np.ndarray:
        out = np.zeros((len(self.paths), height, width), dtype=bool)
        for k, per_frame in enumerate(self.paths):
            path = per_frame[frame]
            if path is None:
                continue
            try:
                with Image.open(path) as img:
                    arr = np.asarray(img.convert("L"))
            except FileNotFoundError:
                raise DataError(path, "mask file not found") from None
            except (OSError, Image.DecompressionBombError) as exc:
                raise DataError(path, f"cannot decode mask PNG ({exc})") from None
            _require_frame_size(arr, height, width, path)
            out[k] = arr > 127
        return out


@dataclass(frozen=True)
class Sample:
    """One expression on one video, in any of the supported formats."""

    dataset: str  # one of omnir1.data.FORMATS
    split: str
    video_id: str
    expression_id: str
    expression: str
    expression_type: str  # one of EXPRESSION_TYPES
    type_id: int | None  # ReVOS type_id where the format has one
    object_ids: tuple[str, ...]  # empty for a null expression (referent absent)
    frame_names: tuple[str, ...]
    frame_paths: tuple[Path, ...]
    fps: float
    video_path: Path | None = None
    audio_path: Path | None = None
    mask_source: MaskSource | None = field(default=None, compare=False, repr=False)
    # RefAVS names ground truth by object (fid), also on null rows: predictions in the gt_mask
    # layout are found through it.
    refavs_fid: str | None = None

    @property
    def is_null(self) -> bool:
        return not self.object_ids

    @property
    def num_frames(self) -> int:
        return len(self.frame_paths)

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps

    def frame_size(self) -> tuple[int, int]:
        """(height, width) of the first frame (all frames of a video share it)."""
        try:
            with Image.open(self.frame_paths[0]) as img:
                return img.size[1], img.size[0]
        except FileNotFoundError:
            raise DataError(self.frame_paths[0], "frame file not found") from None
        except (OSError, Image.DecompressionBombError) as exc:
            raise DataError(self.frame_paths[0], f"cannot read frame ({exc})") from None

    def masks(self) -> Iterator[np.ndarray]:
        """(num_objects, H, W) bool masks for each frame in order, decoded one frame at a time."""
        height, width = self.frame_size()
        for t in range(self.num_frames):
            if self.mask_source is None or self.is_null:
                yield np.zeros((len(self.object_ids), height, width), dtype=bool)
            else:
                yield self.mask_source.frame_masks(t, height, width)

    def boxes(self) -> Iterator[list[list[int] | None]]:
        """Per frame, the [x0, y0, x1, y1] box of each object (None where it is not visible)."""
        for frame_masks in self.masks():
            yield [mask_box(m) for m in frame_masks]

    def to_dict(self) -> dict:
        """JSON-ready manifest row (no masks)."""
        return {
            "dataset": self.dataset,
            "split": self.split,
            "video_id": self.video_id,
            "expression_id": self.expression_id,
            "expression": self.expression,
            "expression_type": self.expression_type,
            "type_id": self.type_id,
            "object_ids": list(self.object_ids),
            "num_frames": self.num_frames,
            "fps": self.fps,
            "frame_names": list(self.frame_names),
            "frame_dir": str(self.frame_paths[0].parent) if self.frame_paths else None,
            "video_path": None if self.video_path is None else str(self.video_path),
            "audio_path": None if self.audio_path is None else str(self.audio_path),
            "refavs_fid": self.refavs_fid,
        }
