"""Media I/O on real encoded files (H.264+AAC, VP9+Opus, no audio, frame folders, corrupt)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from omnir1.errors import MediaError
from omnir1.media import inspect, iter_frames, load_audio, sample_frames
from omnir1.media.audio import NoAudioWarning


def dominant_frequency(audio: np.ndarray, sr: int = 16_000) -> float:
    spectrum = np.abs(np.fft.rfft(audio))
    return float(np.fft.rfftfreq(len(audio), 1 / sr)[spectrum.argmax()])


def test_inspect_h264_aac(media_files):
    info = inspect(media_files["mp4"])
    assert info.video_codec == "h264"
    assert (info.width, info.height, info.num_frames) == (320, 180, 60)
    assert info.fps == pytest.approx(6.0)
    assert info.duration_s == pytest.approx(10.0, abs=0.2)
    assert info.has_audio and info.audio_sample_rate == 16_000


@pytest.mark.parametrize("kind", ["mkv", "webm"])
def test_inspect_other_containers(media_files, kind):
    info = inspect(media_files[kind])
    assert info.num_frames == 60  # counted from packets where the container stores no count
    assert info.duration_s == pytest.approx(10.0, abs=0.2)
    assert info.has_audio


def test_sample_at_2fps_picks_the_right_frames(media_files):
    sampled = sample_frames(media_files["mp4"], fps=2.0)
    assert len(sampled.frames) == 20
    np.testing.assert_array_equal(sampled.source_indices, np.arange(20) * 3)
    # frame i was encoded with brightness 4*i: the pixels really come from that frame
    brightness = sampled.frames.reshape(20, -1).mean(axis=1)
    np.testing.assert_allclose(brightness, sampled.source_indices * 4, atol=3)
    h, w = sampled.frames.shape[1:3]
    assert h % 28 == 0 and w % 28 == 0 and h * w <= 128 * 28 * 28


def test_max_frames_spreads_samples(media_files):
    sampled = sample_frames(media_files["mp4"], fps=2.0, max_frames=8)
    assert len(sampled.frames) == 8
    np.testing.assert_allclose(sampled.times_s, np.arange(8) * 1.25)


def test_full_resolution_stream(media_files):
    frames = list(iter_frames(media_files["odd_mp4"]))
    assert len(frames) == 30
    assert frames[0].image.shape == (182, 334, 3)  # odd sizes are padded by one for yuv420p
    assert frames[-1].time_s == pytest.approx(29 / 30, abs=1e-3)


def test_audio_16k_mono(media_files):
    for kind in ("mp4", "mkv", "webm"):
        audio = load_audio(media_files[kind])
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert len(audio) == pytest.approx(160_000, abs=2_000), kind
        assert dominant_frequency(audio) == pytest.approx(440, abs=2), kind


def test_video_without_audio_gives_silence_and_warning(media_files):
    with pytest.warns(NoAudioWarning, match="no audio track"):
        audio = load_audio(media_files["silent_mp4"])
    assert len(audio) == pytest.approx(160_000, abs=1_000) and not audio.any()
    assert not inspect(media_files["silent_mp4"]).has_audio


def test_frame_folder(media_files):
    info = inspect(media_files["folder"], folder_fps=1.0)
    assert (info.num_frames, info.width, info.height, info.duration_s) == (10, 320, 180, 10.0)
    sampled = sample_frames(media_files["folder"], fps=2.0, folder_fps=1.0)
    np.testing.assert_array_equal(sampled.source_indices, np.repeat(np.arange(10), 2))
    assert len(list(iter_frames(media_files["folder"]))) == 10
    with pytest.raises(MediaError, match="carries no audio"):
        load_audio(media_files["folder"])


@pytest.mark.parametrize("kind", ["corrupt", "truncated"])
def test_broken_files_raise_media_error_naming_the_file(media_files, kind):
    path = media_files[kind]
    with pytest.raises(MediaError) as info:
        inspect(path)
        list(iter_frames(path))
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(MediaError, match="file not found"):
        inspect(tmp_path / "nope.mp4")


def test_cli_inspect(media_files):
    out = subprocess.run(
        [sys.executable, "-m", "omnir1.cli", "media", "inspect", str(media_files["mp4"])],
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(out.stdout)
    assert set(info) == {
        "duration_s",
        "fps",
        "width",
        "height",
        "num_frames",
        "has_audio",
        "audio_sample_rate",
        "video_codec",
    }
    bad = subprocess.run(
        [sys.executable, "-m", "omnir1.cli", "media", "inspect", str(media_files["corrupt"])],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert "corrupt.mp4" in bad.stderr and "Traceback" not in bad.stderr
