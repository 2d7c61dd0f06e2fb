"""Bad and extreme media: empty audio, frames that claim absurd sizes, very long and very large
videos. Each gets a clear error naming the file, or is read in bounded memory."""

from __future__ import annotations

import io
import struct
import tracemalloc
import wave
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omnir1.errors import MediaError
from omnir1.media import inspect, sample_frames, write_video
from omnir1.media.audio import NoAudioWarning
from omnir1.media.video import MAX_FRAME_PIXELS, read_image


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A real 1x1 PNG whose header claims width x height: decoding it would need that many
    pixels (a decompression bomb)."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR: width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # CRC of type + data
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("size", [(40_000, 40_000), (9_000, 8_000)])
def test_frames_claiming_huge_sizes_are_refused_naming_the_file(tmp_path: Path, size):
    folder = tmp_path / "frames"
    folder.mkdir()
    bomb = png_claiming(folder / "0.png", *size)
    assert size[0] * size[1] > MAX_FRAME_PIXELS
    with pytest.raises(MediaError, match=r"0\.png"):
        read_image(bomb)
    with pytest.raises(MediaError, match=r"0\.png"):
        inspect(folder, folder_fps=1.0)


def test_zero_length_audio_is_silence_not_a_crash(tmp_path: Path, tiny_models: Path):
    from omnir1.config import System1Params
    from omnir1.models.loading import load_models
    from omnir1.systems.reasoning import GlobalReasoner, load_clip

    frames = np.full((12, 64, 96, 3), 120, np.uint8)
    video = write_video(tmp_path / "clip.mp4", frames, fps=6)
    empty = tmp_path / "empty.wav"
    with wave.open(str(empty), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(16_000)
        fh.writeframes(b"")
    with pytest.warns(NoAudioWarning, match="empty audio track"):
        clip = load_clip(video, audio=empty)
    assert clip.audio is None
    models = load_models(tiny_models, system2=False)
    reasoner = GlobalReasoner(
        models.system1, models.system1_processor, System1Params(max_new_tokens=4)
    )
    assert (
        len(reasoner.generate(clip, "the red circle", seed=0)) == 1
    )  # no audio tower call on zero samples


def _traced_peak(fn):
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_long_video_is_sampled_in_bounded_memory(tmp_path: Path):
    """12,000 frames (400 s at 30 fps): System 1's 24 frames are taken while streaming; the
    whole video as RGB would be 110 MB."""
    h, w, n = 48, 64, 12_000
    ramp = (np.arange(n) % 256).astype(np.uint8)
    video = write_video(
        tmp_path / "long.mp4", (np.full((h, w, 3), v, np.uint8) for v in ramp), fps=30
    )
    assert inspect(video).num_frames == n
    sampled, peak = _traced_peak(
        lambda: sample_frames(video, fps=2.0, max_frames=24, max_pixels=1568)
    )
    assert len(sampled.frames) == 24 and sampled.source_indices[-1] > n * 0.9
    assert peak < 5_000_000, f"peak {peak / 1e6:.1f} MB while sampling"


def test_a_4k_video_is_sampled_one_native_frame_at_a_time(tmp_path: Path):
    h, w = 2160, 3840
    frames = (np.full((h, w, 3), 40 * i, np.uint8) for i in range(6))
    video = write_video(tmp_path / "uhd.mp4", frames, fps=2)
    sampled, peak = _traced_peak(lambda: sample_frames(video, fps=2.0, max_pixels=1568))
    assert (
        sampled.frames.shape[0] == 6 and sampled.frames.shape[1] * sampled.frames.shape[2] <= 1568
    )
    native = h * w * 3
    assert peak < 2 * native, f"peak {peak / 1e6:.1f} MB for {native / 1e6:.1f} MB frames"
