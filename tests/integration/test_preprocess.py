"""`omnir1 data preprocess`: shards equal what the systems decode themselves (`load_clip`,
every frame), are reused by key, rebuilt when a setting or a source changes, never read half
written, and a corrupt video stops the run with exit 2 naming it; a video listed in two splits
gets one shard."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from omnir1.cli import main
from omnir1.config import System1Params
from omnir1.data.preprocess import _FrameStore, plan_jobs, preprocess
from omnir1.data.shards import INDEX_FILE, META_FILE, load_shard, shard_dir
from omnir1.errors import ConfigError, DataError
from omnir1.media import iter_frames
from omnir1.systems.reasoning import load_clip

ROOT = Path(__file__).resolve().parents[2]
S1 = System1Params(max_pixels=128 * 28 * 28, max_frames=24)


def assert_same_as_decoding(shards: Path, fmt: str, root: Path, prefer: str, cfg=S1) -> None:
    for job in plan_jobs(fmt, root, prefer):
        clip, frames = load_shard(shards, job.video_id, cfg=cfg)
        ref = load_clip(job.source, audio=job.audio, cfg=cfg, folder_fps=job.folder_fps)
        assert clip.frames.dtype == np.uint8 and np.array_equal(clip.frames, ref.frames)
        assert np.array_equal(clip.times, ref.times)
        assert np.array_equal(clip.source_indices, ref.source_indices)
        assert clip.native_size == ref.native_size and clip.duration_s == ref.duration_s
        if ref.audio is None:
            assert clip.audio is None
            assert not (shard_dir(shards, job.video_id) / "audio.npy").exists()
        else:
            assert clip.audio.dtype == np.float32 and np.array_equal(clip.audio, ref.audio)
        assert isinstance(frames, np.memmap) and frames.dtype == np.uint8
        every = np.stack([f.image for f in iter_frames(job.source, folder_fps=job.folder_fps)])
        assert np.array_equal(frames, every)


@pytest.fixture
def revos_copy(synth_sets, tmp_path) -> Path:
    """The ReVOS set (frames, mp4 and wav); one video loses its wav file, so that it has audio
    only in its mp4 and none as frames."""
    root = tmp_path / "revos"
    shutil.copytree(synth_sets["revos"], root)
    (root / "Audio" / "syn0000.wav").unlink()
    return root


@pytest.fixture
def refavs_copy(synth_sets, tmp_path) -> Path:
    root = tmp_path / "refavs"
    shutil.copytree(synth_sets["refavs"], root)
    return root


@pytest.mark.slow
@pytest.mark.parametrize(("prefer", "workers"), [("frames", 1), ("video", 2)])
def test_revos_shards_equal_decoding(revos_copy, tmp_path, prefer, workers):
    shards = tmp_path / "shards"
    summary = preprocess("revos", revos_copy, shards, S1, workers=workers, prefer=prefer)
    jobs = plan_jobs("revos", revos_copy, prefer)
    assert summary["videos"] == summary["built"] == len(jobs) == 6
    assert {j.kind for j in jobs} == {prefer}
    assert_same_as_decoding(shards, "revos", revos_copy, prefer)
    silent = load_shard(shards, "syn0000")[0].audio
    assert (silent is None) == (prefer == "frames")  # the mp4 carries the track
    index = json.loads((shards / INDEX_FILE).read_text())
    assert [s["video_id"] for s in index["shards"]] == sorted(j.video_id for j in jobs)
    meta = json.loads((shard_dir(shards, "syn0001") / META_FILE).read_text())
    assert meta["source"] == ("Videos/syn0001.mp4" if prefer == "video" else "JPEGImages/syn0001")
    assert meta["system1"] == {"fps": 2.0, "max_frames": 24, "max_pixels": 128 * 28 * 28}


def test_refavs_reuse_rebuild_and_settings_check(refavs_copy, tmp_path):
    shards = tmp_path / "shards"
    first = preprocess("refavs", refavs_copy, shards, S1)
    assert first["built"] == first["videos"] == 6 and first["bytes"] > 0
    assert_same_as_decoding(shards, "refavs", refavs_copy, "frames")
    metas = sorted(shards.glob(f"*/{META_FILE}"))
    stamps = [p.stat().st_mtime_ns for p in metas]

    again = preprocess("refavs", refavs_copy, shards, S1)
    assert again["reused"] == 6 and again["built"] == 0
    assert [p.stat().st_mtime_ns for p in metas] == stamps

    # a touched file with the same bytes keeps its key; changed bytes rebuild that video only
    frame = refavs_copy / "media" / "syn0001" / "frames" / "3.jpg"
    os.utime(frame, ns=(1, 1))
    assert preprocess("refavs", refavs_copy, shards, S1)["built"] == 0
    shutil.copy(refavs_copy / "media" / "syn0001" / "frames" / "4.jpg", frame)
    changed = preprocess("refavs", refavs_copy, shards, S1)
    assert changed["built"] == 1
    assert_same_as_decoding(shards, "refavs", refavs_copy, "frames")

    other = System1Params(max_pixels=64 * 28 * 28, max_frames=8)
    with pytest.raises(ConfigError, match=r"system1\.max_frames") as err:
        load_shard(shards, "syn0002", cfg=other)
    assert err.value.path.endswith(f"syn0002/{META_FILE}")
    rebuilt = preprocess("refavs", refavs_copy, shards, other)
    assert rebuilt["built"] == 6
    assert load_shard(shards, "syn0002", cfg=other)[0].num_frames == 8
    with pytest.raises(DataError, match="no shard"):
        load_shard(shards, "nope")


@pytest.mark.parametrize("workers", [1, 2])
def test_interrupted_run_leaves_no_partial_shard(refavs_copy, tmp_path, capsys, workers):
    shards = tmp_path / "shards"
    jobs = plan_jobs("refavs", refavs_copy)
    bad = Path(jobs[2].source) / "5.jpg"
    good = bad.read_bytes()
    bad.write_bytes(b"not a jpeg")
    leftover = shards / ".syn0004.abc123.tmp"  # what a killed run leaves behind
    leftover.mkdir(parents=True)
    (leftover / "frames.npy").write_bytes(b"half")
    args = ["data", "preprocess", "--format", "refavs", str(refavs_copy), "--out", str(shards)]
    args += ["--workers", str(workers), "--quiet", "--params", str(ROOT / "params.yaml")]

    assert main(args) == 2
    err = capsys.readouterr().err
    assert jobs[2].video_id in err and str(bad) in err
    assert not (shards / INDEX_FILE).exists() and not leftover.exists()
    assert not shard_dir(shards, jobs[2].video_id).exists()
    finished = [p.parent.name for p in shards.glob(f"*/{META_FILE}")]
    assert set(finished) >= {jobs[0].video_id, jobs[1].video_id}
    assert [p.name for p in shards.iterdir() if p.name.startswith(".")] == []
    for vid in finished:  # whatever is there is whole
        load_shard(shards, vid)

    bad.write_bytes(good)
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["reused"] == len(finished) and summary["built"] == 6 - len(finished)
    assert len(json.loads((shards / INDEX_FILE).read_text())["shards"]) == 6


@pytest.mark.slow
def test_corrupt_mp4_names_the_video(revos_copy, tmp_path, capsys):
    preprocess("revos", revos_copy, tmp_path / "shards", S1, prefer="video")
    video = revos_copy / "Videos" / "syn0003.mp4"
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    args = ["data", "preprocess", "--format", "revos", str(revos_copy)]
    args += ["--out", str(tmp_path / "shards"), "--prefer", "video", "--workers", "2", "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "'syn0003'" in err and str(video) in err
    # the shard of the old bytes is gone, not left readable; no index: the run did not finish
    assert not shard_dir(tmp_path / "shards", "syn0003").exists()
    assert not (tmp_path / "shards" / INDEX_FILE).exists()


def test_frame_store_grows_and_trims(tmp_path):
    frames = [np.full((4, 6, 3), i, np.uint8) for i in range(5)]
    for rows in (2, 9):  # container metadata undercounted / overcounted the frames
        store = _FrameStore(tmp_path / f"f{rows}.npy", rows, 4, 6)
        for f in frames:
            store.append(f, tmp_path)
        assert store.close() == 5
        assert np.array_equal(np.load(tmp_path / f"f{rows}.npy"), np.stack(frames))


def test_video_listed_in_two_splits_gets_one_shard(synth_sets, tmp_path):
    """MeViS lists valid_u videos in train too, with a copy of the frames in each split."""
    root = tmp_path / "mevis"
    shutil.copytree(synth_sets["mevis"], root)
    train, valid = root / "train", root / "valid_u"
    meta = json.loads((valid / "meta_expressions.json").read_text())
    vid = next(iter(meta["videos"]))
    shutil.rmtree(valid / "JPEGImages" / vid)
    shutil.copytree(train / "JPEGImages" / "syn0000", valid / "JPEGImages" / "syn0000")
    shutil.copy(train / "Audio" / "syn0000.wav", valid / "Audio" / "syn0000.wav")
    meta["videos"]["syn0000"] = meta["videos"].pop(vid)
    (valid / "meta_expressions.json").write_text(json.dumps(meta))
    jobs = plan_jobs("mevis", root)
    assert sorted(j.video_id for j in jobs) == sorted({j.video_id for j in jobs})
    assert next(j for j in jobs if j.video_id == "syn0000").source.startswith(str(train))

    (valid / "JPEGImages" / "syn0000" / "00007.jpg").write_bytes(b"other")
    with pytest.raises(DataError, match="files differ"):
        plan_jobs("mevis", root)
