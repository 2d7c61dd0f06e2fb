"""The scoring worker: `omnir1.eval.protocols.evaluate(workers=N)` runs N of these processes
through omnir1.workers (JSON lines, nothing pickled), one shard of videos each.

Each worker reloads the annotations itself and scores whole videos, so a video's ground truth
is decoded in one place only; it sends one result per scored expression as it goes.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from pathlib import Path


def score_shard(task: Mapping, job: Mapping) -> Iterator[dict]:
    """The scores of the expressions of `job["videos"]` (a worker's job; `task` as
    `evaluate` sets it up: benchmark, data, pred, splits, videos_per_split)."""
    from omnir1.eval.protocols import load_samples, score_samples, select_samples

    data, pred = Path(task["data"]), Path(task["pred"])
    all_samples = load_samples(task["benchmark"], data)
    samples, _ = select_samples(
        task["benchmark"], all_samples, data, task["splits"], task.get("videos_per_split")
    )
    videos = set(job["videos"])
    mine = [(i, s) for i, s in enumerate(samples) if s.video_id in videos]
    official = bool(task.get("official_png", False))
    indices = [i for i, _ in mine]
    for score in score_samples(
        [s for _, s in mine], data, pred, indices=indices, official_png=official
    ):
        yield score.to_dict()


if __name__ == "__main__":
    from omnir1.workers import serve

    sys.exit(serve(score_shard))
