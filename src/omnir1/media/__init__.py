"""Media I/O with PyAV: inspect, sample frames for System 1, stream full-resolution frames for
System 2, extract 16 kHz mono audio, and encode H.264+AAC (or VP9+Opus) files."""

from omnir1.media.audio import load_audio
from omnir1.media.encode import write_video
from omnir1.media.video import (
    Frame,
    MediaInfo,
    SampledFrames,
    inspect,
    iter_frames,
    sample_frames,
    sample_times,
    smart_resize,
)

__all__ = [
    "Frame",
    "MediaInfo",
    "SampledFrames",
    "inspect",
    "iter_frames",
    "load_audio",
    "sample_frames",
    "sample_times",
    "smart_resize",
    "write_video",
]
