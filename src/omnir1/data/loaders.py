"""Loaders of the official RefAVS, ReVOS and MeViS layouts into Sample records (docs/design.md §3).

Loaders read the annotation files once and yield samples lazily; masks stay encoded on disk
until a consumer asks for a frame. Ids read from annotation files are treated as untrusted:
they may not lead a path outside the data root. Light checks (types, unknown ids) happen here;
`omnir1.data.check` does the exhaustive pass (every file, every RLE, every size).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from omnir1.data import FORMATS
from omnir1.data.records import PNGMaskSource, RLEMaskSource, Sample
from omnir1.errors import DataError
from omnir1.fsutil import inside, read_json
from omnir1.media.video import list_frame_files

REFAVS_COLUMNS = ("vid", "uid", "split", "fid", "exp")  # the official header order
REFAVS_SPLITS = ("train", "val", "test_s", "test_u", "test_n")
REVOS_TYPES = {0: "referring", 1: "reasoning", 2: "excluded"}
DEFAULT_FPS = {"refavs": 1.0, "revos": 6.0, "mevis": 6.0}


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError(path, f"{what} not found")
    return path


def _video_parts(vid: object, source: Path, field: str) -> list[str]:
    # ReVOS video ids contain slashes ("UVO/all/-fbscFfkh4M"): each part is one path component.
    if not isinstance(vid, str) or not vid:
        raise DataError(source, f"video id must be a non-empty string, got {vid!r}", field)
    return vid.split("/")


# ---------------------------------------------------------------------------------- RefAVS


def load_refavs(root: str | Path, *, fps: float = DEFAULT_FPS["refavs"]) -> Iterator[Sample]:
    """Rows of `metadata.csv` as samples. test_n rows are null expressions (referent absent)."""
    root = Path(root)
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise DataError(meta, "file not found")
    with meta.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REFAVS_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(meta, f"missing columns {missing}; found {reader.fieldnames}", "header")
        listed_vid, frames = None, []
        for line, row in enumerate(reader, start=2):
            where = f"line {line}"
            vid, uid, split, fid, exp = (row[c] for c in REFAVS_COLUMNS)
            if split not in REFAVS_SPLITS:
                raise DataError(
                    meta, f"split {split!r} is not one of {REFAVS_SPLITS}", f"{where}: split"
                )
            if not exp or not exp.strip():
                raise DataError(meta, "empty expression", f"{where}: exp")
            if not uid:
                raise DataError(meta, "empty uid", f"{where}: uid")
            parts = _video_parts(vid, meta, f"{where}: vid")
            media = inside(root, "media", *parts, source=meta, field=f"{where}: vid")
            if vid != listed_vid:  # rows of a video are contiguous: list its frames once
                frame_dir = _require_dir(media / "frames", f"frames of video {vid!r} ({where})")
                listed_vid, frames = vid, list_frame_files(frame_dir)
            is_null = split == "test_n"
            mask_dir = inside(
                root, "gt_mask", *parts, f"fid_{fid}", source=meta, field=f"{where}: fid"
            )
            masks = [[mask_dir / f"{i:05d}.png" for i in range(len(frames))]]
            if is_null and not mask_dir.exists():
                masks = [[None] * len(frames)]
            audio = media / "audio.wav"
            yield Sample(
                dataset="refavs",
                split=split,
                video_id=vid,
                expression_id=uid,
                expression=exp.strip(),
                expression_type="null" if is_null else "referring",
                type_id=None,
                object_ids=() if is_null else (str(fid),),
                frame_names=tuple(p.stem for p in frames),
                frame_paths=tuple(frames),
                fps=fps,
                video_path=None,
                audio_path=audio if audio.exists() else None,
                mask_source=PNGMaskSource(masks),
                refavs_fid=str(fid),
            )


# ---------------------------------------------------------------------------- ReVOS, MeViS


def _expressions(
    meta_path: Path,
    mask_dict_path: Path | None,
    image_root: Path,
    extras_root: Path,
    *,
    dataset: str,
    split: str,
    fps: float,
) -> Iterator[Sample]:
    meta = read_json(meta_path)
    videos = meta.get("videos") if isinstance(meta, dict) else None
    if not isinstance(videos, dict):
        raise DataError(meta_path, "expected an object with a 'videos' mapping", "videos")
    mask_dict = read_json(mask_dict_path) if mask_dict_path is not None else None
    if mask_dict is not None and not isinstance(mask_dict, dict):
        raise DataError(mask_dict_path, "expected an object mapping anno_id to per-frame RLE lists")
    for vid, video in videos.items():
        vfield = f"videos.{vid}"
        parts = _video_parts(vid, meta_path, vfield)
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
            type_id = e.get("type_id")
            if dataset == "revos":
                if type_id not in REVOS_TYPES:
                    raise DataError(
                        meta_path,
                        f"type_id must be one of {sorted(REVOS_TYPES)}, got {type_id!r}",
                        f"{efield}.type_id",
                    )
                etype = REVOS_TYPES[type_id]
            else:
                etype = "referring"
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
                type_id=type_id if dataset == "revos" else None,
                object_ids=tuple(str(o) for o in obj_ids),
                frame_names=tuple(frames),
                frame_paths=frame_paths,
                fps=fps,
                video_path=video_file if video_file.exists() else None,
                audio_path=audio if audio.exists() else None,
                mask_source=source,
            )


_REVOS_META = re.compile(r"^meta_expressions(?:_(?P<split>[A-Za-z0-9]+)_?)?\.json$")


def load_revos(root: str | Path, *, fps: float = DEFAULT_FPS["revos"]) -> Iterator[Sample]:
    """ReVOS: `meta_expressions.json` (split "all") or `meta_expressions_{split}_.json` files,
    one shared `mask_dict.json`, frames under `JPEGImages/{vid}/`."""
    root = Path(root)
    metas = sorted(
        (p, m.group("split") or "all")
        for p in root.glob("meta_expressions*.json")
        if (m := _REVOS_META.match(p.name))
    )
    if not metas:
        raise DataError(
            root / "meta_expressions.json", "file not found (nor meta_expressions_{split}_.json)"
        )
    image_root = _require_dir(root / "JPEGImages", "JPEGImages folder")
    for meta, split in metas:
        yield from _expressions(
            meta, root / "mask_dict.json", image_root, root, dataset="revos", split=split, fps=fps
        )


def load_mevis(root: str | Path, *, fps: float = DEFAULT_FPS["mevis"]) -> Iterator[Sample]:
    """MeViS: one folder per split with `JPEGImages/`, `meta_expressions.json` and (except for
    the unlabelled `valid` split) `mask_dict.json`."""
    root = Path(root)
    splits = sorted(p.parent for p in root.glob("*/meta_expressions.json"))
    if not splits:
        raise DataError(root, "no {split}/meta_expressions.json found")
    for split_dir in splits:
        mask_dict = split_dir / "mask_dict.json"
        yield from _expressions(
            split_dir / "meta_expressions.json",
            mask_dict if mask_dict.exists() else None,
            _require_dir(split_dir / "JPEGImages", "JPEGImages folder"),
            split_dir,
            dataset="mevis",
            split=split_dir.name,
            fps=fps,
        )


LOADERS: dict[str, Callable[..., Iterator[Sample]]] = {
    "refavs": load_refavs,
    "revos": load_revos,
    "mevis": load_mevis,
}


def load(fmt: str, root: str | Path, **kwargs) -> Iterator[Sample]:
    """Samples of the data set at `root` in format `fmt` (one of FORMATS)."""
    if fmt not in LOADERS:
        raise ValueError(f"unknown data set format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    return LOADERS[fmt](root, **kwargs)
