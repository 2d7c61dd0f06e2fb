"""Reading videos and folders of frames.

A source is either an encoded file (mp4, mkv, webm, ... anything FFmpeg demuxes) or a folder of
JPEG/PNG frames with a known frame rate. Frames are streamed: nothing here holds a whole video.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from omnir1.errors import MediaError

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
QWEN_FACTOR = 28  # Qwen2.5 vision patch (14) x spatial merge (2)
# Frames above 8K x 8K are refused before any pixel is decoded: one such frame is 200 MB of RGB,
# and a header can claim any size (a decompression bomb)
MAX_FRAME_PIXELS = 8192 * 8192


def _check_size(path: Path, width: int, height: int) -> None:
    if width * height > MAX_FRAME_PIXELS:
        raise MediaError(
            path, f"frames of {width}x{height} px are over the limit of {MAX_FRAME_PIXELS:,} pixels"
        )


@dataclass(frozen=True)
class MediaInfo:
    duration_s: float | None
    fps: float | None
    width: int
    height: int
    num_frames: int
    has_audio: bool
    audio_sample_rate: int | None
    video_codec: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Frame:
    index: int  # position in decode order, from 0
    time_s: float  # presentation time relative to the first frame
    image: np.ndarray  # (H, W, 3) uint8 RGB


@dataclass(frozen=True)
class SampledFrames:
    frames: np.ndarray  # (N, H, W, 3) uint8 RGB, resized
    times_s: np.ndarray  # (N,) the requested sample times
    source_indices: np.ndarray  # (N,) index of the source frame used for each sample
    source_size: tuple[int, int]  # (height, width) before resizing


def _natural_key(path: Path) -> list:
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", path.name)]


def list_frame_files(folder: Path) -> list[Path]:
    """Frame files of a folder in natural order (2.jpg before 10.jpg)."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and p.is_file()]
    if not files:
        raise MediaError(folder, f"no frame files ({', '.join(FRAME_SUFFIXES)}) in folder")
    return sorted(files, key=_natural_key)


def _require_exists(path: Path) -> None:
    if not path.exists():
        raise MediaError(path, "file not found")


def _open(path: Path):
    import av

    try:
        return av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise MediaError(path, f"cannot open media ({exc.__class__.__name__}: {exc})") from None


def _video_stream(container, path: Path):
    if not container.streams.video:
        raise MediaError(path, "has no video stream")
    return container.streams.video[0]


def _open_image(path: Path):
    try:
        img = Image.open(path)
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise MediaError(path, f"cannot decode image ({exc})") from None
    _check_size(path, *img.size)
    return img


def read_image(path: Path) -> np.ndarray:
    with _open_image(path) as img:
        try:
            return np.asarray(img.convert("RGB"))
        except (OSError, SyntaxError) as exc:
            raise MediaError(path, f"cannot decode image ({exc})") from None


def inspect(path: str | Path, *, folder_fps: float | None = None) -> MediaInfo:
    """Describe a video file or a folder of frames (folders report no audio)."""
    path = Path(path)
    _require_exists(path)
    if path.is_dir():
        files = list_frame_files(path)
        with _open_image(files[0]) as first:
            width, height = first.size
        n = len(files)
        return MediaInfo(
            duration_s=None if not folder_fps else n / folder_fps,
            fps=folder_fps,
            width=width,
            height=height,
            num_frames=n,
            has_audio=False,
            audio_sample_rate=None,
            video_codec=files[0].suffix.lower().lstrip("."),
        )

    with _open(path) as container:
        stream = _video_stream(container, path)
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else None
        num_frames = stream.frames
        duration = None
        # The container duration also covers the audio track (often longer by encoder padding),
        # so prefer what the video stream itself says.
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        if not num_frames or duration is None:
            # mkv/webm store neither a frame count nor a stream duration: count the packets and
            # take the end of the last one (no decoding), which holds for variable frame rates
            # too, where frames / average rate does not
            num_frames, packet_span = _scan_packets(container, stream, path)
            duration = duration if duration is not None else packet_span
        if not duration and fps and num_frames:
            duration = num_frames / fps
        if not duration and container.duration is not None:
            duration = container.duration / 1_000_000
        _check_size(path, stream.codec_context.width, stream.codec_context.height)
        audio = container.streams.audio[0] if container.streams.audio else None
        return MediaInfo(
            duration_s=duration,
            fps=fps,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            num_frames=int(num_frames),
            has_audio=audio is not None,
            audio_sample_rate=audio.codec_context.sample_rate if audio is not None else None,
            video_codec=stream.codec_context.name,
        )


def _scan_packets(container, stream, path: Path) -> tuple[int, float | None]:
    """(packets with data, seconds from the first packet's time to the end of the last one)."""
    import av

    count, first, end = 0, None, None
    try:
        for packet in container.demux(stream):
            if not packet.size:
                continue
            count += 1
            if packet.pts is not None:
                first = packet.pts if first is None else min(first, packet.pts)
                stop = packet.pts + (packet.duration or 0)
                end = stop if end is None else max(end, stop)
    except av.error.FFmpegError as exc:
        raise MediaError(path, f"corrupt stream while counting frames ({exc})") from None
    if first is None or end is None or stream.time_base is None or end <= first:
        return count, None
    return count, float((end - first) * stream.time_base)


def _iter_av_frames(path: Path) -> Iterator[tuple[int, float, object]]:
    """Yield (index, time, av.VideoFrame) in presentation order, without converting pixels."""
    import av

    with _open(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        expected = stream.frames
        t0: float | None = None
        index = -1
        try:
            for index, frame in enumerate(container.decode(stream)):
                t = (
                    frame.time
                    if frame.time is not None
                    else index / float(stream.average_rate or 1)
                )
                t0 = t if t0 is None else t0
                yield index, t - t0, frame
        except av.error.FFmpegError as exc:
            raise MediaError(
                path, f"corrupt or truncated video after frame {index} ({exc})"
            ) from None
        decoded = index + 1
        if decoded == 0:
            raise MediaError(path, "no decodable video frames")
        if expected and decoded < expected:
            raise MediaError(path, f"truncated video: decoded {decoded} of {expected} frames")


def iter_frames(path: str | Path, *, folder_fps: float = 1.0) -> Iterator[Frame]:
    """Stream every frame at full resolution (System 2 input); memory stays one frame."""
    path = Path(path)
    _require_exists(path)
    if path.is_dir():
        for i, file in enumerate(list_frame_files(path)):
            yield Frame(i, i / folder_fps, read_image(file))
        return
    for index, t, frame in _iter_av_frames(path):
        # threads=1: a threaded colour conversion of small frames waits on the scheduler (0.44 s
        # for 60 frames of 320x180 on a busy machine, 0.014 s single-threaded)
        yield Frame(index, t, frame.to_ndarray(format="rgb24", threads=1))


def smart_resize(
    height: int,
    width: int,
    *,
    factor: int = QWEN_FACTOR,
    min_pixels: int = 4 * QWEN_FACTOR * QWEN_FACTOR,
    max_pixels: int = 128 * QWEN_FACTOR * QWEN_FACTOR,
) -> tuple[int, int]:
    """Size (h, w) with both sides multiples of `factor` and h*w within [min_pixels, max_pixels],
    keeping the aspect ratio as closely as possible: the rule of the Qwen2.5 processors, reproduced
    exactly so that our frames map onto the same patch grid."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio of {height}x{width} exceeds 200")
    h = round(height / factor) * factor
    w = round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def sample_times(duration_s: float, fps: float, max_frames: int | None = None) -> np.ndarray:
    """Times at which to sample a clip of `duration_s` at `fps`, at most `max_frames` of them
    (spread uniformly over the clip when the rate would give more)."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    n = max(1, math.ceil(duration_s * fps - 1e-9))
    if max_frames is not None and n > max_frames:
        return np.linspace(0.0, duration_s, max_frames, endpoint=False)
    return np.arange(n, dtype=np.float64) / fps


def resize(image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """`image` at (height, width) `size` (bicubic; as it is when None or already that size)."""
    if size is None or image.shape[:2] == size:
        return image
    h, w = size
    return np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BICUBIC))


def sample_frames(
    path: str | Path,
    *,
    fps: float = 2.0,
    max_frames: int | None = None,
    max_pixels: int | None = 128 * QWEN_FACTOR * QWEN_FACTOR,
    min_pixels: int = 4 * QWEN_FACTOR * QWEN_FACTOR,
    folder_fps: float = 1.0,
) -> SampledFrames:
    """Sample frames at `fps` (System 1 input), each resized under a pixel budget to multiples of
    28. The frame shown at a sample time is the last one whose timestamp is not after it. Only
    sampled frames are converted to pixels; `max_pixels=None` keeps the native size."""
    path = Path(path)
    info = inspect(path, folder_fps=folder_fps)
    duration = info.duration_s or (info.num_frames / (info.fps or folder_fps))
    times = sample_times(duration, fps, max_frames)
    size = None
    if max_pixels is not None:
        size = smart_resize(info.height, info.width, min_pixels=min_pixels, max_pixels=max_pixels)

    if path.is_dir():
        files = list_frame_files(path)
        idx = np.minimum((times * folder_fps + 1e-9).astype(int), len(files) - 1)
        loaded = {i: resize(read_image(files[i]), size) for i in np.unique(idx).tolist()}
        frames = np.stack([loaded[i] for i in idx.tolist()])
        return SampledFrames(frames, times, idx, (info.height, info.width))

    chosen: list[np.ndarray] = []
    indices: list[int] = []
    converted: tuple[int, np.ndarray] | None = None  # a source frame may serve several samples

    def take(index: int, frame) -> None:
        nonlocal converted
        if converted is None or converted[0] != index:
            converted = (index, resize(frame.to_ndarray(format="rgb24", threads=1), size))
        chosen.append(converted[1])
        indices.append(index)

    prev = None  # (index, av frame) of the last frame at or before the next sample time
    for index, t, frame in _iter_av_frames(path):
        while len(chosen) < len(times) and t > times[len(chosen)] + 1e-6:
            take(*(prev or (index, frame)))
        prev = (index, frame)
    while len(chosen) < len(times) and prev is not None:
        take(*prev)
    return SampledFrames(np.stack(chosen), times, np.asarray(indices), (info.height, info.width))
