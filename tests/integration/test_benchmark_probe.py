"""The evaluate and probe stages (`omnir1 benchmark`, `omnir1 probe`) with the tiny models on
the synthetic sets: every data set scored per model, the same model twice changes nothing,
probes built from the annotations, and bad arguments fail before anything is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import short_params
from omnir1.cli import main
from omnir1.config import load_params
from omnir1.eval.predict import select_expressions
from omnir1.eval.probe import AVH_FAMILIES, build_probes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def params_file(tmp_path_factory) -> Path:
    """Short completions (a random System 1 never stops on its own) and a few expressions."""
    path = short_params(
        tmp_path_factory.mktemp("params"),
        ("videos_per_split: 2 #", "videos_per_split: 1 #"),
        ("max_videos: 4 #", "max_videos: 1 #"),
        ("questions_per_video: 2 #", "questions_per_video: 1 #"),
    )
    params = load_params(path)
    assert params.evaluate.videos_per_split == 1 and params.probe.max_videos == 1
    return path


def test_benchmark_and_probe_stages(synth_sets, tiny_models, params_file, tmp_path):
    models = ["--model", f"untrained={tiny_models}", "--model", f"trained={tiny_models}"]
    data = ["--data", f"revos={synth_sets['revos']}", "--data", f"refavs={synth_sets['refavs']}"]
    evaluation = tmp_path / "metrics" / "evaluate.json"
    args = ["--params", str(params_file), "--quiet"]
    assert (
        main(
            [
                "benchmark",
                *data,
                *models,
                "--out",
                str(tmp_path / "ev"),
                "--metrics",
                str(evaluation),
                *args,
            ]
        )
        == 0
    )
    report = json.loads(evaluation.read_text())
    for label in ("untrained", "trained"):
        first_video, _, _ = select_expressions("revos", synth_sets["revos"], videos_per_split=1)
        assert report[label]["revos"]["expressions"] == len(first_video) > 0
        assert len({s.video_id for s in first_video}) == 1
        assert {"J", "F", "JF", "A", "R"} <= set(report[label]["revos"])
        assert {"mIoU", "F", "JF"} <= set(report[label]["refavs"]["seen"])
        for fmt in ("revos", "refavs"):
            run = tmp_path / "ev" / fmt / label
            assert (run / "predictions" / "predictions.json").is_file()
            assert (run / "evaluation.html").is_file() and (run / "evaluation.csv").is_file()
    # greedy decoding: the same model folder twice scores the same, to the last digit
    assert report["untrained"] == report["trained"]
    assert report["delta"]["revos"]["JF"] == 0.0
    assert set(report["seconds"]["revos"]["trained"]) == {"predict", "evaluate"}
    # System 1's clips from the preprocessed shards: the same predictions, to the last digit
    for fmt in ("revos", "refavs"):
        made = [
            "data",
            "preprocess",
            "--format",
            fmt,
            str(synth_sets[fmt]),
            "--out",
            str(tmp_path / "shards" / fmt),
            "--params",
            str(params_file),
            "--quiet",
        ]
        assert main(made) == 0
    from_shards = tmp_path / "metrics" / "evaluate_shards.json"
    assert (
        main(
            [
                "benchmark",
                *data,
                "--model",
                f"trained={tiny_models}",
                "--shards-root",
                str(tmp_path / "shards"),
                "--out",
                str(tmp_path / "ev2"),
                "--metrics",
                str(from_shards),
                *args,
            ]
        )
        == 0
    )
    assert json.loads(from_shards.read_text())["trained"] == report["trained"]

    probe = tmp_path / "metrics" / "probe.json"
    assert (
        main(
            [
                "probe",
                *data,
                *models,
                "--evaluation",
                str(evaluation),
                "--out",
                str(tmp_path / "pr"),
                "--metrics",
                str(probe),
                *args,
            ]
        )
        == 0
    )
    result = json.loads(probe.read_text())
    counts = result["probes"]
    assert set(counts) == {"revos", "refavs"}
    for label in ("untrained", "trained"):
        figures = result[label]
        n = sum(
            v["yes"] + v["no"]
            for fams in counts.values()
            for f, v in fams.items()
            if f in AVH_FAMILIES
        )
        assert figures["avh"]["n"] == n > 0
        assert figures["cmm"]["n"] == sum(f["cmm"]["yes"] + f["cmm"]["no"] for f in counts.values())
        assert 0 <= figures["avh"]["yes_ratio"] <= figures["avh"]["answered"] <= 1
        assert figures["mask"]["revos_R"] == report[label]["revos"]["R"]
        records = [
            json.loads(line)
            for line in (tmp_path / "pr" / "refavs" / f"{label}.jsonl").read_text().splitlines()
        ]
        assert len(records) == sum(v["yes"] + v["no"] for v in counts["refavs"].values())
        assert all({"answer", "said", "expected", "family"} <= set(r) for r in records)
    assert result["untrained"]["avh"] == result["trained"]["avh"]


def test_probes_of_a_data_set_without_an_objects_file(synth_sets, params_file, tmp_path):
    data = tmp_path / "refavs"
    shutil.copytree(synth_sets["refavs"], data)
    (data / "synth_objects.json").unlink()
    probes, videos = build_probes("refavs", data, load_params(params_file).probe)
    assert probes and {p.family for p in probes} == {"cmm"}
    assert set(videos) == {p.video_id for p in probes}
    # present: the video's referring expressions; absent: its null expressions
    samples, _, _ = select_expressions("refavs", data)
    null = {(s.video_id, s.expression) for s in samples if s.is_null}
    for p in probes:
        assert ((p.video_id, p.text) in null) is (not p.expected)


def test_bad_arguments_fail_before_writing(synth_sets, tiny_models, params_file, tmp_path, capsys):
    metrics = tmp_path / "m.json"
    base = [
        "--model",
        f"a={tiny_models}",
        "--out",
        str(tmp_path / "o"),
        "--metrics",
        str(metrics),
        "--params",
        str(params_file),
        "--quiet",
    ]
    assert main(["benchmark", "--data", f"kinetics={synth_sets['revos']}", *base]) == 2
    assert "unknown format 'kinetics'" in capsys.readouterr().err
    assert main(["probe", "--data", str(synth_sets["revos"]), *base]) == 2
    assert "expected NAME=PATH" in capsys.readouterr().err
    assert main(["benchmark", *base]) == 2
    assert "--data-root" in capsys.readouterr().err
    assert not metrics.exists() and not (tmp_path / "o").exists()
