"""ReVOS (docs/design.md §3, §4): `JPEGImages/{vid}/`, `meta_expressions*.json` with type_id
(0 referring, 1 reasoning, 2 excluded), one `mask_dict.json` of COCO RLE, and
`mask_dict_foreground.json` for robustness R; per expression J, F, A and R over all frames,
subset means for referring and reasoning, overall = the mean of the two.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from omnir1.benchmarks.base import Benchmark
from omnir1.data import rle
from omnir1.data.layouts import meta_expressions, require_dir
from omnir1.data.records import Sample
from omnir1.errors import DataError
from omnir1.eval.scoring import ExpressionScore
from omnir1.eval.summary import by_objects, mean_block, mean_of_means
from omnir1.fsutil import read_json

REVOS_TYPES = {0: "referring", 1: "reasoning", 2: "excluded"}
DEFAULT_FPS = 6.0
DAVIS_KEYS = ("J", "F", "JF", "A", "R")


def expression_type(type_id: object, meta_path: Path, field: str) -> str:
    if type_id not in REVOS_TYPES:
        raise DataError(
            meta_path, f"type_id must be one of {sorted(REVOS_TYPES)}, got {type_id!r}", field
        )
    return REVOS_TYPES[type_id]


_REVOS_META = re.compile(r"^meta_expressions(?:_(?P<split>[A-Za-z0-9]+)_?)?\.json$")


def load_revos(root: str | Path, *, fps: float = DEFAULT_FPS) -> Iterator[Sample]:
    """ReVOS: `meta_expressions.json` (split "all") or `meta_expressions_{split}_.json` files,
    one shared `mask_dict.json`, frames under `JPEGImages/{vid}/`."""
    root = Path(root)
    metas = sorted(
        (p, m.group("split") or "all")
        for p in root.glob("meta_expressions*.json")
        if (m := _REVOS_META.match(p.name))
    )
    if not metas:
        raise DataError(
            root / "meta_expressions.json", "file not found (nor meta_expressions_{split}_.json)"
        )
    image_root = require_dir(root / "JPEGImages", "JPEGImages folder")
    for meta, split in metas:
        yield from meta_expressions(
            meta,
            root / "mask_dict.json",
            image_root,
            root,
            dataset="revos",
            split=split,
            fps=fps,
            expression_type=expression_type,
        )


def eval_splits(data: Path, available: Sequence[str]) -> list[str]:
    """Every split but train."""
    return [s for s in available if s != "train"]


def foreground(data: Path) -> Callable[[Sequence[Sample]], list[int]]:
    """|FG| per frame of one video (from its expressions' samples): every annotated object, from
    `mask_dict_foreground.json` where the data set has one (read once here)."""
    fg_path = data / "mask_dict_foreground.json"
    fg_file = None
    if fg_path.exists():
        fg_file = read_json(fg_path)
        if not isinstance(fg_file, dict):
            raise DataError(fg_path, "expected an object mapping video ids to {masks_rle: [...]}")
    return lambda video_samples: foreground_counts(video_samples, fg_file, fg_path)


def foreground_counts(
    video_samples: Sequence[Sample], fg_file: dict | None, fg_path: Path
) -> list[int]:
    """|FG| per frame of a ReVOS video: all annotated objects, from mask_dict_foreground.json
    where present, else the union of the objects of the video's expressions (how that file is
    made)."""
    first = video_samples[0]
    height, width = first.frame_size()
    vid = first.video_id
    if fg_file is not None:
        entry = fg_file.get(vid)
        rles = entry.get("masks_rle") if isinstance(entry, dict) else None
        if not isinstance(rles, list) or len(rles) != first.num_frames:
            raise DataError(
                fg_path, f"expected {first.num_frames} per-frame RLEs", f"{vid}.masks_rle"
            )
        return [
            int(
                np.count_nonzero(
                    rle.decode(
                        r, source=fg_path, field=f"{vid}.masks_rle[{t}]", shape=(height, width)
                    )
                )
            )
            for t, r in enumerate(rles)
        ]
    union = np.zeros((first.num_frames, height, width), bool)
    for sample in video_samples:
        for t, objects in enumerate(sample.masks()):
            if len(objects):
                union[t] |= objects.any(axis=0)
    return [int(np.count_nonzero(m)) for m in union]


def summarize_revos(scores: Sequence[ExpressionScore]) -> dict:
    subsets = {
        "referring": mean_block([s for s in scores if s.type_id == 0]),
        "reasoning": mean_block([s for s in scores if s.type_id == 1]),
    }
    return {
        **subsets,
        "overall": mean_of_means(subsets.values()),
        "by_objects": by_objects(scores),
    }


def check_foreground(root: Path, report) -> None:
    """mask_dict_foreground.json (all annotated objects, for the robustness score R): every
    video must be known and every entry must decode."""
    path = root / "mask_dict_foreground.json"
    if not path.exists():
        return
    try:
        fg = read_json(path)
        if not isinstance(fg, dict):
            raise DataError(path, "expected an object mapping video id to {'masks_rle': [...]}")
        for vid, entry in fg.items():
            if vid not in report.videos:
                raise DataError(path, f"unknown video id {vid!r}", vid)
            masks = entry.get("masks_rle") if isinstance(entry, dict) else None
            if not isinstance(masks, list):
                raise DataError(path, "expected a list of per-frame RLE", f"{vid}.masks_rle")
            for t, item in enumerate(masks):
                if item is not None:
                    rle.decode(item, source=path, field=f"{vid}.masks_rle[{t}]")
    except DataError as err:
        report.add_problem(err)


def headline(summary: Mapping) -> dict:
    overall = summary["overall"]
    return {"expressions": overall["expressions"], **{k: overall[k] for k in DAVIS_KEYS}}


BENCHMARK = Benchmark(
    name="revos",
    default_fps=DEFAULT_FPS,
    loader=load_revos,
    eval_splits=eval_splits,
    summarize=summarize_revos,
    headline=headline,
    headline_figure=("JF", True),
    foreground=foreground,
    extra_check=check_foreground,
    mask_figures=lambda headline: {"revos_R": headline["R"]} if "R" in headline else {},
)
