"""RefAVS (docs/design.md §3, §4): `metadata.csv`, 10 frames at 1 fps and the audio per video,
PNG masks per frame; scored with the official protocol (mIoU with TN / (H W) for empty frames,
the saliency max-F, S on the null split, per batch of 4 expressions in metadata order) and
DAVIS J&F beside it.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from omnir1.benchmarks.base import Benchmark
from omnir1.data.layouts import require_dir, video_parts
from omnir1.data.records import PNGMaskSource, Sample
from omnir1.errors import DataError
from omnir1.eval.scoring import ExpressionScore
from omnir1.eval.summary import mean_block
from omnir1.fsutil import inside
from omnir1.media.video import list_frame_files

REFAVS_COLUMNS = ("vid", "uid", "split", "fid", "exp")  # the official header order
REFAVS_SPLITS = ("train", "val", "test_s", "test_u", "test_n")
REFAVS_SPLIT_NAMES = {"test_s": "seen", "test_u": "unseen", "test_n": "null"}
REFAVS_BATCH = 4  # expressions per batch in the official test loader
DEFAULT_FPS = 1.0


def load_refavs(root: str | Path, *, fps: float = DEFAULT_FPS) -> Iterator[Sample]:
    """Rows of `metadata.csv` as samples. test_n rows are null expressions (referent absent)."""
    root = Path(root)
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise DataError(meta, "file not found")
    with meta.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REFAVS_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(meta, f"missing columns {missing}; found {reader.fieldnames}", "header")
        listed_vid, frames = None, []
        for line, row in enumerate(reader, start=2):
            where = f"line {line}"
            vid, uid, split, fid, exp = (row[c] for c in REFAVS_COLUMNS)
            if split not in REFAVS_SPLITS:
                raise DataError(
                    meta, f"split {split!r} is not one of {REFAVS_SPLITS}", f"{where}: split"
                )
            if not exp or not exp.strip():
                raise DataError(meta, "empty expression", f"{where}: exp")
            if not uid:
                raise DataError(meta, "empty uid", f"{where}: uid")
            parts = video_parts(vid, meta, f"{where}: vid")
            media = inside(root, "media", *parts, source=meta, field=f"{where}: vid")
            if vid != listed_vid:  # rows of a video are contiguous: list its frames once
                frame_dir = require_dir(media / "frames", f"frames of video {vid!r} ({where})")
                listed_vid, frames = vid, list_frame_files(frame_dir)
            is_null = split == "test_n"
            mask_dir = inside(
                root, "gt_mask", *parts, f"fid_{fid}", source=meta, field=f"{where}: fid"
            )
            masks = [[mask_dir / f"{i:05d}.png" for i in range(len(frames))]]
            if is_null and not mask_dir.exists():
                masks = [[None] * len(frames)]
            audio = media / "audio.wav"
            yield Sample(
                dataset="refavs",
                split=split,
                video_id=vid,
                expression_id=uid,
                expression=exp.strip(),
                expression_type="null" if is_null else "referring",
                type_id=None,
                object_ids=() if is_null else (str(fid),),
                frame_names=tuple(p.stem for p in frames),
                frame_paths=tuple(frames),
                fps=fps,
                video_path=None,
                audio_path=audio if audio.exists() else None,
                mask_source=PNGMaskSource(masks),
                refavs_fid=str(fid),
            )


def eval_splits(data: Path, available: Sequence[str]) -> list[str]:
    """Its three test splits (seen, unseen, null)."""
    return [s for s in REFAVS_SPLIT_NAMES if s in available]


def refavs_miou(group: Sequence[ExpressionScore]) -> float:
    """Official mIoU over all frames of `group` (one batch, a split, or one expression)."""
    return float(np.mean([v for s in group for v in s.refavs.iou]))


def refavs_max_f(group: Sequence[ExpressionScore]) -> float:
    """Max over thresholds of the mean F curve of the group's frames with foreground (0 if
    none has any)."""
    curves = [c for s in group for c in s.refavs.f_curve]
    return float(np.max(np.mean(curves, axis=0))) if curves else 0.0


def refavs_s(group: Sequence[ExpressionScore]) -> float:
    """S: square root of the predicted-foreground fraction of the group's pixels."""
    pixels = sum(s.refavs.pixels for s in group)
    return math.sqrt(sum(s.refavs.pred_pixels for s in group) / pixels)


def _refavs_figures(scores: Sequence[ExpressionScore]) -> dict:
    """Official (batch) and pooled mIoU, max-F and S of one split's expressions, in order."""
    ordered = sorted(scores, key=lambda s: s.index)
    batches = [ordered[i : i + REFAVS_BATCH] for i in range(0, len(ordered), REFAVS_BATCH)]
    return {
        "official": {
            "mIoU": float(np.mean([refavs_miou(b) for b in batches])),
            "F": float(np.mean([refavs_max_f(b) for b in batches])),
            "S": float(np.mean([refavs_s(b) for b in batches])),
            "batches": len(batches),
        },
        "pooled": {
            "mIoU": refavs_miou(ordered),
            "F": refavs_max_f(ordered),
            "S": refavs_s(ordered),
        },
    }


def summarize_refavs(scores: Sequence[ExpressionScore]) -> dict:
    by_split: dict[str, list[ExpressionScore]] = defaultdict(list)
    for s in scores:
        by_split[s.split].append(s)
    out = {}
    for split, group in by_split.items():
        figures = _refavs_figures(group)
        if split == "test_n":  # only S is defined for the null split
            for kind in ("official", "pooled"):
                figures[kind] = {k: v for k, v in figures[kind].items() if k in ("S", "batches")}
        else:
            for kind in ("official", "pooled"):
                figures[kind].pop("S")
        davis = mean_block(group)
        figures["davis"] = {k: davis[k] for k in ("J", "F", "JF", "N_acc")}
        figures["empty_prediction_rate"] = float(np.mean([s.prediction_empty for s in group]))
        figures["expressions"] = len(group)
        out[REFAVS_SPLIT_NAMES.get(split, split)] = figures
    return out


def headline(summary: Mapping) -> dict:
    out = {}
    for split, figures in summary.items():  # seen / unseen / null
        official = figures["official"]
        row = {k: official[k] for k in ("mIoU", "F", "S") if k in official}
        if split != "null":
            row["JF"] = figures["davis"]["JF"]
        row["empty_prediction_rate"] = figures["empty_prediction_rate"]
        row["expressions"] = figures["expressions"]
        out[split] = row
    return out


def prediction_dir(sample: Sample, pred_root: Path) -> Path | None:
    """The gt_mask layout: PRED/{vid}/fid_{fid}/ (one folder per referred object)."""
    if sample.refavs_fid is None:
        return None
    parts = sample.video_id.split("/")
    return inside(pred_root, *parts, f"fid_{sample.refavs_fid}", field="prediction folder")


def mask_figures(headline: Mapping) -> dict:
    """The null split's empty-mask rate and S (foreground predicted for absent referents)."""
    null = headline.get("null", {})
    out = {}
    if "empty_prediction_rate" in null:
        out["null_empty_mask_rate"] = null["empty_prediction_rate"]
    if "S" in null:
        out["null_S"] = null["S"]
    return out


BENCHMARK = Benchmark(
    name="refavs",
    default_fps=DEFAULT_FPS,
    loader=load_refavs,
    eval_splits=eval_splits,
    summarize=summarize_refavs,
    headline=headline,
    headline_figure=("seen.mIoU", True),
    official_frame_stats=True,
    prediction_dir=prediction_dir,
    prediction_file=lambda sample, t: f"{t:05d}.png",  # as gt_mask names its PNGs
    mask_figures=mask_figures,
)
