"""The pipeline report from hand-written stage outputs: the headline numbers and their changes,
every section present, and a stage that has not run shown as missing, not invented."""

import json

import pytest

from omnir1.eval.benchmark import difference, headline
from omnir1.report import build_report


def write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def test_headline_figures_per_benchmark():
    revos = {"overall": {"expressions": 4, "J": 0.5, "F": 0.7, "JF": 0.6, "A": 0.9, "R": 0.8}}
    assert headline("revos", revos) == {
        "expressions": 4,
        "J": 0.5,
        "F": 0.7,
        "JF": 0.6,
        "A": 0.9,
        "R": 0.8,
    }
    refavs = {
        "seen": {
            "official": {"mIoU": 0.4, "F": 0.5, "batches": 1},
            "davis": {"J": 0.3, "F": 0.3, "JF": 0.3},
            "empty_prediction_rate": 0.25,
            "expressions": 4,
        },
        "null": {
            "official": {"S": 0.1, "batches": 1},
            "davis": {"J": 1.0, "F": 1.0, "JF": 1.0},
            "empty_prediction_rate": 0.75,
            "expressions": 4,
        },
    }
    got = headline("refavs", refavs)
    assert got["seen"] == {
        "mIoU": 0.4,
        "F": 0.5,
        "JF": 0.3,
        "empty_prediction_rate": 0.25,
        "expressions": 4,
    }
    assert got["null"] == {"S": 0.1, "empty_prediction_rate": 0.75, "expressions": 4}


def test_difference_is_after_minus_before_on_shared_numbers():
    after = {"revos": {"JF": 0.6, "expressions": 4}, "refavs": {"seen": {"mIoU": 0.5}}, "x": 1}
    before = {"revos": {"JF": 0.4, "expressions": 4}, "refavs": {"seen": {}}}
    assert difference(after, before) == {
        "revos": {"JF": pytest.approx(0.2)},
        "refavs": {"seen": {}},
    }


def test_report_from_stage_outputs(tmp_path):
    metrics, reports = tmp_path / "metrics", tmp_path / "reports"
    write(metrics / "train.json", {"steps": 3, "step_seconds": {"generation_s": 2.0}})
    curve = [
        {"step": s, "reward": r, "time/generation_s": 2.0, "time/update_s": 1.0}
        for s, r in enumerate([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], 1)
    ]
    write(metrics / "train_curve.json", curve)
    models = {"untrained": "models/warm", "trained": "runs/train/model"}
    write(
        metrics / "evaluate.json",
        {
            "untrained": {"revos": {"JF": 0.25}},
            "trained": {"revos": {"JF": 0.5}},
            "models": models,
            "settings": {"data": {}},
        },
    )
    probe = {
        label: {
            "avh": {"accuracy": acc, "yes_ratio": 0.5, "n": 8, "families": {}},
            "cmm": {"pa": 0.5, "hr": 0.75, "n": 8},
            "mask": {"revos_R": 0.9},
        }
        for label, acc in (("untrained", 0.5), ("trained", 0.625))
    }
    write(metrics / "probe.json", {**probe, "models": models})
    out = reports / "index.html"
    summary = build_report(metrics, reports, out)
    page = out.read_text()
    assert "| revos JF | 0.2500 | 0.5000 | 0.2500 |" in summary
    assert "| probe avh.accuracy | 0.5000 | 0.6250 | 0.1250 |" in summary
    assert "mean group reward (first / last 2 steps) | 0.1500 | 0.9500 | 0.8000" in summary
    assert out.with_suffix(".md").read_text().strip() == summary
    for section in ("Headline", "Training (GRPO)", "Benchmarks", "Hallucination probes"):
        assert f">{section}" in page
    assert "data:image/png;base64," in page  # the reward curves
    assert "The register stage has not run." in page
    assert "registry" not in summary  # no decision was written: none is claimed


def test_report_before_any_stage(tmp_path):
    summary = build_report(tmp_path / "m", tmp_path / "r", tmp_path / "r" / "index.html")
    page = (tmp_path / "r" / "index.html").read_text()
    assert "No stage has written metrics yet." in page
    assert "The evaluate stage has not run." in page and "The probe stage has not run." in page
    assert summary.count("\n") == 1  # the table header only


def test_stage_times_table(tmp_path):
    from omnir1.report import stage_times

    times = tmp_path / "times.jsonl"
    times.write_text(
        '{"command": "data fetch --format revos --out d", "seconds": 4.25, "exit": 0}\n'
        '{"command": "train --data d --format revos", "seconds": 300.0, "exit": 0}\n'
        '{"command": "benchmark --data-root data/sets", "seconds": 95.5, "exit": 2}\n'
    )
    table, total = stage_times(times)
    assert total == pytest.approx(399.75)
    lines = table.splitlines()
    assert lines[2] == "| data fetch (revos) | 4.2 | 0 |"
    assert lines[3] == "| train (revos) | 300.0 | 0 |"
    assert lines[4] == "| benchmark | 95.5 | 2 |"
    assert lines[5] == "| total | 399.8 |  |"


def test_every_cli_call_records_its_time_when_asked(tmp_path, monkeypatch, capsys):
    import json

    from omnir1.cli import main

    times = tmp_path / "times.jsonl"
    monkeypatch.setenv("OMNIR1_TIMES_FILE", str(times))
    args = ["benchmark", "--data", "nope", "--model", "a=b", "--out", "o", "--metrics", "m"]
    assert main(args) == 2  # a failed call is recorded too, with its exit status
    monkeypatch.delenv("OMNIR1_TIMES_FILE")
    assert main(args) == 2  # not asked: nothing recorded
    (line,) = [json.loads(x) for x in times.read_text().splitlines()]
    assert line["command"] == " ".join(args) and line["exit"] == 2 and line["seconds"] >= 0
