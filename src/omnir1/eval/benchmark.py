"""`omnir1 benchmark`: the pipeline's evaluate stage. Every model (the trained System 1 and the
one it started from) predicts every data set's evaluation splits with System 2 and is scored
with that benchmark's protocol (`omnir1 predict` + `omnir1 evaluate`), side by side.

    omnir1 benchmark --data revos=data/sets/revos --data refavs=data/sets/refavs
                     --model untrained=models/warm --model trained=runs/train/model
                     --out reports/evaluate --metrics metrics/evaluate.json

OUT/{format}/{model}/predictions/   the masks, answers.jsonl, predictions.json
OUT/{format}/{model}/evaluation.json (+ .csv per expression, + .html with overlays)
METRICS  the headline figures per model and data set, what DVC tracks and the registry gates:
    {"trained": {"revos": {"J", "F", "JF", "A", "R", "expressions"}, "mevis": {...},
                 "refavs": {"seen": {"mIoU", "F", "JF"}, "unseen": {...}, "null": {"S", ...}}},
     "untrained": {...}, "delta": trained - untrained, "seconds": ..., "settings": ...}

`params.evaluate.videos_per_split` keeps the first N videos of each evaluated split (with every
expression of each; whole splits when null): the embedded default keeps the demo within minutes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from omnir1.errors import ConfigError
from omnir1.fsutil import write_json


def headline(fmt: str, summary: Mapping) -> dict:
    """The figures a person compares first, from one `omnir1 evaluate` summary."""
    from omnir1.benchmarks.registry import get

    return get(fmt).headline(summary)


def difference(after: Mapping, before: Mapping) -> dict:
    """after - before for every number both have, nested the same way."""
    out: dict = {}
    for key, value in after.items():
        other = before.get(key)
        if isinstance(value, Mapping) and isinstance(other, Mapping):
            out[key] = difference(value, other)
        elif (
            isinstance(value, int | float)
            and isinstance(other, int | float)
            and key != "expressions"
        ):
            out[key] = value - other
    return out


def run_benchmark(
    params,
    *,
    data: Mapping[str, str | Path],
    models: Mapping[str, str | Path],
    out: str | Path,
    metrics: str | Path | None,
    device: str = "cpu",
    progress: bool = True,
    shards: Mapping[str, str | Path] | None = None,
    part: tuple[int, int] | None = None,
    merge: Sequence[str | Path] = (),
) -> dict:
    """Predict and score every (data set, model) pair; write OUT and METRICS (see above).
    `shards` {format: folder} gives System 1 its preprocessed clips instead of decoding.

    Fan-out: with `part` (I, N) only that part's videos are predicted into OUT (no scores, no
    METRICS); with `merge` (the OUT folders of every part) nothing is predicted: the parts'
    predictions are joined into OUT and scored."""
    from omnir1.eval.predict import merge_predictions, run_predict

    if not data or not models:
        raise ConfigError(None, "needs at least one --data FORMAT=DIR and one --model NAME=DIR")
    if part is not None and merge:
        raise ConfigError(None, "give --part (predict a part) or --merge (score parts), not both")
    if part is None and metrics is None:
        raise ConfigError(None, "needs --metrics (the headline figures) unless --part is given")
    cfg = params.evaluate
    out = Path(out)
    seconds: dict = {fmt: {label: {} for label in models} for fmt in data}
    for fmt, folder in data.items():
        for label, model_dir in models.items():
            start = time.perf_counter()
            predictions = out / fmt / label / "predictions"
            if merge:
                merge_predictions(
                    [Path(m) / fmt / label / "predictions" for m in merge], predictions
                )
                seconds[fmt][label]["merge"] = time.perf_counter() - start
                continue
            run_predict(
                params,
                data=folder,
                fmt=fmt,
                models_dir=model_dir,
                out=predictions,
                videos_per_split=cfg.videos_per_split,
                seed=params.train.seed,
                device=device,
                batch_size=cfg.system1_batch_size,
                progress=progress,
                shards=(shards or {}).get(fmt),
                part=part,
            )
            seconds[fmt][label]["predict"] = time.perf_counter() - start
    if part is not None:
        return {"part": f"{part[0]}/{part[1]}", "seconds": seconds}
    return score_benchmark(
        params,
        data=data,
        models=models,
        out=out,
        metrics=metrics,
        seconds=seconds,
        progress=progress,
    )


def score_benchmark(
    params,
    *,
    data: Mapping[str, str | Path],
    models: Mapping[str, str | Path],
    out: Path,
    metrics: str | Path,
    seconds: dict,
    progress: bool = True,
) -> dict:
    """Score OUT/{format}/{model}/predictions with each benchmark's protocol; write METRICS."""
    from omnir1.eval.report import evaluate_to_files

    cfg = params.evaluate
    result: dict = {label: {} for label in models}
    for fmt, folder in data.items():
        for label in models:
            run_dir = out / fmt / label
            start = time.perf_counter()
            evaluation = evaluate_to_files(
                fmt,
                folder,
                run_dir / "predictions",
                run_dir / "evaluation.json",
                workers=cfg.workers,
                progress=progress,
                videos_per_split=cfg.videos_per_split,
            )
            result[label][fmt] = headline(fmt, evaluation["summary"])
            seconds[fmt][label]["evaluate"] = time.perf_counter() - start
    labels = list(models)
    report = {
        **result,
        "models": {label: str(path) for label, path in models.items()},
        "seconds": seconds,
        "settings": {
            "videos_per_split": cfg.videos_per_split,
            "data": {fmt: str(path) for fmt, path in data.items()},
        },
    }
    if len(labels) == 2:  # the second named model against the first: after - before
        report["delta"] = difference(result[labels[1]], result[labels[0]])
    write_json(metrics, report)
    return report
