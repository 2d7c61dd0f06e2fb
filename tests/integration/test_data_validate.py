"""`omnir1 data validate` on the synthetic sets (all pass) and on broken copies of them (each
fails, naming the check and counting its rows; the CLI exits 2)."""

import csv
import json
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omnir1.data.validate import validate_dataset

ROOT = Path(__file__).resolve().parents[2]


def omnir1(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "omnir1.cli", *args], capture_output=True, text=True
    )


@pytest.mark.parametrize("fmt", ["refavs", "revos", "mevis"])
def test_synthetic_sets_pass(synth_sets, tmp_path, fmt):
    report = validate_dataset(fmt, synth_sets[fmt], tmp_path)
    assert report["ok"], report["failures"]
    assert report["rows"]["videos"] == 6 and report["rows"]["expressions"] > 6
    assert {p.name for p in tmp_path.iterdir()} == {
        "data_docs",
        "report.json",
        "expressions.csv",
        "videos.csv",
        "splits.csv",
    }
    index = (tmp_path / "data_docs" / "index.html").read_text()  # one result per table
    assert index.count("'_validation_success_text': 'Success'") == 3
    videos = list(csv.DictReader((tmp_path / "videos.csv").open()))
    assert {v["audio_sample_rate"] for v in videos} == {"16000"}
    assert {v["num_frames"] for v in videos} == {"10" if fmt == "refavs" else "60"}


# ------------------------------------------------------------------------- broken copies


def copy(synth_sets, tmp_path: Path, fmt: str) -> Path:
    return Path(shutil.copytree(synth_sets[fmt], tmp_path / fmt))


def write_wav(path: Path, seconds: float, rate: int) -> None:
    t = np.arange(round(seconds * rate)) / rate
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(rate)
        fh.writeframes((0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2").tobytes())


def null_with_mask(root: Path) -> None:
    """Draw an object into the (empty) ground truth that the null rows of test_n point at."""
    with (root / "metadata.csv").open() as fh:
        vid = next(r["vid"] for r in csv.DictReader(fh) if r["split"] == "test_n")
    png = root / "gt_mask" / vid / "fid_0" / "00003.png"
    mask = np.zeros((180, 320), np.uint8)
    mask[40:80, 100:160] = 255
    Image.fromarray(mask).save(png)


def duplicated_row(root: Path) -> None:
    lines = (root / "metadata.csv").read_text().splitlines()
    (root / "metadata.csv").write_text("\n".join([*lines, lines[1]]) + "\n")


def drop_last_frame(root: Path) -> None:
    (root / "media" / "syn0002" / "frames" / "9.jpg").unlink()


def audio_8khz(root: Path) -> None:
    write_wav(root / "Audio" / "syn0000.wav", 10.0, 8000)


def truncated_video(root: Path) -> None:
    """Re-encode syn0001.mp4 with its first 30 frames (5 s) and its 10 s soundtrack."""
    from omnir1.media import load_audio, write_video

    folder = root / "JPEGImages" / "syn0001"
    frames = [np.asarray(Image.open(folder / f"{i:05d}.jpg")) for i in range(30)]
    audio = load_audio(root / "Audio" / "syn0001.wav")
    write_video(root / "Videos" / "syn0001.mp4", frames, fps=6, audio=audio)


def video_in_two_splits(root: Path) -> None:
    train = json.loads((root / "meta_expressions_train_.json").read_text())
    valid_path = root / "meta_expressions_valid_.json"
    valid = json.loads(valid_path.read_text())
    valid["videos"]["syn0000"] = train["videos"]["syn0000"]
    valid_path.write_text(json.dumps(valid))


def missing_split(root: Path) -> None:
    shutil.rmtree(root / "valid_u")


BREAKS = {
    # name: (format, how to break a copy, {failed check: failed rows (None: table-level)})
    "null expression with a mask": ("refavs", null_with_mask, {"expressions.null_empty": 2}),
    "duplicated expression id": ("refavs", duplicated_row, {"expressions.ids_unique": 2}),
    "video with fewer frames": ("refavs", drop_last_frame, {"videos.frames": 1}),
    "audio at 8 kHz": ("revos", audio_8khz, {"videos.audio_rate": 1}),
    "truncated video": (
        "revos",
        truncated_video,
        {"videos.frames_match_video": 1, "videos.av_drift": 1},
    ),
    "video in two splits": ("revos", video_in_two_splits, {"videos.ids_unique": 2}),
    "missing split": (
        "mevis",
        missing_split,
        {"splits.present": None, "splits.train_fraction": 1},
    ),
}


@pytest.mark.parametrize("case", list(BREAKS))
def test_broken_copy_fails_naming_the_check(synth_sets, tmp_path, case):
    fmt, breaks, expected = BREAKS[case]
    root = copy(synth_sets, tmp_path, fmt)
    breaks(root)
    report = validate_dataset(fmt, root, tmp_path / "report")
    failed = {o["key"]: o for o in report["results"] if not o["success"]}
    if case == "video in two splits":  # its expressions are listed twice too
        assert failed.pop("expressions.ids_unique")["rows_failed"] > 2
    assert {k: o["rows_failed"] for k, o in failed.items()} == expected
    for o in failed.values():
        assert o["examples"] or o["rows_failed"] is None
    suites = {key.split(".")[0] for key in expected}  # the Data Docs page of each one's suite
    pages = {p.parts[-4]: p for p in (tmp_path / "report/data_docs/validations").rglob("*.html")}
    assert all("Failed" in pages[suite].read_text() for suite in suites)


def test_undecodable_mask_fails_once_with_the_reason(synth_sets, tmp_path):
    root = copy(synth_sets, tmp_path, "revos")
    masks = json.loads((root / "mask_dict.json").read_text())
    t = next(i for i, m in enumerate(masks["0"]) if m)
    masks["0"][t] = {"size": [180, 320], "counts": "~~~~"}
    (root / "mask_dict.json").write_text(json.dumps(masks))
    report = validate_dataset("revos", root, tmp_path / "report")
    (failed,) = [o for o in report["results"] if not o["success"]]
    assert failed["key"] == "expressions.readable" and failed["rows_failed"] >= 1
    assert f"mask_dict.json: 0[{t}]: RLE does not decode" in failed["examples"][0]["error"]


def test_cli_exits_2_naming_the_failed_check(synth_sets, tmp_path):
    root = copy(synth_sets, tmp_path, "revos")
    audio_8khz(root)
    out = tmp_path / "report"
    args = ["--out", str(out), "--params", str(ROOT / "params.yaml"), "--quiet"]
    bad = omnir1("data", "validate", "--format", "revos", str(root), *args)
    assert bad.returncode == 2, bad.stdout
    assert "Traceback" not in bad.stderr
    assert bad.stderr.startswith(f"omnir1: error: {root}: 1 of ")
    assert "videos.audio_rate (expect_column_values_to_be_in_set audio_sample_rate): 1 of 6" in (
        bad.stderr
    )
    assert str(out / "data_docs" / "index.html") in bad.stderr
    summary = json.loads(bad.stdout)
    assert summary["ok"] is False and summary["failed"] == 1
    report = json.loads((out / "report.json").read_text())
    (rate,) = [o for o in report["results"] if o["key"] == "videos.audio_rate"]
    assert rate["examples"] == [
        {"split": "train", "video_id": "syn0000", "audio_sample_rate": 8000, "has_audio": True}
    ]


def test_a_failed_step_keeps_its_report_on_the_volume(synth_sets, tmp_path, monkeypatch):
    """The Kubeflow step fails on a broken set, after writing Data Docs and report.json into its
    output (not uploaded when a step fails) and into $OMNIR1_REPORT_COPY/RUN/validate (the data
    PVC), as the CLI's --report-copy does."""
    from omnir1.errors import DataError
    from omnir1.kube import steps

    datasets = tmp_path / "datasets"
    audio_8khz(copy(synth_sets, datasets, "revos"))
    params = tmp_path / "params.yaml"
    params.write_text("data: {formats: [revos]}\n")
    monkeypatch.setenv(steps.REPORT_COPY_ENV, str(tmp_path / "pvc" / "reports"))
    monkeypatch.setenv("KFP_RUN_ID", "run-1")
    copy_dir = steps.report_copy_dir("validate")
    assert copy_dir == str(tmp_path / "pvc" / "reports" / "run-1" / "validate")
    with pytest.raises(DataError, match=r"videos\.audio_rate"):
        steps.validate(str(params), str(datasets), str(tmp_path / "out"), copy_dir)
    for folder in (tmp_path / "out" / "revos", Path(copy_dir) / "revos"):
        report = json.loads((folder / "report.json").read_text())
        assert report["ok"] is False and report["failures"][0].startswith("videos.audio_rate")
        index = (folder / report["data_docs"]).read_text()
        assert index.count("'_validation_success_text': 'Failed'") == 1  # the videos table
        assert not list(folder.glob(".*.tmp"))

    cli = tmp_path / "cli"  # the same with the CLI; a second run replaces the copy whole
    for _ in range(2):
        args = ["--out", str(cli / "out"), "--report-copy", str(cli / "copy"), "--quiet"]
        bad = omnir1("data", "validate", "--format", "revos", str(datasets / "revos"), *args)
        assert bad.returncode == 2, bad.stderr
    assert {p.name for p in (cli / "copy").iterdir()} == {p.name for p in (cli / "out").iterdir()}
    assert len(list((cli / "copy" / "data_docs" / "validations" / "videos").rglob("*.html"))) == 1


def test_a_relative_report_folder_works_as_dvc_passes_it(synth_sets, tmp_path, monkeypatch):
    """dvc.yaml runs `omnir1 data validate ... --out reports/validation/FORMAT` from the project
    root: GX's Data Docs site needs an absolute folder, so the relative one is resolved."""
    monkeypatch.chdir(tmp_path)
    report = validate_dataset("revos", synth_sets["revos"], Path("reports/validation/revos"))
    assert report["ok"]
    assert (tmp_path / "reports/validation/revos/data_docs/index.html").is_file()
