"""Generate a synthetic data set in the RefAVS, ReVOS or MeViS layout.

    omnir1 data synth --format revos --out data/synth/revos --videos 24 --seed 0

Deterministic for a given (format, videos, seed): each video draws from its own random stream,
so videos can be rendered in parallel. The set is built in a staging folder and moved into
place at the end; an interrupted run leaves no partial data set behind.
"""

from __future__ import annotations

import csv
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from omnir1.benchmarks.refavs import REFAVS_COLUMNS
from omnir1.data import rle
from omnir1.data.masks import union
from omnir1.data.synth import expressions as ex
from omnir1.data.synth.scene import (
    BACKGROUND_STYLES,
    COLORS,
    SEEN_SHAPES,
    SIZES,
    SOUNDS,
    UNSEEN_SHAPES,
    Scene,
    SceneObject,
    first_last_visible,
    render,
    soundtrack,
)
from omnir1.errors import ConfigError
from omnir1.fsutil import atomic_dir, write_json

# A synthetic set is a test load: 100,000 videos of 10 s are ~200 GB of frames already
MAX_VIDEOS = 100_000
# Split of the i-th video, cycling; RefAVS test_u videos hold unseen shape classes and test_n
# videos only null expressions (their referents are absent).
SPLIT_CYCLES = {
    "refavs": ("train", "train", "train", "test_s", "test_u", "test_n"),
    "revos": ("train", "train", "train", "valid"),
    "mevis": ("train", "train", "train", "valid_u"),
}


OBJECTS_FILE = "synth_objects.json"
SUMMARY_FILE = "synth_summary.json"

# (red, green) of the "position" background's top-left and bottom-right corners: pale enough
# that every object colour stands out from it (at least 55 levels in some channel)
POSITION_RAMP = ((110, 110), (220, 220))


@dataclass(frozen=True)
class SynthConfig:
    format: str = "revos"
    videos: int = 24
    seed: int = 0
    width: int = 320
    height: int = 180
    duration_s: float = 10.0
    fps: float | None = None  # default: 1 for RefAVS (its 10 frames), 6 for ReVOS / MeViS
    sample_rate: int = 16_000
    workers: int = 2
    background: str = "gradient"  # scene.BACKGROUND_STYLES
    object_scale: float = 1.0  # shapes' radii: scene.SIZES times this
    visit_fraction: float = 0.0  # of objects only briefly in view (VISIBILITY_MODES)
    layout: str = "free"  # LAYOUTS

    def __post_init__(self) -> None:
        if self.background not in BACKGROUND_STYLES:
            raise ConfigError(
                None,
                f"unknown background {self.background!r}; valid: {', '.join(BACKGROUND_STYLES)}",
                "background",
            )
        if self.layout not in LAYOUTS:
            raise ConfigError(
                None, f"unknown layout {self.layout!r}; valid: {', '.join(LAYOUTS)}", "layout"
            )
        if self.format not in SPLIT_CYCLES:
            raise ConfigError(
                None, f"unknown format {self.format!r}; valid: {', '.join(SPLIT_CYCLES)}", "format"
            )
        if not 1 <= self.videos <= MAX_VIDEOS:
            raise ConfigError(
                None, f"videos must be in [1, {MAX_VIDEOS:,}], got {self.videos}", "videos"
            )
        if not 0.2 <= self.object_scale <= 3.0:
            raise ConfigError(
                None, f"object_scale must be in [0.2, 3], got {self.object_scale}", "object_scale"
            )
        if not 0.0 <= self.visit_fraction <= 1.0:
            raise ConfigError(
                None, f"visit_fraction must be in [0, 1], got {self.visit_fraction}", "visits"
            )
        if not 2.0 <= self.duration_s <= 600.0:
            raise ConfigError(
                None, f"duration must be in [2, 600] s, got {self.duration_s}", "duration"
            )
        if self.width < 64 or self.height < 64:
            raise ConfigError(
                None, f"frames must be at least 64x64, got {self.width}x{self.height}", "size"
            )

    @property
    def frame_rate(self) -> float:
        return self.fps if self.fps is not None else (1.0 if self.format == "refavs" else 6.0)


@dataclass
class VideoResult:
    vid: str
    split: str
    scene: Scene
    expressions: list[ex.Expression]
    masks: dict[int, list[dict | None]]  # obj_id -> per-frame RLE (None when not visible)
    foreground: list[dict]  # per-frame RLE of all objects


def _inner_point(rng: np.random.Generator, r: float, w: int, h: int) -> tuple[float, float]:
    """A centre that keeps a shape of radius r wholly inside the frame."""
    return (float(rng.uniform(r, w - r)), float(rng.uniform(r, h - r)))


def _outside_point(rng: np.random.Generator, r: float, w: int, h: int) -> tuple[float, float]:
    """A centre just beyond a random edge, so the shape is wholly out of view."""
    x, y = _inner_point(rng, r, w, h)
    edge = int(rng.integers(4))
    return [(-r - 1, y), (w + r + 1, y), (x, -r - 1), (x, h + r + 1)][edge]


# How an object's time in view is drawn: on screen throughout, entering (from an edge, at a
# random time), leaving (through an edge); with `visit_fraction` > 0, that fraction of objects
# instead visit (appear and vanish within 2-3.5 s), so that the frames a target is visible on
# vary from video to video and no fixed choice of frames finds it.
VISIBILITY_MODES = {"stay": 0.4, "enter": 0.35, "leave": 0.25}


# "free": 3-5 objects, each with its own visibility mode, often several in view at once.
# "turns": 2-3 objects that take turns on screen, at most one in view at any time (the shape of
# docs/design.md §7's prototype: a target visible for a while, a distractor at other times), so that
# finding the target means finding *when* it is in view, and boxing it means finding *where*.
LAYOUTS = ("free", "turns")


def _turns(rng: np.random.Generator, n: int, dur: float) -> list[tuple[float, float]]:
    """n disjoint time windows in random order, each 2-4 s, separated by random gaps."""
    lengths = rng.uniform(2.0, 4.0, n)
    lengths *= min(1.0, 0.85 * dur / lengths.sum())
    gaps = rng.dirichlet(np.ones(n + 1)) * (dur - lengths.sum())
    windows, t = [], 0.0
    for length, gap in zip(lengths, gaps[:-1], strict=True):
        t += gap
        windows.append((float(t), float(t + length)))
        t += length
    return [windows[i] for i in rng.permutation(n)]


def visibility_modes(visit_fraction: float) -> dict[str, float]:
    modes = {m: p * (1.0 - visit_fraction) for m, p in VISIBILITY_MODES.items()}
    return {**modes, "visit": visit_fraction} if visit_fraction > 0 else modes


def _sample_scene(cfg: SynthConfig, split: str, rng: np.random.Generator) -> Scene:
    w, h, dur = cfg.width, cfg.height, cfg.duration_s
    shapes = SEEN_SHAPES + UNSEEN_SHAPES if split == "test_u" else SEEN_SHAPES
    n = int(rng.integers(2, 4)) if cfg.layout == "turns" else int(rng.integers(3, 6))
    pairs = [(c, s) for c in COLORS for s in shapes]
    chosen = [pairs[i] for i in rng.choice(len(pairs), size=n, replace=False)]
    if split == "test_u" and not any(s in UNSEEN_SHAPES for _, s in chosen):
        chosen[0] = (chosen[0][0], UNSEEN_SHAPES[int(rng.integers(len(UNSEEN_SHAPES)))])
    objects = []
    z_order = rng.permutation(n)
    modes = visibility_modes(cfg.visit_fraction)
    windows = _turns(rng, n, dur) if cfg.layout == "turns" else None
    for k, (color, shape) in enumerate(chosen):
        size = "small" if rng.random() < 0.5 else "large"
        r = SIZES[size] * cfg.object_scale * min(w, h)
        mode = rng.choice(list(modes), p=list(modes.values()))
        t_in, t_out = 0.0, dur
        start, end = _inner_point(rng, r, w, h), _inner_point(rng, r, w, h)
        if windows is not None:  # its turn, moving wholly in view
            t_in, t_out = windows[k]
        elif mode == "visit":  # in view for a short while only: when matters, not just what
            t_in = float(rng.uniform(0.05 * dur, max(0.05 * dur, dur - 3.5)))
            t_out = min(dur, t_in + float(rng.uniform(2.0, 3.5)))
        elif mode == "enter":
            t_in = float(rng.uniform(0.5, 0.6 * dur))
            start = _outside_point(rng, r, w, h)
        elif mode == "leave":
            t_out = float(rng.uniform(0.45 * dur, 0.9 * dur))
            end = _outside_point(rng, r, w, h)
        sounds: list[tuple[float, float]] = []
        if rng.random() < 0.7:  # sounds only while it exists
            s = float(rng.uniform(t_in, max(t_in, t_out - 1.5)))
            sounds.append((s, min(t_out, s + float(rng.uniform(1.5, 4.0)))))
        objects.append(
            SceneObject(k + 1, shape, color, size, int(z_order[k]), t_in, t_out, start, end, sounds)
        )
    top = tuple(int(v) for v in rng.integers(150, 256, 3))
    bottom = tuple(int(v) for v in rng.integers(60, 160, 3))
    if cfg.background in ("position", "timecode"):  # the same draws: only the background differs
        top, bottom = (*POSITION_RAMP[0], top[2]), (*POSITION_RAMP[1], bottom[2])
    return Scene(
        w, h, cfg.frame_rate, dur, objects, (top, bottom), cfg.background, cfg.object_scale
    )


def _expressions(
    cfg: SynthConfig,
    split: str,
    scene: Scene,
    vis: dict[int, ex.Visibility],
    rng: np.random.Generator,
) -> list[ex.Expression]:
    shapes = SEEN_SHAPES + UNSEEN_SHAPES if split == "test_u" else SEEN_SHAPES
    if split == "test_n":
        return [ex.null(scene, shapes, rng, with_sound=bool(rng.random() < 0.5)) for _ in range(2)]
    visible = [o for o in scene.objects if vis[o.obj_id].first is not None]
    targets = [o for o in visible if split != "test_u" or o.shape in UNSEEN_SHAPES] or visible
    allowed = {o.obj_id for o in targets}
    picked = [
        targets[i] for i in rng.choice(len(targets), size=min(2, len(targets)), replace=False)
    ]
    out = ex.appearance(scene, picked, rng) + ex.audio(scene, targets)[:1]
    out += ex.temporal(scene, vis, allowed)[:2]
    if cfg.format != "refavs":  # RefAVS expressions refer to a single object
        out += ex.multi(scene, rng)
        out.append(ex.null(scene, shapes, rng, with_sound=False))
    return out


def _write_wav(path: Path, audio: np.ndarray, sr: int) -> None:
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(sr)
        fh.writeframes(pcm.tobytes())


def _write_frames(folder: Path, frames: np.ndarray, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for frame, name in zip(frames, names, strict=True):
        Image.fromarray(frame).save(folder / f"{name}.jpg", quality=92)


def _frame_names(cfg: SynthConfig, n: int) -> list[str]:
    return [str(i) for i in range(n)] if cfg.format == "refavs" else [f"{i:05d}" for i in range(n)]


def video_scene(cfg: SynthConfig, index: int) -> tuple[str, str, Scene, np.random.Generator]:
    """(video id, split, scene) of the index-th video, and the random stream to continue with.
    The same arguments always give the same scene, which is how tests recover the truth."""
    rng = np.random.default_rng([cfg.seed, index])
    split = SPLIT_CYCLES[cfg.format][index % len(SPLIT_CYCLES[cfg.format])]
    return f"syn{index:04d}", split, _sample_scene(cfg, split, rng), rng


def _make_video(cfg: SynthConfig, index: int, staging: Path) -> VideoResult:
    from omnir1.media.encode import write_video

    vid, split, scene, rng = video_scene(cfg, index)
    frames, masks = render(scene)
    audio = soundtrack(scene, cfg.sample_rate, rng)
    vis = {i: ex.Visibility(*first_last_visible(m, scene.fps)) for i, m in masks.items()}
    exps = _expressions(cfg, split, scene, vis, rng)
    names = _frame_names(cfg, scene.num_frames)

    if cfg.format == "refavs":
        media = staging / "media" / vid
        _write_frames(media / "frames", frames, names)
        _write_wav(media / "audio.wav", audio, cfg.sample_rate)
        fids = {i for e in exps for i in e.obj_ids}
        if any(not e.obj_ids for e in exps):
            fids.add(0)  # null rows point at object 0, which no video has: all-empty masks
        for fid in sorted(fids):
            folder = staging / "gt_mask" / vid / f"fid_{fid}"
            folder.mkdir(parents=True, exist_ok=True)
            track = masks.get(fid, np.zeros((scene.num_frames, scene.height, scene.width), bool))
            for i, m in enumerate(track):
                Image.fromarray(m.astype(np.uint8) * 255).save(folder / f"{i:05d}.png")
    else:
        base = staging if cfg.format == "revos" else staging / split
        _write_frames(base / "JPEGImages" / vid, frames, names)
        (base / "Audio").mkdir(parents=True, exist_ok=True)
        _write_wav(base / "Audio" / f"{vid}.wav", audio, cfg.sample_rate)
        write_video(
            base / "Videos" / f"{vid}.mp4",
            frames,
            fps=scene.fps,
            audio=audio,
            sample_rate=cfg.sample_rate,
        )

    rles = {i: [rle.encode(f) if f.any() else None for f in m] for i, m in masks.items()}
    foreground = union(np.stack(list(masks.values())))
    return VideoResult(vid, split, scene, exps, rles, [rle.encode(f) for f in foreground])


def _write_refavs(staging: Path, results: list[VideoResult]) -> None:
    with (staging / "metadata.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(REFAVS_COLUMNS)
        for r in results:
            for k, e in enumerate(r.expressions):
                fid = e.obj_ids[0] if e.obj_ids else 0
                writer.writerow([r.vid, f"{r.vid}_{k}", r.split, fid, e.text])


def _write_vos(cfg: SynthConfig, staging: Path, results: list[VideoResult]) -> None:
    """ReVOS / MeViS: meta_expressions + mask_dict (one anno_id per object track)."""
    groups: dict[str, list[VideoResult]] = {}
    for r in results:
        groups.setdefault(r.split, []).append(r)
    anno = 0
    mask_dict_all: dict[str, list] = {}
    foreground: dict[str, dict] = {}
    for split, members in groups.items():
        videos: dict[str, dict] = {}
        mask_dict: dict[str, list] = {}
        for r in members:
            ids: dict[int, int] = {}
            for obj_id, per_frame in r.masks.items():
                ids[obj_id] = anno
                mask_dict[str(anno)] = per_frame
                anno += 1
            exps = {}
            for k, e in enumerate(r.expressions):
                entry = {
                    "exp": e.text,
                    "obj_id": list(e.obj_ids),
                    "anno_id": [ids[i] for i in e.obj_ids],
                }
                if cfg.format == "revos":
                    entry["type_id"] = e.type_id
                exps[str(k)] = entry
            videos[r.vid] = {
                "vid_id": r.vid,
                "frames": _frame_names(cfg, r.scene.num_frames),
                "expressions": exps,
            }
            foreground[r.vid] = {"masks_rle": r.foreground}
        if cfg.format == "revos":
            write_json(staging / f"meta_expressions_{split}_.json", {"videos": videos}, indent=None)
            mask_dict_all.update(mask_dict)
        else:
            write_json(staging / split / "meta_expressions.json", {"videos": videos}, indent=None)
            write_json(staging / split / "mask_dict.json", mask_dict, indent=None)
    if cfg.format == "revos":
        write_json(staging / "mask_dict.json", mask_dict_all, indent=None)
        write_json(staging / "mask_dict_foreground.json", foreground, indent=None)


def synthesize(
    cfg: SynthConfig, out: str | Path, *, overwrite: bool = False, progress: bool = True
) -> dict:
    """Write a synthetic data set to `out`; returns a summary (counts per split and kind)."""
    from tqdm import tqdm

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(
            out, "output folder exists and is not empty (pass --overwrite to replace it)"
        )
    with atomic_dir(out) as staging:  # a complete new set replaces the old one, or nothing
        with ThreadPoolExecutor(max_workers=max(1, cfg.workers)) as pool:
            jobs = pool.map(lambda i: _make_video(cfg, i, staging), range(cfg.videos))
            results = list(
                tqdm(jobs, total=cfg.videos, desc=f"synth {cfg.format}", disable=not progress)
            )
        if cfg.format == "refavs":
            _write_refavs(staging, results)
        else:
            _write_vos(cfg, staging, results)
        summary = _summary(cfg, results)
        write_json(staging / SUMMARY_FILE, summary)
        write_json(staging / OBJECTS_FILE, _objects(results), indent=None)
    return summary


def _objects(results: list[VideoResult]) -> dict:
    """What each object looks like and sounds like, by video and object id: the single-frame
    descriptions that supervised warm starts derive their answers from (omnir1.rl.warmstart)
    and the facts hallucination probes ask about (omnir1.eval.probe): `visible` in at least one
    frame, `sound` the name of what it plays in the soundtrack (None if silent)."""
    return {
        r.vid: {
            str(o.obj_id): {
                "color": o.color,
                "shape": o.shape,
                "size": o.size,
                "visible": any(m is not None for m in r.masks.get(o.obj_id, [])),
                "sound": SOUNDS[o.shape] if o.sound_intervals else None,
            }
            for o in r.scene.objects
        }
        for r in results
    }


def _summary(cfg: SynthConfig, results: list[VideoResult]) -> dict:
    kinds: dict[str, int] = {}
    splits: dict[str, int] = {}
    for r in results:
        splits[r.split] = splits.get(r.split, 0) + 1
        for e in r.expressions:
            kinds[e.kind] = kinds.get(e.kind, 0) + 1
    return {
        "format": cfg.format,
        "seed": cfg.seed,
        "videos": len(results),
        "videos_by_split": splits,
        "expressions": sum(kinds.values()),
        "expressions_by_kind": kinds,
        "fps": cfg.frame_rate,
        "duration_s": cfg.duration_s,
        "frames_per_video": round(cfg.duration_s * cfg.frame_rate),
        "background": cfg.background,
        "object_scale": cfg.object_scale,
        "visit_fraction": cfg.visit_fraction,
        "layout": cfg.layout,
        "width": cfg.width,
        "height": cfg.height,
        "sample_rate": cfg.sample_rate,
    }
