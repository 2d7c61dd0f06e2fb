"""Preprocessing: decode each video once into the inputs both systems need, as the shards of
`omnir1.data.shards` that training and evaluation read instead of decoding (docs/design.md §2, §5).

    omnir1 data preprocess --format revos data/sets/revos --out shards/revos --workers 2

Each video is decoded in one pass: every frame goes to `frames.npy` through a memory map
(memory stays one frame), and the frames System 1 samples are resized on the way, exactly as
`load_clip` would (the same sampling rule and resize; the tests compare the two).

The content key is a sha256 of the bytes of the video's source files (frame files or encoded
video, and audio) and of everything that shapes the output (System-1 settings, source kind,
decoder versions); a shard whose key matches is reused, so an interrupted run resumes where it
stopped, and a stale one is removed before it is rebuilt. File hashes are taken over from the
previous meta.json while a file's size and mtime are unchanged (as DVC does), so a rerun does
not reread the data set. Each shard is written into a temporary folder renamed into place when
complete; SHARDS/index.json is written when every video is done and removed when a run starts.
One run per SHARDS folder at a time (a run removes the temporary folders it finds).

Videos are spread over fresh worker processes (`python -m omnir1.data.preprocess`) that take
one job at a time as a JSON line on stdin and answer a JSON line on stdout: nothing is pickled.
`--workers 1` decodes in the calling process. Processes rather than threads: on 2 busy cores
both were as fast as each other (PyAV and Pillow release the GIL while decoding) apart from
~0.5 s of worker start-up, but per-frame Python work would cap threads on a many-core node,
and a crashing decoder takes down only its worker.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from omnir1.data.shards import (
    AUDIO_FILE,
    FRAMES_FILE,
    INDEX_FILE,
    META_FILE,
    SHARD_VERSION,
    SYSTEM1_FILE,
    settings_of,
    shard_dir,
)
from omnir1.errors import ConfigError, DataError, InputError, MediaError, OmniR1Error
from omnir1.fsutil import atomic_dir, read_json, write_json
from omnir1.media.audio import SAMPLE_RATE

Prefer = Literal["frames", "video"]


@dataclass(frozen=True)
class VideoJob:
    """One video to preprocess: its source (a frame folder or an encoded file) and audio."""

    video_id: str
    kind: Literal["frames", "video"]
    source: str  # absolute path of the frame folder or video file
    audio: str | None  # an audio file; None: the video's own track, if it has one
    folder_fps: float  # frame rate of a frame folder (the data set's fps)
    root: str  # data set folder; meta.json names files relative to it


def plan_jobs(fmt: str, root: str | Path, prefer: Prefer = "frames") -> list[VideoJob]:
    """One job per video of the data set, however many expressions use it.

    `prefer` "frames" reads the frame folder, as training and evaluation do (the frames the
    annotations index); "video" reads the encoded file where the data set has one. Either falls
    back to the other source when its own is missing.
    """
    from omnir1.benchmarks.registry import load

    root = Path(root)
    jobs: dict[str, VideoJob] = {}
    copies: set[VideoJob] = set()
    for s in load(fmt, root):
        folder = s.frame_paths[0].parent if s.frame_paths else None
        has_folder = folder is not None and folder.is_dir()
        has_video = s.video_path is not None and s.video_path.is_file()
        use_video = has_video and (prefer == "video" or not has_folder)
        if not (use_video or has_folder):
            raise DataError(folder or root, f"video {s.video_id!r}: no frame folder or video file")
        job = VideoJob(
            video_id=s.video_id,
            kind="video" if use_video else "frames",
            source=str(s.video_path if use_video else folder),
            audio=None if s.audio_path is None else str(s.audio_path),
            folder_fps=float(s.fps),
            root=str(root),
        )
        seen = jobs.setdefault(s.video_id, job)
        if seen != job and job not in copies:
            # MeViS lists valid_u videos in train too, each split with its own copy of the
            # frames: one shard, from the first copy, if the copies look alike
            if _listing(seen) != _listing(job):
                raise DataError(
                    job.source,
                    f"video {s.video_id!r} is also {seen.source}, whose files differ; one "
                    "shard per video id needs one source",
                )
            copies.add(job)
    return list(jobs.values())


def _listing(job: VideoJob) -> tuple:
    files = _source_files(job)
    return job.kind, job.folder_fps, [(f.name, f.stat().st_size) for f in files]


# ------------------------------------------------------------------------- content key


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _source_files(job: VideoJob) -> list[Path]:
    from omnir1.media.video import list_frame_files

    source = Path(job.source)
    if not source.exists():
        raise MediaError(source, "file not found")
    files = list_frame_files(source) if job.kind == "frames" else [source]
    return files + ([Path(job.audio)] if job.audio else [])


def _hash_sources(job: VideoJob, previous: dict | None) -> list[dict]:
    """(path, size, mtime, sha256) of each source file; a hash is taken over from the previous
    meta.json while its file's size and mtime are unchanged."""
    known = {}
    if previous is not None:
        known = {s["path"]: s for s in previous.get("sources", []) if isinstance(s, dict)}
    out = []
    for path in _source_files(job):
        rel = os.path.relpath(path, job.root)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise MediaError(path, "file not found") from None
        old = known.get(rel)
        if old and old.get("size") == st.st_size and old.get("mtime_ns") == st.st_mtime_ns:
            digest = old["sha256"]
        else:
            digest = _sha256(path)
        out.append({"path": rel, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest})
    return out


def _decoders() -> dict:
    import av
    import PIL

    return {"av": av.__version__, "pillow": PIL.__version__}


def content_key(job: VideoJob, sources: list[dict], settings: dict) -> str:
    """sha256 of the sources' bytes (in order, by role) and of everything that shapes the
    output: settings, source kind, frame rate of a folder, decoder versions, shard version."""
    payload = {
        "version": SHARD_VERSION,
        "settings": settings,
        "kind": job.kind,
        "folder_fps": job.folder_fps,
        "video": [s["sha256"] for s in (sources[:-1] if job.audio else sources)],
        "audio": sources[-1]["sha256"] if job.audio else None,
        "decoders": _decoders(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------- decoding


class _FrameStore:
    """Frames appended one by one to a `.npy` file through a memory map (memory: one frame)."""

    def __init__(self, path: Path, rows: int, height: int, width: int):
        self.path, self.n = path, 0
        self.shape = (height, width, 3)
        self.mm = self._open(path, max(1, rows))

    def _open(self, path: Path, rows: int) -> np.memmap:
        return np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(rows, *self.shape))

    def _resize(self, rows: int) -> None:
        # container metadata can miscount frames: copy into a file of the right length
        tmp = self.path.with_suffix(".resize")
        new = self._open(tmp, rows)
        for i in range(0, min(rows, self.n), 64):
            new[i : min(i + 64, rows, self.n)] = self.mm[i : min(i + 64, rows, self.n)]
        del self.mm
        tmp.replace(self.path)
        self.mm = new

    def append(self, image: np.ndarray, source: Path) -> None:
        if image.shape != self.shape:
            raise MediaError(
                source,
                f"frame {self.n} is {image.shape[1]}x{image.shape[0]}, the video's "
                f"first frame {self.shape[1]}x{self.shape[0]}",
            )
        if self.n == self.mm.shape[0]:
            self._resize(self.n * 2 + 16)
        self.mm[self.n] = image
        self.n += 1

    def close(self) -> int:
        if self.n != self.mm.shape[0]:
            self._resize(self.n)
        # no msync: the pages are the file's (MAP_SHARED) once unmapped; waiting for the disk
        # here made a third of the run
        del self.mm
        return self.n


def decode_video(job: VideoJob, settings: dict, frames_path: Path) -> dict:
    """One decoding pass: every frame to `frames_path` and System 1's sampled, resized frames
    (returned with their times), exactly as `sample_frames` / `load_clip` choose them."""
    from omnir1.media import inspect, sample_times, smart_resize
    from omnir1.media.video import _iter_av_frames, list_frame_files, read_image, resize

    source = Path(job.source)
    info = inspect(source, folder_fps=job.folder_fps)
    duration = info.duration_s or info.num_frames / (info.fps or job.folder_fps)
    times = sample_times(duration, settings["fps"], settings["max_frames"])
    size = smart_resize(info.height, info.width, max_pixels=settings["max_pixels"])
    store = _FrameStore(frames_path, info.num_frames, info.height, info.width)
    chosen: list[np.ndarray] = []
    indices: list[int] = []
    if job.kind == "frames":
        files = list_frame_files(source)
        idx = np.minimum((times * job.folder_fps + 1e-9).astype(int), len(files) - 1)
        wanted, small = set(idx.tolist()), {}
        for i, file in enumerate(files):
            image = read_image(file)
            store.append(image, file)
            if i in wanted:
                small[i] = resize(image, size)
        chosen, indices = [small[i] for i in idx.tolist()], idx.tolist()
    else:
        converted: tuple[int, np.ndarray] | None = None  # a frame may serve several samples

        def take(index: int, image: np.ndarray) -> None:
            nonlocal converted
            if converted is None or converted[0] != index:
                converted = (index, resize(image, size))
            chosen.append(converted[1])
            indices.append(index)

        prev = None  # the last frame at or before the next sample time
        for index, t, frame in _iter_av_frames(source):
            # one conversion thread: the same pixels as iter_frames, but swscale's own threads
            # made each small frame wait on the scheduler (0.44 s -> 0.014 s for 60 frames of
            # 320x180 on a busy 2-core machine)
            image = frame.to_ndarray(format="rgb24", threads=1)
            store.append(image, source)
            while len(chosen) < len(times) and t > times[len(chosen)] + 1e-6:
                take(*(prev or (index, image)))
            prev = (index, image)
        while len(chosen) < len(times) and prev is not None:
            take(*prev)
    num_frames = store.close()
    return {
        "system1_frames": np.stack(chosen),
        "times": [float(t) for t in times],
        "source_indices": [int(i) for i in indices],
        "native_size": [info.height, info.width],
        "duration_s": float(duration),
        "fps": info.fps,
        "num_frames": num_frames,
        "has_audio_track": info.has_audio,
    }


def _audio(job: VideoJob, has_track: bool) -> np.ndarray | None:
    """The audio `load_clip` gives: the audio file, else the video's own track, else None."""
    from omnir1.media import load_audio
    from omnir1.media.audio import NoAudioWarning

    source = job.audio or (job.source if job.kind == "video" and has_track else None)
    if source is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoAudioWarning)
        return load_audio(source)


def build_shard(job: VideoJob, shards: str | Path, settings: dict) -> dict:
    """Reuse the video's shard if its key matches, else write it: {video_id, key, reused, ...}.

    Input errors are re-raised as the same kind, naming the video and the file."""
    target = shard_dir(shards, job.video_id)
    try:
        previous = None
        if (target / META_FILE).is_file():
            with contextlib.suppress(DataError):
                previous = read_json(target / META_FILE)
        sources = _hash_sources(job, previous)
        key = content_key(job, sources, settings)
        if previous is not None and previous.get("key") == key and _complete(target, previous):
            return _summary(previous, reused=True)
        if target.exists():  # stale: gone rather than readable if the rebuild fails
            shutil.rmtree(target)
        with atomic_dir(target) as tmp:
            decoded = decode_video(job, settings, tmp / FRAMES_FILE)
            small = decoded.pop("system1_frames")
            np.save(tmp / SYSTEM1_FILE, small, allow_pickle=False)
            audio = _audio(job, decoded.pop("has_audio_track"))
            if audio is not None:
                np.save(tmp / AUDIO_FILE, audio, allow_pickle=False)
            meta = {
                "version": SHARD_VERSION,
                "video_id": job.video_id,
                "key": key,
                "kind": job.kind,
                "source": os.path.relpath(job.source, job.root),
                "folder_fps": job.folder_fps,
                "system1": settings,
                **decoded,
                "system1_shape": list(small.shape),
                "audio": None
                if audio is None
                else {"samples": len(audio), "sample_rate": SAMPLE_RATE},
                "sources": sources,
                "decoders": _decoders(),
            }
            write_json(tmp / META_FILE, meta)
        return _summary(meta, reused=False)
    except InputError as err:
        raise type(err)(err.path, f"video {job.video_id!r}: {err.message}", err.field) from None


def _complete(target: Path, meta: dict) -> bool:
    files = [SYSTEM1_FILE, FRAMES_FILE] + ([AUDIO_FILE] if meta.get("audio") else [])
    return all((target / f).is_file() for f in files)


def _summary(meta: dict, *, reused: bool) -> dict:
    return {
        "video_id": meta["video_id"],
        "key": meta["key"],
        "reused": reused,
        "num_frames": meta["num_frames"],
        "system1_frames": meta["system1_shape"][0],
        "audio": meta["audio"] is not None,
        "source": meta["source"],
    }


# ------------------------------------------------------------------------------ running


def preprocess(
    fmt: str,
    root: str | Path,
    shards: str | Path,
    system1,
    *,
    workers: int = 1,
    prefer: Prefer = "frames",
    progress: bool = False,
    part: tuple[int, int] | None = None,
) -> dict:
    """Shards for every video of the data set at `root` (of its `part` (I, N) only, see
    omnir1.parts); writes SHARDS/index.json at the end and returns a summary (videos built and
    reused, seconds, bytes)."""
    from omnir1.parts import take_part

    shards = Path(shards)
    settings = settings_of(system1)
    start = time.perf_counter()
    jobs = take_part(plan_jobs(fmt, root, prefer), part)
    shards.mkdir(parents=True, exist_ok=True)
    (shards / INDEX_FILE).unlink(missing_ok=True)  # an index means: the last run completed
    _remove_leftovers(shards)
    if workers <= 1 or len(jobs) <= 1:
        results: Iterable[dict] = (build_shard(j, shards, settings) for j in jobs)
    else:
        results = _run_in_workers(jobs, shards, settings, workers)
    done = []
    if progress:
        from tqdm import tqdm

        results = tqdm(results, total=len(jobs), desc=f"preprocess {fmt}", unit="video")
    for r in results:
        done.append(r)
    seconds = time.perf_counter() - start
    done.sort(key=lambda r: r["video_id"])
    write_json(
        shards / INDEX_FILE,
        {"version": SHARD_VERSION, "format": fmt, "system1": settings, "shards": done},
    )
    size = sum(f.stat().st_size for r in done for f in shard_dir(shards, r["video_id"]).iterdir())
    built = sum(not r["reused"] for r in done)
    return {
        "format": fmt,
        "shards": str(shards),
        "videos": len(done),
        "built": built,
        "reused": len(done) - built,
        "workers": workers,
        "seconds": round(seconds, 3),
        "videos_per_s": round(len(done) / seconds, 3) if seconds > 0 else None,
        "bytes": size,
        "system1": settings,
        "part": None if part is None else f"{part[0]}/{part[1]}",
    }


def merge_shards(parts: Iterable[str | Path], out: str | Path) -> dict:
    """One shards folder from the complete shards folders of a data set's parts (each made by
    `preprocess(part=...)`; a part without index.json did not finish and is an error). The
    result replaces `out` whole; its index lists every video once."""
    parts = [Path(p) for p in parts]
    if not parts:
        raise ConfigError(None, "needs at least one shards folder to merge", "parts")
    indexes = []
    for folder in parts:
        index_path = folder / INDEX_FILE
        if not index_path.is_file():
            raise DataError(index_path, "missing: this part's preprocessing did not complete")
        indexes.append(read_json(index_path))
    first = indexes[0]
    for folder, index in zip(parts, indexes, strict=True):
        for key in ("version", "format", "system1"):
            if index.get(key) != first.get(key):
                raise DataError(
                    folder / INDEX_FILE,
                    f"{key} {index.get(key)!r} differs from {first.get(key)!r} of {parts[0]}",
                    key,
                )
    seen: dict[str, Path] = {}
    entries = []
    with atomic_dir(out) as staging:
        for folder, index in zip(parts, indexes, strict=True):
            for entry in index["shards"]:
                vid = entry["video_id"]
                if vid in seen:
                    raise DataError(folder, f"video {vid!r} is also in part {seen[vid]}")
                seen[vid] = folder
                target = shard_dir(staging, vid)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copytree(shard_dir(folder, vid), target)
                entries.append(entry)
        entries.sort(key=lambda r: r["video_id"])
        write_json(staging / INDEX_FILE, {**first, "shards": entries})
    return {"format": first["format"], "parts": len(parts), "videos": len(entries)}


def _remove_leftovers(shards: Path) -> None:
    """Temporary folders of an interrupted run (atomic_dir's `.NAME.*.tmp` and `.NAME.old`)."""
    for pattern in (".*.tmp", ".*.old"):
        for path in sorted(shards.rglob(pattern), reverse=True):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _run_in_workers(
    jobs: list[VideoJob], shards: Path, settings: dict, workers: int
) -> Iterator[dict]:
    """Results from `workers` worker processes (omnir1.workers: JSON lines), each fed the next
    video when it finishes one. The first error stops the hand-out; videos in flight finish
    (their shards are complete and reused by the next run), then the error is raised."""
    from omnir1.workers import run_pool

    return run_pool(
        "omnir1.data.preprocess",
        [asdict(job) for job in jobs],
        workers=workers,
        setup={"shards": str(shards), "settings": settings},
        describe=lambda job: f"video {job['video_id']!r} ({job['source']})",
    )


def _build_job(setup: dict, job: dict) -> dict:
    """A worker's job: one video's shard."""
    try:
        return build_shard(VideoJob(**job), setup["shards"], setup["settings"])
    except OmniR1Error as err:
        if isinstance(err, InputError):
            raise
        raise InputError(job["source"], str(err)) from None


if __name__ == "__main__":
    from omnir1.workers import serve

    sys.exit(serve(_build_job))
