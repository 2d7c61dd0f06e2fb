"""`omnir1 data check`: read a whole data set the way training and evaluation will, and
summarise it. Every frame header, audio header, mask and RLE is read; problems are collected
(up to a limit) so that one run lists what needs fixing, each naming its file and field."""

from __future__ import annotations

import wave
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from omnir1.benchmarks.registry import get, load
from omnir1.data.records import Sample
from omnir1.errors import DataError

MAX_PROBLEMS = 50


@dataclass
class CheckReport:
    fmt: str
    root: Path
    videos: set[str] = field(default_factory=set)
    frames: int = 0
    objects: set[tuple[str, str]] = field(default_factory=set)
    by_type: Counter = field(default_factory=Counter)
    by_split: Counter = field(default_factory=Counter)
    videos_by_split: dict[str, set[str]] = field(default_factory=dict)
    null_expressions: int = 0
    videos_with_audio: int = 0
    problems: list[str] = field(default_factory=list)

    def add_problem(self, err: DataError) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(str(err))

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {
            "format": self.fmt,
            "root": str(self.root),
            "ok": self.ok,
            "videos": len(self.videos),
            "videos_by_split": {k: len(v) for k, v in sorted(self.videos_by_split.items())},
            "expressions": sum(self.by_split.values()),
            "expressions_by_type": dict(sorted(self.by_type.items())),
            "expressions_by_split": dict(sorted(self.by_split.items())),
            "frames": self.frames,
            "objects": len(self.objects),
            "null_expressions": self.null_expressions,
            "videos_with_audio": self.videos_with_audio,
            "problems": self.problems,
        }


def _check_video(sample: Sample, report: CheckReport) -> None:
    size = None
    for path in sample.frame_paths:
        try:
            with Image.open(path) as img:
                img.verify()
                this = img.size
        except FileNotFoundError:
            raise DataError(path, "frame file not found") from None
        except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
            raise DataError(path, f"cannot read frame ({exc})") from None
        if size is not None and this != size:
            raise DataError(
                path, f"frame size {this[0]}x{this[1]} differs from the video's {size[0]}x{size[1]}"
            )
        size = this
    report.frames += sample.num_frames
    if sample.audio_path is not None:
        if sample.audio_path.suffix.lower() == ".wav":
            try:
                with wave.open(str(sample.audio_path), "rb") as fh:
                    if fh.getnframes() == 0:
                        raise DataError(sample.audio_path, "audio has no samples")
            except (wave.Error, EOFError) as exc:
                raise DataError(sample.audio_path, f"cannot read WAV ({exc})") from None
        report.videos_with_audio += 1


def _check_masks(sample: Sample) -> None:
    if sample.is_null and sample.mask_source is not None:
        # RefAVS stores masks for null rows too (test_n); they must be empty.
        height, width = sample.frame_size()
        for t in range(sample.num_frames):
            if sample.mask_source.frame_masks(t, height, width).any():
                raise DataError(
                    sample.frame_paths[t],
                    f"null expression {sample.expression_id!r} has a non-empty mask",
                )
        return
    for _ in sample.masks():  # decodes every mask: bad RLE, wrong sizes, missing PNGs
        pass


def check_dataset(fmt: str, root: str | Path) -> CheckReport:
    """Validate the data set at `root`; the report lists every problem found (up to a limit)."""
    report = CheckReport(fmt, Path(root))
    seen_ids: set[tuple[str, str, str]] = set()
    try:
        for sample in load(fmt, root):
            key = (sample.split, sample.video_id, sample.expression_id)
            try:
                if key in seen_ids:
                    raise DataError(
                        root,
                        f"duplicate expression id {sample.expression_id!r} "
                        f"in video {sample.video_id!r}",
                    )
                seen_ids.add(key)
                if sample.video_id not in report.videos:
                    report.videos.add(sample.video_id)
                    report.videos_by_split.setdefault(sample.split, set()).add(sample.video_id)
                    _check_video(sample, report)
                _check_masks(sample)
            except DataError as err:
                report.add_problem(err)
                continue
            report.by_type[sample.expression_type] += 1
            report.by_split[sample.split] += 1
            report.null_expressions += sample.is_null
            report.objects.update((sample.video_id, o) for o in sample.object_ids)
    except DataError as err:  # the annotation files themselves are unreadable
        report.add_problem(err)
    extra = get(fmt).extra_check
    if extra is not None and report.ok:
        extra(Path(root), report)
    return report
