"""Aggregating expression scores into a benchmark's figures: mean blocks of J, F, J&F, A and R,
a breakdown by object count, and means of subset means (docs/design.md §4)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from omnir1.eval.scoring import ExpressionScore

# N_acc: no-target accuracy, over the null expressions only (the all-or-nothing rule)
METRIC_KEYS = ("J", "F", "JF", "A", "R", "N_acc")


def mean_block(scores: Sequence[ExpressionScore]) -> dict:
    block: dict[str, float | int | None] = {"expressions": len(scores)}
    for key in METRIC_KEYS:
        values = [getattr(s, key) for s in scores if getattr(s, key) is not None]
        block[key] = float(np.mean(values)) if values else None
    return block


def by_objects(scores: Sequence[ExpressionScore]) -> dict:
    groups = {
        "single_object": [s for s in scores if s.num_objects == 1],
        "multi_object": [s for s in scores if s.num_objects > 1],
        "null": [s for s in scores if s.num_objects == 0],
    }
    return {name: mean_block(group) for name, group in groups.items() if group}


def mean_of_means(blocks: Iterable[dict]) -> dict:
    blocks = [b for b in blocks if b["expressions"]]
    out: dict[str, float | int | None] = {"expressions": sum(b["expressions"] for b in blocks)}
    for key in METRIC_KEYS:
        values = [b[key] for b in blocks if b[key] is not None]
        out[key] = float(np.mean(values)) if values else None
    return out
