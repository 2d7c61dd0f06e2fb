"""Shards of preprocessed videos (written by `omnir1 data preprocess`, omnir1.data.preprocess)
and their reader, which training and evaluation use in place of decoding.

Layout, one folder per video (ReVOS ids with slashes give nested folders):

    SHARDS/<video_id>/system1_frames.npy  (T, h, w, 3) uint8: what `load_clip` gives System 1
                     /audio.npy           (S,) float32, 16 kHz mono; absent for a silent video
                     /frames.npy          (N, H, W, 3) uint8: every frame at full resolution,
                                          for System 2 (read it memory-mapped, frame by frame)
                     /meta.json           sizes, times, source indices, settings, content key
    SHARDS/index.json                     every shard, with its key, once a run has completed

Only `.npy` (read with allow_pickle=False) and JSON: nothing is pickled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from omnir1.errors import ConfigError, DataError
from omnir1.fsutil import inside, read_json

SHARD_VERSION = 1
INDEX_FILE = "index.json"
META_FILE = "meta.json"
SYSTEM1_FILE = "system1_frames.npy"
AUDIO_FILE = "audio.npy"
FRAMES_FILE = "frames.npy"
SETTING_NAMES = ("fps", "max_frames", "max_pixels")  # the System-1 settings a shard depends on


def shard_dir(shards: str | Path, video_id: str) -> Path:
    """The folder of a video's shard; an id cannot lead outside `shards`."""
    return inside(Path(shards), *video_id.split("/"), source=shards, field=video_id)


def settings_of(cfg) -> dict:
    """The System-1 settings (params.yaml `system1`) that shape a shard."""
    return {
        "fps": float(cfg.fps),
        "max_frames": int(cfg.max_frames),
        "max_pixels": int(cfg.max_pixels),
    }


def check_settings(meta: dict, cfg, meta_path: Path) -> None:
    """A shard made with other System-1 settings is an error that says which and how to fix."""
    want, have = settings_of(cfg), meta.get("system1") or {}
    for name in SETTING_NAMES:
        if have.get(name) != want[name]:
            raise ConfigError(
                meta_path,
                f"shard made with system1.{name}={have.get(name)!r}, but the settings in use "
                f"have {want[name]!r}; rerun `omnir1 data preprocess` with these params",
                f"system1.{name}",
            )


def check_index(shards: str | Path, cfg, video_ids) -> None:
    """The shards folder's index lists every video of `video_ids`, made with the System-1
    settings of `cfg`: what loading them one by one later would find, checked at once."""
    path = Path(shards) / INDEX_FILE
    if not path.is_file():
        raise DataError(path, "no shards index; run `omnir1 data preprocess`")
    index = read_json(path)
    if not isinstance(index, dict) or not isinstance(index.get("shards"), list):
        raise DataError(path, "expected an object with a list of shards", "shards")
    check_settings(index, cfg, path)
    have = {e.get("video_id") for e in index["shards"] if isinstance(e, dict)}
    missing = sorted(set(video_ids) - have)
    if missing:
        raise DataError(
            path, f"no shard of {len(missing)} video(s), e.g. {missing[:3]}; rerun preprocessing"
        )


def load_shard(shards: str | Path, video_id: str, *, cfg=None):
    """(VideoClip equal to `load_clip`'s, frames) of a video: `frames` is the (N, H, W, 3)
    uint8 memory map of every frame at full resolution. With `cfg` (params.yaml `system1` or the
    params section), a shard made with other System-1 settings raises ConfigError."""
    from omnir1.systems.reasoning import VideoClip

    folder = shard_dir(shards, video_id)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise DataError(meta_path, f"no shard of video {video_id!r}; run `omnir1 data preprocess`")
    meta = read_json(meta_path)
    if meta.get("version") != SHARD_VERSION:
        raise DataError(
            meta_path, f"shard version {meta.get('version')!r}, this code reads {SHARD_VERSION}"
        )
    if cfg is not None:
        check_settings(meta, cfg, meta_path)

    def array(name: str, mmap: bool = False) -> np.ndarray:
        try:
            return np.load(folder / name, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(folder / name, f"cannot read shard array ({exc})") from None

    frames1 = array(SYSTEM1_FILE)
    audio = array(AUDIO_FILE) if meta["audio"] is not None else None
    full = array(FRAMES_FILE, mmap=True)
    if full.shape[0] != meta["num_frames"] or list(frames1.shape) != meta["system1_shape"]:
        raise DataError(folder, "shard arrays do not match meta.json; rerun preprocessing")
    clip = VideoClip(
        frames=frames1,
        times=np.asarray(meta["times"], dtype=np.float64),
        source_indices=np.asarray(meta["source_indices"], dtype=np.int64),
        native_size=(int(meta["native_size"][0]), int(meta["native_size"][1])),
        audio=audio,
        duration_s=float(meta["duration_s"]),
    )
    return clip, full


def clips_for(samples, cfg, shards: str | Path | None = None) -> list:
    """System 1's view (VideoClip) of each sample's video: `views_for`'s clips."""
    return views_for(samples, cfg, shards)[0]


def views_for(samples, cfg, shards: str | Path | None = None) -> tuple[list, list]:
    """(System 1's VideoClip, System 2's full frames) of each sample's video, every video read
    once. From its shard under `shards` when given (made with the same System-1 settings, else
    an error): the frames are the shard's memory map. Otherwise decoded from the data set, and
    the frames are None (System 2 decodes the video itself)."""
    from omnir1.systems.reasoning import load_clip

    cache: dict[str, tuple] = {}
    clips, frames = [], []
    for s in samples:
        if s.video_id not in cache:
            if shards is not None:
                cache[s.video_id] = load_shard(shards, s.video_id, cfg=cfg)
            else:
                clip = load_clip(
                    s.frame_paths[0].parent, audio=s.audio_path, cfg=cfg, folder_fps=s.fps
                )
                cache[s.video_id] = (clip, None)
        clip, full = cache[s.video_id]
        clips.append(clip)
        frames.append(full)
    return clips, frames
