"""Reading the official layouts' shared parts: folders, video ids, and the ReVOS / MeViS
`meta_expressions.json` + `mask_dict.json` pair (docs/design.md §3).

Each benchmark's loader (omnir1.benchmarks) builds on these. Ids read from annotation files
are treated as untrusted: they may not lead a path outside the data root. Light checks (types,
unknown ids) happen here; `omnir1.data.check` does the exhaustive pass (every file, every RLE,
every size).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from omnir1.data.records import RLEMaskSource, Sample
from omnir1.errors import DataError
from omnir1.fsutil import inside, read_json


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError(path, f"{what} not found")
    return path


def video_parts(vid: object, source: Path, field: str) -> list[str]:
    # ReVOS video ids contain slashes ("UVO/all/-fbscFfkh4M"): each part is one path component.
    if not isinstance(vid, str) or not vid:
        raise DataError(source, f"video id must be a non-empty string, got {vid!r}", field)
    return vid.split("/")


def meta_expressions(
    meta_path: Path,
    mask_dict_path: Path | None,
    image_root: Path,
    extras_root: Path,
    *,
    dataset: str,
    split: str,
    fps: float,
    expression_type: Callable[[object, Path, str], str] | None = None,
) -> Iterator[Sample]:
    """The expressions of a ReVOS / MeViS `meta_expressions.json` (videos, frames, expressions,
    obj_id / anno_id) with their masks from `mask_dict_path` (None: an unlabelled split).
    `expression_type(type_id, meta_path, field)`: the benchmark's reading of `type_id`
    (ReVOS'); None: every expression with a referent is "referring"."""
    meta = read_json(meta_path)
    videos = meta.get("videos") if isinstance(meta, dict) else None
    if not isinstance(videos, dict):
        raise DataError(meta_path, "expected an object with a 'videos' mapping", "videos")
    mask_dict = read_json(mask_dict_path) if mask_dict_path is not None else None
    if mask_dict is not None and not isinstance(mask_dict, dict):
        raise DataError(mask_dict_path, "expected an object mapping anno_id to per-frame RLE lists")
    for vid, video in videos.items():
        vfield = f"videos.{vid}"
        parts = video_parts(vid, meta_path, vfield)
        if not isinstance(video, dict):
            raise DataError(meta_path, "expected an object", vfield)
        frames = video.get("frames")
        if (
            not isinstance(frames, list)
            or not frames
            or not all(isinstance(f, str) for f in frames)
        ):
            raise DataError(
                meta_path, "expected a non-empty list of frame names", f"{vfield}.frames"
            )
        frame_dir = inside(image_root, *parts, source=meta_path, field=vfield)
        frame_paths = tuple(
            inside(frame_dir, f"{f}.jpg", source=meta_path, field=f"{vfield}.frames")
            for f in frames
        )
        exps = video.get("expressions")
        if not isinstance(exps, dict):
            raise DataError(meta_path, "expected an object of expressions", f"{vfield}.expressions")
        # Not part of the official layouts: the synthetic sets (and users with audio) add the
        # soundtrack as Audio/{vid}.wav and the encoded clip as Videos/{vid}.mp4.
        audio = inside(
            extras_root, "Audio", *parts[:-1], f"{parts[-1]}.wav", source=meta_path, field=vfield
        )
        video_file = inside(
            extras_root, "Videos", *parts[:-1], f"{parts[-1]}.mp4", source=meta_path, field=vfield
        )
        for eid, e in exps.items():
            efield = f"{vfield}.expressions.{eid}"
            if not isinstance(e, dict):
                raise DataError(meta_path, "expected an object", efield)
            text = e.get("exp")
            if not isinstance(text, str) or not text.strip():
                raise DataError(meta_path, "expected a non-empty string", f"{efield}.exp")
            obj_ids = e.get("obj_id", [])
            anno_ids = e.get("anno_id", [])
            for name, ids in (("obj_id", obj_ids), ("anno_id", anno_ids)):
                if not isinstance(ids, list) or not all(
                    isinstance(i, int | str) and not isinstance(i, bool) for i in ids
                ):
                    raise DataError(
                        meta_path, f"expected a list of ids, got {ids!r}", f"{efield}.{name}"
                    )
            if len(obj_ids) != len(anno_ids):
                raise DataError(
                    meta_path, f"{len(obj_ids)} obj_id but {len(anno_ids)} anno_id", efield
                )
            type_id = e.get("type_id") if expression_type is not None else None
            etype = (
                expression_type(type_id, meta_path, f"{efield}.type_id")
                if expression_type is not None
                else "referring"
            )
            if not obj_ids and etype != "excluded":
                etype = "null"
            source = None
            if anno_ids:
                if mask_dict is None:
                    raise DataError(
                        meta_path, f"split {split!r} has no mask_dict.json for its anno_ids", efield
                    )
                rles = []
                for a in anno_ids:
                    per_frame = mask_dict.get(str(a))
                    if per_frame is None:
                        raise DataError(
                            mask_dict_path, f"unknown anno_id {a!r} (used by {efield})", str(a)
                        )
                    if not isinstance(per_frame, list) or len(per_frame) != len(frames):
                        n = (
                            len(per_frame)
                            if isinstance(per_frame, list)
                            else type(per_frame).__name__
                        )
                        raise DataError(
                            mask_dict_path,
                            f"expected {len(frames)} per-frame entries, got {n}",
                            str(a),
                        )
                    rles.append(per_frame)
                source = RLEMaskSource(rles, mask_dict_path, [str(a) for a in anno_ids])
            yield Sample(
                dataset=dataset,
                split=split,
                video_id=vid,
                expression_id=str(eid),
                expression=text.strip(),
                expression_type=etype,
                type_id=type_id,
                object_ids=tuple(str(o) for o in obj_ids),
                frame_names=tuple(frames),
                frame_paths=frame_paths,
                fps=fps,
                video_path=video_file if video_file.exists() else None,
                audio_path=audio if audio.exists() else None,
                mask_source=source,
            )
