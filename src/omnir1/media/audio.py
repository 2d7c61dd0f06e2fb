"""Audio extraction: any file FFmpeg reads (wav, or the audio track of a video) to mono float32."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from omnir1.errors import MediaError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000  # what the Whisper feature extractor of Qwen2.5-Omni expects


class NoAudioWarning(UserWarning):
    """A video has no audio track; silence of its duration is used instead."""


def load_audio(path: str | Path, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode the first audio stream of `path` to mono float32 at `sample_rate`.

    A video without an audio track yields silence as long as the video, with a NoAudioWarning;
    a file that cannot be decoded raises MediaError naming it.
    """
    import av

    path = Path(path)
    if not path.exists():
        raise MediaError(path, "file not found")
    if path.is_dir():
        raise MediaError(path, "is a folder of frames, which carries no audio; pass an audio file")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise MediaError(path, f"cannot open media ({exc.__class__.__name__}: {exc})") from None
    with container:
        if not container.streams.audio:
            duration = (container.duration or 0) / 1_000_000
            warnings.warn(
                f"{path}: no audio track; using {duration:.2f} s of silence",
                NoAudioWarning,
                stacklevel=2,
            )
            return np.zeros(round(duration * sample_rate), dtype=np.float32)
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):  # flush
                chunks.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as exc:
            raise MediaError(path, f"corrupt or truncated audio ({exc})") from None
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)
