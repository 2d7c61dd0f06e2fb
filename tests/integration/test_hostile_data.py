"""Data sets and arguments from the wild, tried as a hostile user would: each case is a clear
error naming the file and the field (exit code 2, no traceback), nothing is decoded before its
size is checked, and every output location holds the complete previous result or the complete
new one."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from omnir1.cli import main
from omnir1.data import rle
from omnir1.errors import DataError
from omnir1.eval.predictions import PredictionError, read_mask_png
from omnir1.fsutil import atomic_dir, atomic_group, clear_stale, finish_group

OMNIR1 = str(Path(sys.executable).with_name("omnir1"))


def omnir1(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([OMNIR1, *args], capture_output=True, text=True, timeout=300)


def fails_clearly(out: subprocess.CompletedProcess, *fragments: str) -> None:
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    for fragment in fragments:
        assert fragment in out.stderr, (fragment, out.stderr)


@pytest.fixture
def revos_copy(synth_sets, tmp_path) -> Path:
    return Path(shutil.copytree(synth_sets["revos"], tmp_path / "revos"))


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("non-UTF-8 byte", b'{"videos": {"a\xff": {}}}', "not UTF-8"),
        ("nested 100,000 deep", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        ("a 5,000-digit number", b'{"videos": {"v": {"fps": ' + b"9" * 5000 + b"}}}", "digits"),
    ],
)
def test_annotation_files_that_do_not_read_are_named(revos_copy, name, content, says):
    meta = revos_copy / "meta_expressions_valid_.json"
    meta.write_bytes(content)
    out = omnir1("data", "check", "--format", "revos", str(revos_copy))
    fails_clearly(out, "meta_expressions_valid_.json", says)


def test_a_folder_where_a_file_belongs_and_the_reverse(revos_copy, tmp_path):
    meta = revos_copy / "meta_expressions_valid_.json"
    meta.unlink()
    meta.mkdir()
    fails_clearly(
        omnir1("data", "check", "--format", "revos", str(revos_copy)),
        "meta_expressions_valid_.json",
        "is a folder",
    )
    params = tmp_path / "params_dir"
    params.mkdir()
    fails_clearly(
        omnir1(
            "data",
            "fetch",
            "--format",
            "revos",
            "--out",
            str(tmp_path / "o"),
            "--params",
            str(params),
        ),
        "params_dir",
        "is a folder",
    )
    a_file = tmp_path / "not_a_folder"
    a_file.write_text("x")
    fails_clearly(omnir1("data", "check", "--format", "revos", str(a_file)), "not_a_folder")


def test_rle_sizes_are_checked_before_anything_is_decoded():
    bomb = {"size": [100_000, 100_000], "counts": [10_000_000_000]}  # 9 GiB as a mask
    with pytest.raises(DataError, match="over the limit"):
        rle.decode(bomb, source="masks.json", field="v.masks[0]")
    mask = rle.encode(np.ones((4, 6), bool))
    with pytest.raises(DataError, match="mask size 4x6 does not match its frame 4x8") as err:
        rle.decode(mask, source="masks.json", field="v.masks[0]", shape=(4, 8))
    assert err.value.field == "v.masks[0]"
    assert rle.decode(mask, shape=(4, 6)).all()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` (grey, 8 bit) with a single tiny IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))


@pytest.mark.parametrize("claimed", [(100_000, 100_000), (20_000, 20_000)])
def test_prediction_pngs_are_sized_by_their_header_before_decoding(tmp_path, claimed):
    path = tmp_path / "00000.png"
    path.write_bytes(png_header_only(*claimed))
    with pytest.raises(PredictionError, match=f"is {claimed[0]}x{claimed[1]}"):
        read_mask_png(path, (180, 320))


@pytest.mark.parametrize(
    "args",
    [
        ["data", "synth", "--format", "revos", "--out", "{tmp}/s", "--videos", "1" + "0" * 20],
        ["data", "synth", "--format", "revos", "--out", "{tmp}/s", "--duration", "inf"],
        ["media", "inspect", "{tmp}", "--fps", "-3"],
        ["media", "inspect", "{tmp}", "--fps", "nan"],
        [
            "infer",
            "--video",
            "{tmp}",
            "--fps",
            "0",
            "--expression",
            "x",
            "--models",
            "{tmp}/m",
            "--out",
            "{tmp}/out",
        ],
    ],
)
def test_numeric_arguments_are_checked_before_anything_runs(tmp_path, args):
    out = omnir1(*[a.format(tmp=tmp_path) for a in args])
    fails_clearly(out, "argument --")
    assert not (tmp_path / "out").exists() and not (tmp_path / "s").exists()


def test_fetch_checks_the_copy_before_it_replaces_a_good_set(synth_sets, tmp_path, capsys):
    out, metrics = tmp_path / "sets" / "revos", tmp_path / "fetch.json"
    params = tmp_path / "params.yaml"
    args = ["data", "fetch", "--format", "revos", "--out", str(out), "--params", str(params)]
    params.write_text(f"data:\n  source: {synth_sets['revos']}\n")
    assert main([*args, "--quiet"]) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    broken = Path(shutil.copytree(synth_sets["revos"], tmp_path / "broken"))
    (broken / "meta_expressions_valid_.json").write_text("{not json")
    params.write_text(f"data:\n  source: {broken}\n")
    capsys.readouterr()
    assert main([*args, "--quiet", "--metrics", str(metrics)]) == 2
    err = capsys.readouterr().err
    assert "meta_expressions_valid_.json" in err and str(out) in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # the good set
    report = json.loads(metrics.read_text())
    assert not report["ok"] and report["source"] == str(broken)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging left


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_staging_left_by_killed_runs_is_removed_by_the_next(tmp_path):
    host = "".join(c if c.isalnum() else "-" for c in socket.gethostname())[:40]
    out = tmp_path / "revos"
    stale = tmp_path / f".revos.{host}-{dead_pid()}.x1y2.tmp"
    (stale / "JPEGImages").mkdir(parents=True)
    (stale / "JPEGImages" / "big.bin").write_bytes(b"\0" * 1000)
    stale_file = tmp_path / f".revos.{host}-{dead_pid()}.abc.tmp"
    stale_file.write_text("half a file")
    mine = tmp_path / f".revos.{host}-{os.getpid()}.live.tmp"  # a run still going
    mine.mkdir()
    other_host = tmp_path / ".revos.elsewhere-1.live.tmp"  # another machine's, same PVC
    other_host.mkdir()
    assert (
        main(
            [
                "data",
                "synth",
                "--format",
                "revos",
                "--out",
                str(out),
                "--videos",
                "1",
                "--duration",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    assert not stale.exists() and not stale_file.exists()
    assert mine.exists() and other_host.exists()
    # a kill between the two renames of a folder swap: the previous folder is put back
    old = tmp_path / ".model.old"
    old.mkdir()
    (old / "weights").write_text("previous")
    clear_stale(tmp_path / "model")
    assert (tmp_path / "model" / "weights").read_text() == "previous"
    with atomic_dir(tmp_path / "model") as staging:
        (staging / "weights").write_text("new")
    assert (tmp_path / "model" / "weights").read_text() == "new"


def test_files_written_together_appear_together(tmp_path):
    targets = [tmp_path / "e.json", tmp_path / "e.csv", tmp_path / "e.html"]
    for t in targets:
        t.write_text("old")
    # killed while the report renders
    with pytest.raises(KeyboardInterrupt), atomic_group(*targets) as staged:
        staged[0].write_text("new")
        staged[1].write_text("new")
        raise KeyboardInterrupt
    assert [t.read_text() for t in targets] == ["old"] * 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.csv", "e.html", "e.json"]
    # killed between the renames: the journal lets the next run complete them
    staged = [tmp_path / f".{t.name}.ready.tmp" for t in targets]
    for s in staged:
        s.write_text("new")
    journal = tmp_path / ".e.json.commit.json"
    journal.write_text(json.dumps([[str(s), str(t)] for s, t in zip(staged, targets, strict=True)]))
    staged[0].replace(targets[0])  # the first rename happened, then the kill
    assert finish_group(targets[0])
    assert [t.read_text() for t in targets] == ["new"] * 3 and not journal.exists()


def test_evaluate_writes_its_json_csv_and_html_together(synth_sets, tmp_path, monkeypatch):
    from omnir1.eval import report

    out = tmp_path / "revos.json"
    (tmp_path / "none").mkdir()  # no predictions: every expression scored as missing
    args = ["evaluate", "--benchmark", "revos", "--data", str(synth_sets["revos"])]
    args += ["--pred", str(tmp_path / "none"), "--out", str(out), "--quiet"]
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.glob("revos.*")}
    assert set(before) == {"revos.json", "revos.csv", "revos.html"}

    def killed(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "write_html", killed)
    with pytest.raises(KeyboardInterrupt):
        main(args)
    assert {p.name: p.read_bytes() for p in tmp_path.glob("revos.*")} == before
