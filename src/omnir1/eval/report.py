"""What `omnir1 evaluate` writes: the JSON summary, a per-expression CSV beside it, and a small
self-contained HTML report with the best and worst expressions drawn as mask overlays.

Overlays: the predicted mask tinted red, the ground-truth outline in green.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from omnir1.benchmarks.refavs import refavs_max_f, refavs_miou, refavs_s
from omnir1.benchmarks.registry import get
from omnir1.data.records import Sample
from omnir1.eval.metrics import seg2bmap
from omnir1.eval.predictions import expression_dir, frame_file, read_mask_png
from omnir1.eval.protocols import Evaluation
from omnir1.eval.scoring import ExpressionScore
from omnir1.fsutil import atomic_group
from omnir1.media.draw import tint

CSV_COLUMNS = (
    "dataset",
    "split",
    "video_id",
    "expression_id",
    "expression",
    "expression_type",
    "type_id",
    "num_objects",
    "num_frames",
    "missing_frames",
    "prediction_empty",
    "J",
    "F",
    "JF",
    "A",
    "R",
    "N_acc",
    "refavs_miou",
    "refavs_max_f",
    "refavs_s",
)


def _refavs_columns(score: ExpressionScore) -> dict:
    if score.refavs is None:
        return {"refavs_miou": None, "refavs_max_f": None, "refavs_s": None}
    one = [score]  # the protocol's own figures, over this expression's frames
    return {
        "refavs_miou": refavs_miou(one),
        "refavs_max_f": refavs_max_f(one),
        "refavs_s": refavs_s(one),
    }


def write_csv(path: Path, scores: Sequence[ExpressionScore]) -> None:
    """The per-expression table at `path` (a temporary file of `evaluate_to_files`' group)."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for s in scores:
            row = {k: getattr(s, k) for k in CSV_COLUMNS if not k.startswith("refavs_")}
            row.update(_refavs_columns(s))
            writer.writerow({k: "" if v is None else v for k, v in row.items()})


# ---------------------------------------------------------------------------------- HTML


def overlay(frame: Image.Image, gt: np.ndarray, pred: np.ndarray, width: int = 240) -> Image.Image:
    """Frame with the prediction tinted red and the ground-truth outline in green."""
    img = tint(np.asarray(frame.convert("RGB")), pred)
    outline = seg2bmap(gt)
    outline[1:] |= outline[:-1]  # two pixels thick so it survives the downscale
    outline[:, 1:] |= outline[:, :-1]
    img[outline] = (40, 220, 60)
    out = Image.fromarray(img)
    height = max(1, round(out.height * width / out.width))
    return out.resize((width, height), Image.Resampling.BILINEAR)


def _data_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def overlay_strip(
    sample: Sample, pred_root: Path, n: int = 4, score: ExpressionScore | None = None
) -> str:
    """HTML figures of `n` frames spread over the expression: the predicted mask tinted red
    over the frame, the ground-truth outline in green (captioned with J and F given `score`)."""
    height, width = sample.frame_size()
    benchmark = get(sample.dataset)
    folder = expression_dir(sample, pred_root, benchmark)
    cells = []
    for t in sorted({int(x) for x in np.linspace(0, sample.num_frames - 1, n).round()}):
        if sample.mask_source is None or sample.is_null:
            gt = np.zeros((height, width), bool)
        else:
            gt = sample.mask_source.frame_masks(t, height, width).any(axis=0)
        pred = read_mask_png(frame_file(sample, folder, t, benchmark), (height, width))
        pred = np.zeros_like(gt) if pred is None else pred
        with Image.open(sample.frame_paths[t]) as frame:
            uri = _data_uri(overlay(frame, gt, pred))
        caption = f"frame {html.escape(sample.frame_names[t])}"
        if score is not None:
            caption += f": J {score.frame_j[t]:.3f} F {score.frame_f[t]:.3f}"
        cells.append(
            f'<figure><img src="{uri}" alt="overlay"><figcaption>{caption}</figcaption></figure>'
        )
    return "".join(cells)


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _leaf_groups(d: dict, prefix: str = "") -> list[tuple[str, dict]]:
    """(path, metrics) for every innermost dict of a nested summary."""
    scalars = {k: v for k, v in d.items() if not isinstance(v, dict)}
    groups = [(prefix.rstrip(" /") or "all", scalars)] if scalars else []
    for k, v in d.items():
        if isinstance(v, dict):
            groups.extend(_leaf_groups(v, f"{prefix}{k} / "))
    return groups


def _table(groups: list[tuple[str, dict]]) -> str:
    """One row per group, one column per metric (blank where a group lacks it)."""
    columns = list(dict.fromkeys(k for _, metrics in groups for k in metrics))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["", *columns])
    rows = "".join(
        f"<tr><th>{html.escape(name)}</th>"
        + "".join(f"<td>{html.escape(_fmt(metrics.get(c)))}</td>" for c in columns)
        + "</tr>"
        for name, metrics in groups
    )
    return f"<table><tr>{head}</tr>{rows}</table>"


STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}th,td{border:1px solid #ccc;padding:3px 8px;
text-align:left;font-size:14px}figure{display:inline-block;margin:4px}figcaption{font-size:12px}
.expr{margin:1em 0;padding:0.5em;border-left:4px solid #888}
"""


def write_html(
    path: Path,
    evaluation: Evaluation,
    summary: dict,
    pred_root: Path,
    *,
    show: int = 3,
) -> None:
    by_key = {(s.split, s.video_id, s.expression_id): s for s in evaluation.samples}
    ranked = sorted(evaluation.scores, key=lambda s: (s.JF, s.index))
    worst = ranked[:show]
    best = [s for s in reversed(ranked[-show:]) if s not in worst]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>omnir1 evaluate: {html.escape(evaluation.benchmark)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(evaluation.benchmark)} evaluation</h1>",
        f"<p>splits: {html.escape(', '.join(evaluation.splits))}; predictions: "
        f"{html.escape(str(pred_root))}</p>",
        "<h2>Summary</h2>",
        _table(_leaf_groups(summary)),
        "<h2>Counts</h2>",
        _table([("expressions", evaluation.counts)]),
        "<p>Overlays: prediction in red, ground-truth outline in green.</p>",
    ]
    for title, group in (("Worst expressions", worst), ("Best expressions", best)):
        parts.append(f"<h2>{title}</h2>")
        for score in group:
            sample = by_key[(score.split, score.video_id, score.expression_id)]
            parts.append(
                f"<div class='expr'><b>{html.escape(score.expression)}</b> "
                f"({html.escape(score.video_id)} / {html.escape(score.expression_id)}, "
                f"{html.escape(score.expression_type)}, {score.num_objects} object(s)): "
                f"J {score.J:.3f}, F {score.F:.3f}, J&amp;F {score.JF:.3f}"
                f"{', missing prediction' if score.missing else ''}<br>"
                f"{overlay_strip(sample, pred_root, score=score)}</div>"
            )
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")


def evaluate_to_files(
    benchmark: str,
    data: str | Path,
    pred: str | Path,
    out: str | Path,
    *,
    splits: Sequence[str] | None = None,
    workers: int = 1,
    html_report: bool = True,
    progress: bool = False,
    videos_per_split: int | None = None,
    official_png: bool = False,
) -> dict:
    """Evaluate and write OUT (JSON), OUT with .csv (per expression) and .html (report)."""
    import time

    from omnir1.eval.protocols import evaluate

    out = Path(out)
    start = time.perf_counter()
    evaluation = evaluate(
        benchmark,
        data,
        pred,
        splits=splits,
        workers=workers,
        progress=progress,
        videos_per_split=videos_per_split,
        official_png=official_png,
    )
    seconds = time.perf_counter() - start
    summary = evaluation.summary()
    csv_path, html_path = out.with_suffix(".csv"), out.with_suffix(".html")
    result = {
        "benchmark": benchmark,
        "data": str(data),
        "predictions": str(pred),
        "splits": evaluation.splits,
        "videos_per_split": videos_per_split,
        "official_png": official_png,
        "summary": summary,
        "counts": evaluation.counts,
        "unexpected_prediction_folders": evaluation.unexpected_prediction_folders[:50],
        "timing": {
            "seconds": seconds,
            "frames_per_second": evaluation.counts["frames"] / seconds if seconds else None,
            "workers": workers,
        },
        "per_expression_csv": csv_path.name,
        "html_report": html_path.name if html_report else None,
    }
    # the three appear together: a kill while the report renders leaves the previous ones
    targets = [out, csv_path, *([html_path] if html_report else [])]
    with atomic_group(*targets) as staged:
        write_csv(staged[1], evaluation.scores)
        if html_report:
            write_html(staged[2], evaluation, summary, Path(pred))
        staged[0].write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result
