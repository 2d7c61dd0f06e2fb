"""Evaluation of predicted masks with a benchmark's protocol (docs/design.md §4).

`evaluate` scores every expression of the evaluated splits (in one process, or spread over
worker processes by video) and `summarize` aggregates the scores as each benchmark's official
protocol does (its module in omnir1.benchmarks):

- ReVOS: J, F, J&F, A and R means per subset (referring = type_id 0, reasoning = type_id 1),
  overall = the mean of the two subset means; type_id 2 expressions are excluded. Also a single
  / multi-object / null breakdown.
- MeViS: J, F and J&F means over all expressions, with the same breakdown.
- RefAVS: per split (test_s seen, test_u unseen, test_n null) the official figures, computed as
  the official test loop does, per batch of 4 expressions x 10 frames in metadata order and then
  averaged over batches: mIoU (an empty-ground-truth frame scores TN / (H*W)) and the saliency
  max-F (beta^2 = 0.3 over 255 thresholds, frames without foreground skipped, 0 for a batch
  without any); on the null split S = sqrt(predicted-foreground fraction). Beside them the same
  figures pooled over all frames of the split, and DAVIS J, F, J&F at native resolution.

Binary masks are fed to the RefAVS formulas as probabilities in {0, 1}: the official code
applies a sigmoid to logits, and sigmoid(0) = 0.5 would count every background pixel as
foreground at its 0.4 threshold.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omnir1.benchmarks.registry import get, load, names
from omnir1.data.records import Sample
from omnir1.errors import ConfigError, DataError
from omnir1.eval.predictions import expression_dir, shared_fid_counts, unexpected_folders
from omnir1.eval.scoring import ExpressionScore, score_expression

# ------------------------------------------------------------------------------ selection


def load_samples(benchmark: str, data: Path) -> list[Sample]:
    if benchmark not in names():
        raise ConfigError(None, f"unknown benchmark {benchmark!r}; choose one of {names()}")
    return list(load(benchmark, data))


def select_samples(
    benchmark: str,
    samples: Sequence[Sample],
    data: Path,
    splits: Sequence[str] | None = None,
    videos_per_split: int | None = None,
) -> tuple[list[Sample], list[str]]:
    """The samples of the evaluated splits in data-set order, and those splits;
    `videos_per_split` keeps the first N videos of each split (every expression of each)."""
    if videos_per_split is not None and videos_per_split < 1:
        raise ConfigError(None, f"must be >= 1, got {videos_per_split}", "--videos-per-split")
    available = list(dict.fromkeys(s.split for s in samples))
    if splits:
        unknown = [s for s in splits if s not in available]
        if unknown:
            raise ConfigError(
                None, f"split(s) {unknown} not in {data}; it has {available}", "--split"
            )
        chosen = list(dict.fromkeys(splits))
    else:
        chosen = get(benchmark).eval_splits(data, available) or list(available)
    unlabelled = [s for s in chosen if not get(benchmark).labelled(data, s)]
    if unlabelled:
        raise DataError(
            data, f"split(s) {unlabelled} have no ground-truth masks (no mask_dict.json)"
        )
    selected = [s for s in samples if s.split in chosen]
    if videos_per_split is not None:
        kept: dict[str, dict[str, None]] = {}
        for s in selected:
            videos = kept.setdefault(s.split, {})
            if len(videos) < videos_per_split:
                videos.setdefault(s.video_id)
        selected = [s for s in selected if s.video_id in kept[s.split]]
    if not any(not is_excluded(s) for s in selected):
        raise DataError(data, f"no expressions to score in split(s) {chosen}")
    return selected, chosen


def is_excluded(sample: Sample) -> bool:
    return sample.expression_type == "excluded"  # ReVOS type_id 2


# ------------------------------------------------------------------------------- scoring


def score_samples(
    samples: Sequence[Sample],
    data: Path,
    pred: Path,
    *,
    indices: Sequence[int] | None = None,
    official_png: bool = False,
) -> Iterator[ExpressionScore]:
    """Scores of `samples` (one video's expressions together), skipping excluded ones."""
    indices = list(range(len(samples))) if indices is None else list(indices)
    by_video: dict[str, list[tuple[int, Sample]]] = defaultdict(list)
    for i, s in zip(indices, samples, strict=True):
        by_video[s.video_id].append((i, s))
    benchmark = get(samples[0].dataset) if samples else None
    # robustness R needs |FG| per frame, where the benchmark defines it (ReVOS)
    foreground = benchmark.foreground if benchmark is not None else None
    count_foreground = foreground(data) if foreground is not None else None
    for items in by_video.values():
        scored = [(i, s) for i, s in items if not is_excluded(s)]
        if not scored:
            continue
        counts = None
        if count_foreground is not None:
            counts = count_foreground([s for _, s in items])
        for i, sample in scored:
            yield score_expression(
                sample,
                pred,
                benchmark,
                foreground_count=None if counts is None else counts.__getitem__,
                index=i,
                official_png=official_png,
            )


def shard_videos(samples: Sequence[Sample], n: int) -> list[list[str]]:
    """Videos split into `n` shards of about equal work (frames x pixels x expressions),
    largest first onto the least-loaded shard."""
    work: dict[str, float] = defaultdict(float)
    for s in samples:
        if not is_excluded(s):
            work[s.video_id] += s.num_frames
    shards: list[list[str]] = [[] for _ in range(n)]
    load_: list[float] = [0.0] * n
    for vid, w in sorted(work.items(), key=lambda kv: -kv[1]):
        k = load_.index(min(load_))
        shards[k].append(vid)
        load_[k] += w
    return [s for s in shards if s]


# ----------------------------------------------------------------------------- summaries


def summarize(benchmark: str, scores: Sequence[ExpressionScore]) -> dict:
    """The benchmark's official figures of `scores` (omnir1.benchmarks)."""
    return get(benchmark).summarize(scores)


# ---------------------------------------------------------------------------- evaluation


@dataclass
class Evaluation:
    benchmark: str
    splits: list[str]
    scores: list[ExpressionScore]
    counts: dict = field(default_factory=dict)
    unexpected_prediction_folders: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list, repr=False)  # of the evaluated splits

    def summary(self) -> dict:
        return summarize(self.benchmark, self.scores)


def prediction_counts(
    samples: Sequence[Sample],
    scores: Sequence[ExpressionScore],
    pred: Path,
    all_samples: Sequence[Sample],
) -> tuple[dict, list[str]]:
    """How many expressions were scored, excluded, null, missing (whole or in part), empty;
    RefAVS gt_mask folders shared by several expressions; prediction folders that belong to no
    expression of the data set (any split)."""
    shared = shared_fid_counts(samples)
    folders = {id(s): expression_dir(s, pred, get(s.dataset)) for s in all_samples}
    reads_shared = sum(
        1
        for s in samples
        if s.refavs_fid is not None
        and shared[(s.video_id, s.refavs_fid)] > 1
        and folders[id(s)].name == f"fid_{s.refavs_fid}"
        and folders[id(s)].is_dir()
    )
    expected = set(folders.values())
    extra = unexpected_folders(pred, expected)
    counts = {
        "expressions": len(samples),
        "scored": len(scores),
        "excluded": sum(1 for s in samples if is_excluded(s)),
        "null": sum(1 for s in scores if s.num_objects == 0),
        "missing_predictions": sum(1 for s in scores if s.missing),
        "partly_missing_predictions": sum(1 for s in scores if 0 < s.missing_frames < s.num_frames),
        "missing_frames": sum(s.missing_frames for s in scores),
        "frames": sum(s.num_frames for s in scores),
        "empty_predictions": sum(1 for s in scores if s.prediction_empty),
        "shared_fid_prediction_folders": reads_shared,
        "unexpected_prediction_folders": len(extra),
    }
    return counts, extra


def evaluate(
    benchmark: str,
    data: str | Path,
    pred: str | Path,
    *,
    splits: Sequence[str] | None = None,
    workers: int = 1,
    progress: bool = False,
    videos_per_split: int | None = None,
    official_png: bool = False,
) -> Evaluation:
    """Score every expression of the evaluated splits of `data` against the masks in `pred`
    (of the first `videos_per_split` videos of each split, when given); `official_png` as
    `score_expression` says (the official ReVOS script's handling, to match published tables)."""
    data, pred = Path(data), Path(pred)
    if not pred.is_dir():
        raise DataError(pred, "prediction folder not found")
    all_samples = load_samples(benchmark, data)
    samples, chosen = select_samples(benchmark, all_samples, data, splits, videos_per_split)
    shards = shard_videos(samples, max(1, workers))
    total = sum(1 for s in samples if not is_excluded(s))
    if len(shards) <= 1:
        scored_here = score_samples(samples, data, pred, official_png=official_png)
        scores = list(_with_progress(scored_here, total, progress))
    else:
        task = {
            "benchmark": benchmark,
            "data": str(data),
            "pred": str(pred),
            "splits": chosen,
            "videos_per_split": videos_per_split,
            "official_png": official_png,
        }
        from omnir1.workers import run_pool

        scored = run_pool(
            "omnir1.eval.parallel",  # its score_shard, one shard of videos per worker
            [{"videos": list(videos)} for videos in shards],
            workers=len(shards),
            setup=task,
            describe=lambda job: f"{len(job['videos'])} videos of {data}",
        )
        scores = list(
            _with_progress((ExpressionScore.from_dict(s) for s in scored), total, progress)
        )
    scores.sort(key=lambda s: s.index)
    counts, extra = prediction_counts(samples, scores, pred, all_samples)
    return Evaluation(benchmark, chosen, scores, counts, extra, samples)


def _with_progress(
    scores: Iterable[ExpressionScore], total: int, enabled: bool
) -> Iterable[ExpressionScore]:
    if not enabled:
        return scores
    from tqdm import tqdm

    return tqdm(scores, total=total, desc="evaluate", unit="expr")
