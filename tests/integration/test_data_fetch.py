"""The data stage (`omnir1 data fetch`): synthesised by default, imported from a folder, and a
source that is missing or unreadable fails with its name and leaves the old data set intact."""

from __future__ import annotations

import json
import shutil

from omnir1.cli import main


def fetch(tmp_path, params_text: str, fmt: str, out, metrics=None) -> int:
    params = tmp_path / "params.yaml"
    params.write_text(params_text)
    args = ["data", "fetch", "--format", fmt, "--out", str(out), "--params", str(params)]
    return main([*args, "--quiet", *(["--metrics", str(metrics)] if metrics else [])])


def test_synthesised_by_default(tmp_path):
    out, metrics = tmp_path / "refavs", tmp_path / "m.json"
    text = "data:\n  synth: {videos: 4, seed: 2, workers: 1}\n"
    assert fetch(tmp_path, text, "refavs", out, metrics) == 0
    report = json.loads(metrics.read_text())
    assert report["ok"] and report["source"] == "synth" and report["videos"] == 4
    assert (out / "synth_objects.json").is_file()


def test_short_clips_from_params_and_the_cli(tmp_path):
    text = "data:\n  synth: {videos: 2, workers: 1, layout: turns, duration_s: 4}\n"
    assert fetch(tmp_path, text, "revos", tmp_path / "fetched") == 0
    args = ["--videos", "2", "--workers", "1", "--layout", "turns", "--duration", "4", "--quiet"]
    assert main(["data", "synth", "--format", "revos", "--out", str(tmp_path / "cli"), *args]) == 0
    for folder in ("fetched", "cli"):
        summary = json.loads((tmp_path / folder / "synth_summary.json").read_text())
        assert summary["duration_s"] == 4.0 and summary["frames_per_video"] == 24


def test_imported_from_a_folder_and_bad_sources(synth_sets, tmp_path, capsys):
    out = tmp_path / "sets" / "revos"
    source = synth_sets["revos"]
    assert fetch(tmp_path, f"data:\n  source: {source}\n", "revos", out) == 0
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == sorted(
        p.relative_to(source) for p in source.rglob("*")
    )
    before = sorted(p.relative_to(out) for p in out.rglob("*"))

    capsys.readouterr()
    missing = tmp_path / "nowhere"
    assert fetch(tmp_path, f"data:\n  sources: {{revos: {missing}}}\n", "revos", out) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "data set folder not found" in err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # untouched

    broken = tmp_path / "broken"
    shutil.copytree(source, broken)
    (broken / "meta_expressions_valid_.json").write_text("{not json")
    assert fetch(tmp_path, f"data:\n  source: {broken}\n", "revos", tmp_path / "b") == 2
    err = capsys.readouterr().err
    assert "meta_expressions_valid_.json" in err


def test_the_source_stage_sees_a_folder_or_the_synthetic_settings_change(synth_sets, tmp_path):
    """`omnir1 data source` (dvc.yaml's always-run source stage): the digest moves when a file
    of the source folder or the synthetic set's settings change, and only then."""
    import shutil

    source = tmp_path / "revos"
    shutil.copytree(synth_sets["revos"], source)
    params = tmp_path / "params.yaml"
    params.write_text(f"data:\n  sources: {{revos: {source}}}\n")
    out = tmp_path / "key.json"

    def key() -> dict:
        assert (
            main(
                ["data", "source", "--format", "revos", "--out", str(out), "--params", str(params)]
            )
            == 0
        )
        return json.loads(out.read_text())

    first = key()
    assert first["source"] == str(source) and key() == first
    video = next(p for p in source.rglob("*.mp4"))
    video.write_bytes(video.read_bytes() + b"\0")
    assert key()["sha256"] != first["sha256"]
    params.write_text("data:\n  source: synth\n  synth: {videos: 3}\n")
    synth = key()
    params.write_text("data:\n  source: synth\n  synth: {videos: 4}\n")
    assert key()["sha256"] != synth["sha256"] and synth["source"] == "synth"
