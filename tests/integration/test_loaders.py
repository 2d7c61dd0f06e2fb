"""Loaders of the three official layouts and `omnir1 data check`, on good and broken sets."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omnir1.benchmarks.registry import load
from omnir1.data.check import check_dataset
from omnir1.data.records import Sample


def omnir1(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "omnir1.cli", *args], capture_output=True, text=True
    )


@pytest.mark.parametrize(
    ("fmt", "splits", "fps", "frames"),
    [
        ("refavs", {"train", "test_s", "test_u", "test_n"}, 1.0, 10),
        ("revos", {"train", "valid"}, 6.0, 60),
        ("mevis", {"train", "valid_u"}, 6.0, 60),
    ],
)
def test_loader_yields_unified_records(synth_sets, fmt, splits, fps, frames):
    samples = list(load(fmt, synth_sets[fmt]))
    assert {s.split for s in samples} == splits
    for s in samples:
        assert isinstance(s, Sample) and s.dataset == fmt
        assert s.fps == fps and s.num_frames == frames and s.duration_s == pytest.approx(10.0)
        assert s.audio_path is not None and s.audio_path.exists()
        assert all(p.exists() for p in s.frame_paths)
        assert s.expression_type in ("referring", "reasoning", "null")
        first = next(s.masks())
        assert first.shape == (len(s.object_ids), 180, 320) and first.dtype == bool
        json.dumps(s.to_dict())  # manifest rows are JSON
    if fmt != "refavs":
        assert all(s.video_path is not None and s.video_path.suffix == ".mp4" for s in samples)
    boxes = next(b for s in samples if not s.is_null for b in s.boxes() if b[0] is not None)
    x0, y0, x1, y1 = boxes[0]
    assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 180


def test_loading_is_lazy(synth_sets, monkeypatch):
    """Loading a set decodes no mask: masks are read only when a frame is asked for."""
    from omnir1.data import rle

    calls = []
    monkeypatch.setattr(rle, "decode", lambda *a, **k: calls.append(1))
    samples = list(load("revos", synth_sets["revos"]))
    assert samples and not calls


@pytest.mark.parametrize("fmt", ["refavs", "revos", "mevis"])
def test_check_summary(synth_sets, fmt):
    out = omnir1("data", "check", "--format", fmt, str(synth_sets[fmt]))
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["ok"] and summary["videos"] == 6 and summary["problems"] == []
    assert summary["null_expressions"] == summary["expressions_by_type"]["null"] > 0
    assert summary["frames"] == 6 * (10 if fmt == "refavs" else 60)
    assert summary["expressions"] == sum(summary["expressions_by_split"].values())
    assert summary["videos_with_audio"] == 6


# ------------------------------------------------------------------------- broken sets


@pytest.fixture
def broken(synth_sets, tmp_path):
    def copy(fmt: str) -> Path:
        return Path(shutil.copytree(synth_sets[fmt], tmp_path / fmt))

    return copy


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def first_video(meta: dict) -> tuple[str, dict]:
    vid = next(iter(meta["videos"]))
    return vid, meta["videos"][vid]


def assert_check_fails(fmt: str, root: Path, *fragments: str) -> None:
    out = omnir1("data", "check", "--format", fmt, str(root))
    assert out.returncode == 2, out.stdout
    assert "Traceback" not in out.stderr
    for fragment in fragments:
        assert fragment in out.stderr, (fragment, out.stderr)


def test_missing_frame_file(broken):
    root = broken("revos")
    (root / "JPEGImages" / "syn0000" / "00007.jpg").unlink()
    assert_check_fails("revos", root, "JPEGImages/syn0000/00007.jpg", "frame file not found")


def test_bad_rle(broken):
    root = broken("revos")
    edit_json(
        root / "mask_dict.json",
        lambda d: d["0"].__setitem__(0, {"size": [180, 320], "counts": "~~~~"}),
    )
    assert_check_fails("revos", root, "mask_dict.json: 0[0]: RLE does not decode")


def test_mask_size_does_not_match_frame(broken):
    from omnir1.data import rle

    root = broken("mevis")
    small = rle.encode(np.ones((90, 160), bool))
    edit_json(root / "train" / "mask_dict.json", lambda d: d["0"].__setitem__(3, small))
    assert_check_fails(
        "mevis",
        root,
        "train/mask_dict.json: 0[3]: mask size 90x160 does not match its frame 180x320",
    )


def test_refavs_mask_png_wrong_size(broken):
    root = broken("refavs")
    png = next((root / "gt_mask").glob("*/fid_*/00002.png"))
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(png)
    assert_check_fails("refavs", root, str(png.relative_to(root)), "does not match its frame")


def test_unknown_video_id_in_metadata(broken):
    root = broken("refavs")
    with (root / "metadata.csv").open("a") as fh:
        fh.write("nope,nope_0,train,1,the red circle\n")
    assert_check_fails("refavs", root, "frames of video 'nope'", "not found")


def test_unknown_anno_id(broken):
    root = broken("revos")

    def change(meta):
        _, video = first_video(meta)
        next(e for e in video["expressions"].values() if e["anno_id"])["anno_id"][0] = 999999

    edit_json(root / "meta_expressions_train_.json", change)
    assert_check_fails("revos", root, "mask_dict.json: 999999: unknown anno_id 999999")


def test_unknown_video_in_foreground(broken):
    root = broken("revos")
    edit_json(
        root / "mask_dict_foreground.json", lambda d: d.__setitem__("ghost", {"masks_rle": []})
    )
    assert_check_fails("revos", root, "mask_dict_foreground.json: ghost: unknown video id 'ghost'")


@pytest.mark.parametrize("escape", ["../../etc", "../outside"])
def test_path_escaping_the_data_root(broken, escape):
    root = broken("revos")

    def change(meta):
        _, video = first_video(meta)
        meta["videos"] = {escape: video}

    edit_json(root / "meta_expressions_valid_.json", change)
    assert_check_fails("revos", root, "meta_expressions_valid_.json", "invalid path component '..'")


def test_refavs_vid_escaping(broken):
    root = broken("refavs")
    with (root / "metadata.csv").open("a") as fh:
        fh.write("../../tmp,x_0,train,1,the red circle\n")
    assert_check_fails("refavs", root, "metadata.csv: line", ": vid: invalid path component '..'")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("type_id", "x", "type_id must be one of [0, 1, 2]"),
        ("obj_id", 3, "expected a list of ids"),
        ("exp", "", "expected a non-empty string"),
    ],
)
def test_wrong_types(broken, field, value, message):
    root = broken("revos")
    edit_json(
        root / "meta_expressions_train_.json",
        lambda meta: first_video(meta)[1]["expressions"]["0"].__setitem__(field, value),
    )
    assert_check_fails(
        "revos", root, "meta_expressions_train_.json: videos.syn0000.expressions.0", message
    )


def test_null_expression_with_visible_mask(broken):
    root = broken("refavs")
    png = next((root / "gt_mask").glob("*/fid_0/00000.png"))
    Image.fromarray(np.full((180, 320), 255, np.uint8)).save(png)
    assert_check_fails("refavs", root, "null expression", "has a non-empty mask")


def test_missing_annotation_file(tmp_path):
    assert_check_fails("mevis", tmp_path, "no {split}/meta_expressions.json found")
    assert_check_fails("refavs", tmp_path, "metadata.csv: file not found")


def test_check_collects_several_problems(broken):
    root = broken("revos")
    (root / "JPEGImages" / "syn0000" / "00001.jpg").unlink()
    (root / "JPEGImages" / "syn0001" / "00002.jpg").unlink()
    report = check_dataset("revos", root)
    assert not report.ok and len(report.problems) == 2


def test_refavs_official_header_and_val_split(broken):
    """The official metadata.csv has its own column order and a `val` split; the loader reads
    columns by name."""
    root = broken("refavs")
    lines = (root / "metadata.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]
    rows[0]["split"] = "val"
    order = ["exp", "fid", "split", "uid", "vid"]  # any order works
    text = "\n".join([",".join(order)] + [",".join(r[c] for c in order) for r in rows])
    (root / "metadata.csv").write_text(text + "\n")
    samples = list(load("refavs", root))
    assert samples[0].split == "val" and len(samples) == len(rows)
