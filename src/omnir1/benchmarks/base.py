"""What a benchmark is: a name, a data layout with its loader, the splits it evaluates, its
official protocol and the figures it is known by (docs/design.md §3, §4).

Each benchmark is one module of this package (refavs, revos, mevis) that builds a `Benchmark`;
`omnir1.benchmarks` registers them by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from omnir1.data.records import Sample


@dataclass(frozen=True)
class Benchmark:
    name: str
    default_fps: float  # of a frame folder, when the layout does not say
    loader: Callable[..., Iterator[Sample]]  # (root, *, fps) -> the layout's samples
    # (data folder, splits the data set has) -> the splits `omnir1 evaluate` scores by default
    eval_splits: Callable[[Path, Sequence[str]], list[str]]
    summarize: Callable[[Sequence], dict]  # expression scores -> the official figures
    headline: Callable[[Mapping], dict]  # those figures -> the ones a person compares first
    headline_figure: tuple[str, bool]  # the figure it is known by (dotted) and higher-is-better
    # whether a split has ground-truth masks (MeViS ships its online split without)
    labelled: Callable[[Path, str], bool] = lambda data, split: True
    # data folder -> |FG| per frame of one video's expressions, for robustness R (ReVOS)
    foreground: Callable[[Path], Callable[[Sequence[Sample]], list[int]]] | None = None
    # the official per-frame statistics its protocol needs beyond J and F (RefAVS mIoU, F, S)
    official_frame_stats: bool = False
    # predictions: where else an expression's masks may sit (RefAVS's gt_mask layout), and a
    # frame's file name (default: the frame's own name)
    prediction_dir: Callable[[Sample, Path], Path | None] = lambda sample, pred_root: None
    prediction_file: Callable[[Sample, int], str] = lambda sample, t: f"{sample.frame_names[t]}.png"
    # what `omnir1 data check` checks beyond the samples (ReVOS' mask_dict_foreground.json):
    # (data folder, the check report) -> problems added to the report
    extra_check: Callable[[Path, object], None] | None = None
    # the mask-level hallucination figures of its headline (omnir1 probe)
    mask_figures: Callable[[Mapping], dict] = lambda headline: {}

    def load(self, root: str | Path, **kwargs) -> Iterator[Sample]:
        return self.loader(root, **kwargs)
