"""MeViS (docs/design.md §3, §4): one folder per split with `JPEGImages/`,
`meta_expressions.json` and `mask_dict.json` (none for the online `valid` split); J, F and J&F
per expression over all frames, means over expressions.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from omnir1.benchmarks.base import Benchmark
from omnir1.data.layouts import meta_expressions, require_dir
from omnir1.data.records import Sample
from omnir1.errors import DataError
from omnir1.eval.scoring import ExpressionScore
from omnir1.eval.summary import by_objects, mean_block

DEFAULT_FPS = 6.0


def load_mevis(root: str | Path, *, fps: float = DEFAULT_FPS) -> Iterator[Sample]:
    """MeViS: one folder per split with `JPEGImages/`, `meta_expressions.json` and (except for
    the unlabelled `valid` split) `mask_dict.json`."""
    root = Path(root)
    splits = sorted(p.parent for p in root.glob("*/meta_expressions.json"))
    if not splits:
        raise DataError(root, "no {split}/meta_expressions.json found")
    for split_dir in splits:
        mask_dict = split_dir / "mask_dict.json"
        yield from meta_expressions(
            split_dir / "meta_expressions.json",
            mask_dict if mask_dict.exists() else None,
            require_dir(split_dir / "JPEGImages", "JPEGImages folder"),
            split_dir,
            dataset="mevis",
            split=split_dir.name,
            fps=fps,
        )


def labelled(data: Path, split: str) -> bool:
    """MeViS ships its online split (`valid`) without masks: no mask_dict.json in its folder."""
    return (data / split / "mask_dict.json").is_file()


def eval_splits(data: Path, available: Sequence[str]) -> list[str]:
    """Every labelled split but train."""
    return [s for s in available if s != "train" and labelled(data, s)]


def summarize_mevis(scores: Sequence[ExpressionScore]) -> dict:
    return {"overall": mean_block(scores), "by_objects": by_objects(scores)}


def headline(summary: Mapping) -> dict:
    overall = summary["overall"]
    return {"expressions": overall["expressions"], **{k: overall[k] for k in ("J", "F", "JF")}}


BENCHMARK = Benchmark(
    name="mevis",
    default_fps=DEFAULT_FPS,
    loader=load_mevis,
    eval_splits=eval_splits,
    summarize=summarize_mevis,
    headline=headline,
    headline_figure=("JF", True),
    labelled=labelled,
)
