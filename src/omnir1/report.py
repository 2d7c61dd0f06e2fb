"""`omnir1 report`: the pipeline's report, `reports/index.html`, one self-contained page a person
opens after a run, and a short Markdown summary for the terminal (what `make demo` prints).

    omnir1 report --metrics metrics --reports reports --out reports/index.html

It reads what the stages wrote: metrics/train.json and train_curve.json (GRPO), metrics/
evaluate.json and reports/evaluate/{format}/{model}/ (benchmarks), metrics/probe.json
(hallucination probes), reports/register.json (the registry's decision). A stage that has
not run is shown as missing, never invented. Sections: headline, before/after per benchmark,
reward curves and step time, hallucination probes, the promotion decision, and overlays of
the trained model's best and worst expression per data set.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Mapping
from pathlib import Path

from omnir1.fsutil import atomic_open

PROBE_FIGURES = ("accuracy", "f1", "yes_ratio", "answered", "n")


def _read(path: Path) -> dict | list | None:
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _get(d: Mapping | None, dotted: str):
    for key in dotted.split("."):
        if not isinstance(d, Mapping) or key not in d:
            return None
        d = d[key]
    return d


def _num(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool | int):
        return str(v)
    return f"{v:.4f}"


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(c if isinstance(c, str) else _num(c))}</td>" for c in row)
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _markdown(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join(c if isinstance(c, str) else _num(c) for c in r) + " |" for r in rows
    ]
    return "\n".join(lines)


def _labels(stage: Mapping | None) -> tuple[str, str] | None:
    """(before, after) model labels: a stage's two models in the order given."""
    if not stage:
        return None
    models = list(stage.get("models", {}))
    return (models[0], models[1]) if len(models) == 2 else None


GATE_HEADER = ["gate", "against", "result", "challenger", "reference", "note"]


def gate_rows(decision: Mapping) -> list[list]:
    """The registry's decision per gate and reference (the champion, the starting model)."""
    return [
        [
            r.get("metric", ""),
            r.get("against", "champion"),
            r.get("result", ""),
            r.get("challenger"),
            r.get("champion"),
            r.get("note", ""),
        ]
        for r in decision.get("reasons", [])
    ]


def headline_rows(train, curve, evaluation, probe, decision) -> list[list]:
    rows: list[list] = []
    if train:
        # a finished run resumed (`dvc repro -f` on the same inputs) trained no step this time
        reused = "a finished run's, reused" if train.get("reused_finished_run") else ""
        rows.append(["GRPO steps", "", train.get("steps"), reused])
    rewards = [c["reward"] for c in curve if "reward" in c]
    if rewards:
        k = max(1, len(rewards) // 5)  # mean of the first and the last fifth of the steps
        first, last = sum(rewards[:k]) / k, sum(rewards[-k:]) / k
        rows.append([f"mean group reward (first / last {k} steps)", first, last, last - first])
    labels = _labels(evaluation)
    if labels:
        before, after = labels
        from omnir1.benchmarks.registry import BENCHMARKS

        # the figure each benchmark is known by
        for fmt, key in ((n, b.headline_figure[0]) for n, b in BENCHMARKS.items()):
            a, b = (
                _get(evaluation, f"{before}.{fmt}.{key}"),
                _get(evaluation, f"{after}.{fmt}.{key}"),
            )
            if a is not None or b is not None:
                delta = None if a is None or b is None else b - a
                rows.append([f"{fmt} {key}", a, b, delta])
    if probe and labels:
        before, after = labels
        for key in ("avh.accuracy", "avh.yes_ratio", "cmm.pa", "cmm.hr"):
            a, b = _get(probe, f"{before}.{key}"), _get(probe, f"{after}.{key}")
            rows.append([f"probe {key}", a, b, None if a is None or b is None else b - a])
    if decision:
        verdict = "promoted to champion" if decision.get("promoted") else "not promoted"
        rows.append([f"registry: version {decision.get('version')}", verdict, "", ""])
    return rows


def _curve_png(curve: list[dict]) -> str | None:
    """Reward curves and the step-time split of GRPO as one PNG data URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [c for c in curve if "reward" in c]
    if not points:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    steps = [c["step"] for c in points]
    for key, label in (
        ("reward", "total"),
        ("rewards/format/mean", "format"),
        ("rewards/video_accuracy/mean", "video accuracy"),
    ):
        if all(key in c for c in points):
            left.plot(steps, [c[key] for c in points], label=label)
    left.set_xlabel("GRPO step")
    left.set_ylabel("mean reward of the group")
    left.legend()
    bottom = [0.0] * len(points)
    for key in ("time/generation_s", "time/system2_s", "time/reward_s", "time/update_s"):
        if all(key in c for c in points):
            values = [c[key] for c in points]
            right.bar(steps, values, bottom=bottom, label=key.split("/")[1])
            bottom = [a + b for a, b in zip(bottom, values, strict=True)]
    right.set_xlabel("GRPO step")
    right.set_ylabel("seconds")
    right.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _extremes(csv_path: Path) -> list[tuple[str, dict]]:
    """The worst and the best expression of one evaluation (by J&F), from its per-expression CSV."""
    with csv_path.open(encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("JF") not in (None, "")]
    if not rows:
        return []
    ranked = sorted(rows, key=lambda r: float(r["JF"]))
    picks = [("worst", ranked[0])]
    if len(ranked) > 1:
        picks.append(("best", ranked[-1]))
    return picks


def overlay_section(reports: Path, evaluation: Mapping, data: Mapping[str, str]) -> str:
    """Best and worst expression of the trained model per data set, drawn from its masks."""
    from omnir1.eval.protocols import load_samples
    from omnir1.eval.report import overlay_strip

    labels = _labels(evaluation)
    if not labels:
        return "<p>No benchmark results.</p>"
    after = labels[1]
    parts = []
    for fmt, folder in data.items():
        run = reports / "evaluate" / fmt / after
        csv_path = run / "evaluation.csv"
        if not csv_path.is_file():
            continue
        samples = {
            (s.split, s.video_id, s.expression_id): s for s in load_samples(fmt, Path(folder))
        }
        for kind, row in _extremes(csv_path):
            sample = samples.get((row["split"], row["video_id"], row["expression_id"]))
            if sample is None:
                continue
            parts.append(
                f"<div class='expr'><b>{fmt}, {kind}</b>: {html.escape(row['expression'])} "
                f"({html.escape(row['video_id'])}, J&amp;F {float(row['JF']):.3f})<br>"
                f"{overlay_strip(sample, run / 'predictions')}</div>"
            )
        page = run / "evaluation.html"
        if page.is_file():
            parts.append(
                f"<p><a href='{html.escape(str(page.relative_to(reports)))}'>{fmt}: all "
                "figures and more overlays</a></p>"
            )
    return "".join(parts) or "<p>No overlays.</p>"


STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1150px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}th,td{border:1px solid #ccc;padding:3px 8px;
text-align:left;font-size:14px}figure{display:inline-block;margin:4px}figcaption{font-size:12px}
.expr{margin:1em 0;padding:0.5em;border-left:4px solid #888}img.wide{max-width:100%}
"""


def _stage_outputs(metrics: Path, reports: Path) -> dict:
    """What the stages wrote (None where a stage has not run)."""
    return {
        "train": _read(metrics / "train.json"),
        "curve": _read(metrics / "train_curve.json") or [],
        "evaluation": _read(metrics / "evaluate.json"),
        "probe": _read(metrics / "probe.json"),
        "decision": _read(reports / "register.json"),
    }


def _headline(outputs: Mapping) -> tuple[list[str], list[list]]:
    """The headline table's header (the two models' labels) and rows."""
    labels = _labels(outputs["evaluation"]) or _labels(outputs["probe"]) or ("before", "after")
    return ["", *labels, "change"], headline_rows(**outputs)


def summary_table(metrics: str | Path, reports: str | Path) -> str:
    """The headline table (Markdown), from what the stages wrote, and the registry's decision
    per gate when the register stage has run."""
    outputs = _stage_outputs(Path(metrics), Path(reports))
    text = _markdown(*_headline(outputs))
    decision = outputs["decision"]
    if decision and decision.get("reasons"):
        text += f"\n\nregistry: {decision.get('summary', '')}\n"
        text += _markdown(GATE_HEADER, gate_rows(decision))
    return text


def build_report(metrics: str | Path, reports: str | Path, out: str | Path) -> str:
    """Write the HTML report to OUT and OUT with .md; return the Markdown summary."""
    metrics, reports, out = Path(metrics), Path(reports), Path(out)
    outputs = _stage_outputs(metrics, reports)
    train, curve = outputs["train"], outputs["curve"]
    evaluation, probe, decision = outputs["evaluation"], outputs["probe"], outputs["decision"]
    head, rows = _headline(outputs)
    labels = head[1:3]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>omnir1 pipeline report</title>",
        f"<style>{STYLE}</style></head><body><h1>Omni-R1 pipeline report</h1>",
        "<h2>Headline</h2>",
        _table(head, rows) if rows else "<p>No stage has written metrics yet.</p>",
        "<h2>Training (GRPO)</h2>",
    ]
    png = _curve_png(curve)
    parts.append(f"<img class='wide' src='{png}' alt='reward curves'>" if png else "<p>-</p>")
    if train:
        split = train.get("step_seconds", {})
        parts.append(_table(["step time", "seconds (mean)"], [[k, v] for k, v in split.items()]))
    parts.append("<h2>Benchmarks: before vs after GRPO</h2>")
    if evaluation and _labels(evaluation):
        before, after = labels
        for fmt in evaluation.get(after, {}):
            flat = _flatten(evaluation[after][fmt])
            prior = _flatten(evaluation.get(before, {}).get(fmt, {}))
            table_rows = [[k, prior.get(k), v, _delta(prior.get(k), v)] for k, v in flat.items()]
            parts.append(f"<h3>{html.escape(fmt)}</h3>" + _table(head, table_rows))
    else:
        parts.append("<p>The evaluate stage has not run.</p>")
    parts.append("<h2>Hallucination probes</h2>")
    if probe and _labels(probe):
        before, after = _labels(probe)
        table_rows = []
        earlier = _probe_rows(probe, before)
        for family, figures in _probe_rows(probe, after).items():
            prior = earlier.get(family, {})
            for key, value in figures.items():
                table_rows.append(
                    [f"{family} {key}", prior.get(key), value, _delta(prior.get(key), value)]
                )
        parts.append(_table(head, table_rows))
    else:
        parts.append("<p>The probe stage has not run.</p>")
    parts.append("<h2>Registry</h2>")
    if decision:
        parts.append(f"<p>{html.escape(str(decision.get('summary', '')))}</p>")
        parts.append(_table(GATE_HEADER, gate_rows(decision)))
    else:
        parts.append("<p>The register stage has not run.</p>")
    parts.append("<h2>Best and worst cases (trained model)</h2>")
    parts.append("<p>Prediction in red, ground-truth outline in green.</p>")
    data = (evaluation or {}).get("settings", {}).get("data", {})
    parts.append(overlay_section(reports, evaluation or {}, data))
    parts.append("</body></html>")
    with atomic_open(out, "w", encoding="utf-8") as fh:
        fh.write("\n".join(parts))
    summary = _markdown(head, rows)
    with atomic_open(out.with_suffix(".md"), "w", encoding="utf-8") as fh:
        fh.write(summary + "\n")
    return summary


def _flatten(d: Mapping, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = v
    return out


def _delta(a, b):
    return None if a is None or b is None else b - a


def _probe_rows(probe: Mapping, label: str) -> dict[str, dict]:
    figures = probe.get(label, {})
    rows: dict[str, dict] = {}
    avh = figures.get("avh", {})
    rows["avh (all)"] = {k: avh[k] for k in PROBE_FIGURES if k in avh}
    for family, scores in avh.get("families", {}).items():
        rows[family] = {k: scores[k] for k in PROBE_FIGURES if k in scores}
    cmm = figures.get("cmm", {})
    rows["cmm"] = {k: cmm[k] for k in ("pa", "hr", "accuracy", "yes_ratio", "n") if k in cmm}
    if figures.get("mask"):
        rows["mask"] = dict(figures["mask"])
    return rows


def stage_label(command: str) -> str:
    """A short name of the pipeline stage an omnir1 command line ran."""
    words = command.split()
    fmt = words[words.index("--format") + 1] if "--format" in words[:-1] else None
    name = " ".join(w for w in words[:2] if not w.startswith("-"))
    return f"{name} ({fmt})" if fmt else name


def stage_times(path: str | Path) -> tuple[str, float]:
    """The wall time of each omnir1 call recorded in OMNIR1_TIMES_FILE, as a Markdown table, and
    their total."""
    lines = [json.loads(x) for x in Path(path).read_text(encoding="utf-8").splitlines() if x]
    rows = [[stage_label(r["command"]), f"{r['seconds']:.1f}", str(r["exit"])] for r in lines]
    total = sum(r["seconds"] for r in lines)
    rows.append(["total", f"{total:.1f}", ""])
    return _markdown(["stage", "seconds", "exit"], rows), total
