"""Encoding videos with an optional audio track (H.264+AAC in mp4/mkv, VP9+Opus in webm)."""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np

from omnir1.fsutil import atomic_path

# container suffix -> (video codec, audio codec, audio rate the codec accepts or None)
CODECS = {
    ".mp4": ("libx264", "aac", None),
    ".mkv": ("libx264", "aac", None),
    ".mov": ("libx264", "aac", None),
    ".webm": ("libvpx-vp9", "libopus", 48_000),
}


# The same frames should decode to the same pixels whichever run encoded them: swscale's
# RGB -> YUV conversion rounded differently from run to run until it was made bit-exact and
# single-threaded. (The container bytes may still differ between runs: compare decoded frames.)
def _exact() -> dict:
    from av.video.reformatter import Interpolation

    flags = Interpolation.BILINEAR | Interpolation.BITEXACT | Interpolation.ACCURATE_RND
    return {"interpolation": flags, "threads": 1}


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    *,
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int = 16_000,
    crf: int = 20,
    video_codec: str | None = None,
) -> Path:
    """Encode RGB uint8 frames (H, W, 3) and optional mono float audio into `path` atomically.

    Odd frame sizes are padded by one pixel row/column, as yuv420p needs even sizes.
    """
    import av

    path = Path(path)
    if path.suffix.lower() not in CODECS:
        raise ValueError(f"unsupported container {path.suffix!r}; use one of {sorted(CODECS)}")
    vcodec, acodec, arate = CODECS[path.suffix.lower()]
    vcodec = video_codec or vcodec
    rate = Fraction(fps).limit_denominator(1001)
    fmt = path.suffix.lower().lstrip(".").replace("mkv", "matroska")
    exact = _exact()
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format=fmt) as out:
        vstream = None
        astream = None
        if audio is not None:
            astream = out.add_stream(acodec, rate=arate or sample_rate, layout="mono")
        for image in frames:
            h, w = image.shape[:2]
            if vstream is None:
                vstream = out.add_stream(vcodec, rate=rate)
                vstream.width, vstream.height = w + w % 2, h + h % 2
                vstream.pix_fmt = "yuv420p"
                if vcodec in ("libx264", "libx265"):
                    # one thread: x264's frame threads make the bitstream depend on timing
                    vstream.options = {"crf": str(crf), "preset": "veryfast", "threads": "1"}
            if h % 2 or w % 2:
                image = np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            out.mux(vstream.encode(frame.reformat(format=vstream.pix_fmt, **exact)))
        if vstream is None:
            raise ValueError("write_video needs at least one frame")
        out.mux(vstream.encode(None))
        if astream is not None:
            _encode_audio(out, astream, audio, sample_rate, arate or sample_rate)
    return path


def _encode_audio(out, stream, audio: np.ndarray, in_rate: int, out_rate: int) -> None:
    import av

    samples = np.clip(np.asarray(audio, dtype=np.float32).reshape(1, -1), -1.0, 1.0)
    frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
    frame.sample_rate = in_rate
    frame_size = stream.codec_context.frame_size or 1024
    # The resampler converts to the encoder's sample format/rate and cuts codec-sized frames.
    resampler = av.AudioResampler(
        format=stream.codec_context.format.name, layout="mono", rate=out_rate, frame_size=frame_size
    )
    pts = 0
    for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
        chunk.pts = pts
        pts += chunk.samples
        out.mux(stream.encode(chunk))
    out.mux(stream.encode(None))
