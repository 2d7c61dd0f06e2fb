"""`omnir1 predict`: masks of a model folder on a data set's evaluation splits, in the layout
`omnir1 evaluate` reads, so that a trained and an untrained System 1 can be scored alike.

    omnir1 predict --data DIR --format revos --models DIR --out PRED [--split S ...]
                   [--params params.yaml] [--limit N] [--seed S] [--batch-size N] [--quiet]
                   [--system1-answers answers.jsonl] [--grounder-answer TEXT]

Per video: System 1 answers each expression (greedy decoding with the `system1` settings of
params.yaml; the expressions of a video in batches that share the clip, with the same answers
as one at a time), and System 2 then runs once for all of them, one request per expression (its
keyframes and their descriptions): every frame of the video is decoded and segmented once.
Each expression's per-frame union mask is written as a PNG (0/255, the frame's native size):

    PRED/{video_id}/{expression_id}/{frame_name}.png   ReVOS, MeViS
    PRED/{vid}/{uid}/0000{i}.png                       RefAVS (the per-expression folder)
    PRED/predictions.json   counts, per-stage seconds, the model folder's name, settings
    PRED/answers.jsonl      per expression: System 1's completion, its parse, keyframes, boxes

A malformed answer is data: no keyframes or no boxes give empty masks on every frame, which are
written and counted (the evaluator scores them), never skipped. ReVOS type_id 2 expressions are
never scored and are not predicted. A bad input file is an error naming it. Everything is
written into a staging folder that replaces PRED only when complete, so a partial prediction
is never scored.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from omnir1.benchmarks.registry import get
from omnir1.errors import ConfigError, DataError, InputError
from omnir1.eval.predictions import frame_file
from omnir1.fsutil import atomic_dir, inside, read_json, write_json
from omnir1.systems.system2 import KeyframeRequest, System2Request, run_system2
from omnir1.timing import Stopwatch

SUMMARY = "predictions.json"
ANSWERS = "answers.jsonl"


# ------------------------------------------------------------------------------ selection


def select_expressions(
    fmt: str,
    data: Path,
    splits: Sequence[str] | None = None,
    limit: int | None = None,
    videos_per_split: int | None = None,
) -> tuple[list, list[str], int]:
    """(expressions to predict in data-set order, the evaluated splits, excluded ones skipped):
    the splits `omnir1 evaluate` scores by default; `limit` keeps the first N expressions,
    `videos_per_split` the first N videos of each split (as `omnir1 evaluate` does)."""
    from omnir1.eval.protocols import is_excluded, load_samples, select_samples

    samples, chosen = select_samples(fmt, load_samples(fmt, data), data, splits, videos_per_split)
    wanted = [s for s in samples if not is_excluded(s)]
    excluded = len(samples) - len(wanted)
    if limit is not None:
        wanted = wanted[:limit]
    return wanted, chosen, excluded


def by_video(samples: Sequence) -> dict[tuple[str, str], list]:
    """Expressions grouped by (split, video id), in data-set order (a MeViS video id can recur
    in another split, with its own copy of the frames)."""
    groups: dict[tuple[str, str], list] = {}
    for s in samples:
        groups.setdefault((s.split, s.video_id), []).append(s)
    return groups


def frame_folder(sample) -> Path:
    """The video's frame folder, which both systems read at the data set's fps. Masks are
    written by frame position, so the folder must hold exactly the annotated frames."""
    from omnir1.media.video import list_frame_files

    folder = sample.frame_paths[0].parent
    if not folder.is_dir():
        raise DataError(folder, f"frame folder of video {sample.video_id!r} not found")
    listed = list_frame_files(folder)
    if [p.name for p in listed] != [p.name for p in sample.frame_paths]:
        raise DataError(
            folder,
            f"holds {len(listed)} frame files but the annotations list {sample.num_frames} "
            "(or another order); predictions are written by frame position",
        )
    return folder


def expression_folder(root: Path, sample) -> Path:
    """PRED/{video_id}/{expression_id}: the folder the evaluator reads first for any format."""
    return inside(root, *sample.video_id.split("/"), sample.expression_id, field="prediction")


def read_answers(path: str | Path) -> dict[tuple[str, str], str]:
    """System-1 completions to replay, from an answers.jsonl of an earlier prediction:
    {(video_id, expression_id): completion}."""
    path = Path(path)
    answers = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc.strerror})") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            key = (str(row["video_id"]), str(row["expression_id"]))
            completion = row["completion"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InputError(
                path, f"expected JSON with video_id, expression_id, completion ({exc})", f"line {n}"
            ) from None
        if not isinstance(completion, str):
            raise InputError(path, "completion must be a string", f"line {n}")
        answers[key] = completion
    return answers


# ------------------------------------------------------------------------------- records


def answer_record(sample, completion: str, parsed, keyframes, replayed: bool) -> dict:
    """One line of answers.jsonl (`keyframes` are System 2's KeyframeResults)."""
    kept = []
    for sample_index, k in zip(parsed.keyframes, keyframes, strict=True):
        kept.append(
            {
                "sample_index": sample_index,
                "frame": k.frame,
                "frame_name": sample.frame_names[k.frame],
                "description": k.description,
                "boxes": k.boxes,
                "grounder_text": k.grounding.get("text"),
                "grounder_problems": k.grounding.get("parse", {}).get("problems", []),
            }
        )
    return {
        "split": sample.split,
        "video_id": sample.video_id,
        "expression_id": sample.expression_id,
        "expression": sample.expression,
        "completion": completion,
        "replayed": replayed,
        "format_ok": parsed.format_ok,
        "problems": parsed.problems,
        "moment_problems": sorted({p for m in parsed.moments for p in m.problems}),
        "keyframes": kept,
    }


class Counts:
    """What predictions.json counts: malformed answers are data, so every kind is counted."""

    def __init__(self) -> None:
        self.expressions = self.videos = self.replayed = 0
        self.no_keyframes = self.no_boxes = self.empty_masks = self.malformed = 0
        self.frames = 0
        self.problems: Counter = Counter()
        self.moment_problems: Counter = Counter()
        self.grounder_problems: Counter = Counter()

    def add(self, record: dict, mask_frames: int, frames: int) -> None:
        self.expressions += 1
        self.frames += frames
        self.replayed += record["replayed"]
        keyframes = record["keyframes"]
        self.no_keyframes += not keyframes
        self.no_boxes += bool(keyframes) and not any(k["boxes"] for k in keyframes)
        self.empty_masks += mask_frames == 0
        # an empty moment list is a well-formed answer (a null expression's right one)
        wellformed = record["format_ok"] and set(record["problems"]) <= {"no_valid_moment"}
        self.malformed += not wellformed
        self.problems.update(record["problems"])
        self.moment_problems.update(record["moment_problems"])
        for k in keyframes:  # top-level codes only ("item i: ..." notes would not aggregate)
            self.grounder_problems.update(p for p in k["grounder_problems"] if ":" not in p)

    def to_dict(self) -> dict:
        out = {k: v for k, v in vars(self).items() if isinstance(v, int)}
        for name in ("problems", "moment_problems", "grounder_problems"):
            out[name] = dict(sorted(getattr(self, name).items()))
        return out


# ------------------------------------------------------------------------------- predict


def _check_out(out: Path) -> None:
    """PRED is replaced as a whole: refuse to replace a folder that is not a prediction."""
    occupied = out.exists() and (not out.is_dir() or any(out.iterdir()))
    if occupied and not (out / SUMMARY).is_file():
        raise ConfigError(
            out, f"exists and is not a prediction folder (no {SUMMARY}); not replacing it"
        )


def predict_video(
    models,
    samples: Sequence,
    root: Path,
    reasoner,
    s1,
    *,
    seed: int,
    watch: Stopwatch,
    batch_size: int = 8,
    answers: Mapping[tuple[str, str], str] | None = None,
    grounder_cfg=None,
    grounder_answer: str | None = None,
    shards: Path | None = None,
) -> list[tuple[dict, int]]:
    """Both systems on every expression of one video; (answers.jsonl record, frames with
    foreground) per expression. The PNGs go under `root`."""
    from PIL import Image

    from omnir1.data.shards import load_shard
    from omnir1.systems.collaboration import keyframes_from_answer
    from omnir1.systems.parsing import parse_answer
    from omnir1.systems.reasoning import load_clip

    first = samples[0]
    video = frame_folder(first)
    with watch("decode_system1"):
        if shards is not None:  # preprocessed: both systems' inputs, as decoding gives them
            clip, source = load_shard(shards, first.video_id, cfg=s1)
        else:
            clip = load_clip(video, audio=first.audio_path, cfg=s1, folder_fps=first.fps)
            source = video
    given = [(answers or {}).get((s.video_id, s.expression_id)) for s in samples]
    todo = [i for i, g in enumerate(given) if g is None]
    texts = dict(enumerate(given))
    if todo:
        with watch("system1_generate"):
            generated = reasoner.answer_greedy(
                clip,
                [samples[i].expression for i in todo],
                seed=seed,
                batch_size=batch_size,
            )
        texts.update(zip(todo, generated, strict=True))
    completions, parsed, requests = [], [], []
    for i in range(len(samples)):
        text = texts[i]
        answer = parse_answer(
            text,
            clip.frame_times,
            max_keyframes=s1.max_keyframes,
            max_moments=s1.max_moments,
        )
        keyframes = keyframes_from_answer(clip, answer)
        completions.append((text, given[i] is not None))
        parsed.append(answer)
        requests.append(
            System2Request(
                str(i), tuple(KeyframeRequest(k.frame, k.description) for k in keyframes)
            )
        )

    folders = {str(i): expression_folder(root, s) for i, s in enumerate(samples)}
    benchmark = get(samples[0].dataset) if samples else None
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    written = {rid: 0 for rid in folders}
    foreground = {rid: 0 for rid in folders}
    write_s = 0.0

    def sink(frame: int, masks: dict[str, np.ndarray]) -> None:
        nonlocal write_s
        start = time.perf_counter()
        for rid, mask in masks.items():
            path = frame_file(samples[int(rid)], folders[rid], frame, benchmark)
            # compression level 1: binary masks compress well anyway, and it is 3-5x faster
            Image.fromarray(mask.astype(np.uint8) * 255).save(path, compress_level=1)
            written[rid] += 1
            foreground[rid] += bool(mask.any())
        write_s += time.perf_counter() - start

    s2_timings: dict[str, float] = {}
    results = run_system2(
        models,
        source,
        requests,
        sink,
        grounder_cfg=grounder_cfg,
        folder_fps=first.fps,
        grounder_answer=grounder_answer,
        timings=s2_timings,
    )
    # the sink runs inside SAM2's loop: report writing the PNGs as its own stage
    s2_timings["sam2"] = s2_timings.get("sam2", 0.0) - write_s
    s2_timings["write_masks"] = write_s
    for name, seconds in s2_timings.items():
        watch.timings[name] = watch.timings.get(name, 0.0) + seconds
    out = []
    for i, sample in enumerate(samples):
        rid = str(i)
        if written[rid] != sample.num_frames:
            raise RuntimeError(
                f"{sample.video_id}/{sample.expression_id}: {written[rid]} masks written for "
                f"{sample.num_frames} frames"
            )
        text, replayed = completions[i]
        record = answer_record(sample, text, parsed[i], results[i].keyframes, replayed)
        out.append((record, foreground[rid]))
    return out


def run_predict(
    params,
    *,
    data: str | Path,
    fmt: str,
    models_dir: str | Path,
    out: str | Path,
    splits: Sequence[str] | None = None,
    limit: int | None = None,
    videos_per_split: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int = 8,
    answers: Mapping[tuple[str, str], str] | None = None,
    grounder_answer: str | None = None,
    progress: bool = True,
    shards: str | Path | None = None,
    part: tuple[int, int] | None = None,
) -> dict:
    """Predict every expression of the evaluated splits of `data` into `out` (of the videos of
    `part` (I, N) only, see omnir1.parts; `merge_predictions` joins the parts); the summary that
    predictions.json holds. `answers` {(video_id, expression_id): completion} replays System-1
    answers (the others are generated); `grounder_answer` replays one grounder answer for every
    keyframe (as `omnir1 infer` does)."""
    from tqdm import tqdm

    from omnir1.models.loading import load_models
    from omnir1.parts import take_part
    from omnir1.systems.reasoning import GlobalReasoner

    if limit is not None and limit < 1:
        raise ConfigError(None, f"must be >= 1, got {limit}", "--limit")
    if batch_size < 1:
        raise ConfigError(None, f"must be >= 1, got {batch_size}", "--batch-size")
    data, out = Path(data), Path(out)
    _check_out(out)
    start = time.perf_counter()
    watch = Stopwatch()
    with watch("load_data"):
        samples, chosen, excluded = select_expressions(fmt, data, splits, limit, videos_per_split)
        videos = dict(take_part(list(by_video(samples).items()), part))
        seen: dict[tuple[str, str], str] = {}
        for s in samples:  # one folder per expression: two splits may not share one
            other = seen.setdefault((s.video_id, s.expression_id), s.split)
            if other != s.split:
                raise DataError(
                    data,
                    f"expression {s.video_id}/{s.expression_id} is in splits {other!r} and "
                    f"{s.split!r}: their predictions would share a folder; predict one split",
                    "--split",
                )
    # greedy decoding: a prediction is a deterministic function of the model and the data
    s1 = params.system1
    grounder_cfg = params.grounder
    with watch("load_models"):
        models = load_models(models_dir, device=device, attn_implementation=s1.attn_implementation)
    reasoner = GlobalReasoner(models.system1, models.system1_processor, s1, greedy=True)
    counts = Counts()
    with atomic_dir(out) as staging:
        with (staging / ANSWERS).open("w", encoding="utf-8") as log:
            bar = tqdm(videos.items(), desc=f"predict {fmt}", unit="video", disable=not progress)
            for (_, vid), group in bar:
                bar.set_postfix_str(vid, refresh=False)
                for record, mask_frames in predict_video(
                    models,
                    group,
                    staging,
                    reasoner,
                    s1,
                    seed=seed,
                    watch=watch,
                    batch_size=batch_size,
                    answers=answers,
                    grounder_cfg=grounder_cfg,
                    grounder_answer=grounder_answer,
                    shards=None if shards is None else Path(shards),
                ):
                    record["mask_frames"] = mask_frames
                    log.write(json.dumps(record) + "\n")
                    counts.add(record, mask_frames, group[0].num_frames)
                counts.videos += 1
        timings = {**watch.timings, "total": time.perf_counter() - start}
        summary = {
            "format": fmt,
            "data": str(data),
            "splits": chosen,
            "models": {"name": models.manifest.name, "dir": str(models_dir)},
            "counts": {**counts.to_dict(), "excluded_not_predicted": excluded},
            "timings_s": timings,
            "per_video_s": timings["total"] / counts.videos if counts.videos else None,
            "settings": {
                "seed": seed,
                "limit": limit,
                "videos_per_split": videos_per_split,
                "device": device,
                "system1_batch_size": batch_size,
                "system1": {**s1.model_dump(mode="json"), "greedy": True},
                "grounder": grounder_cfg.model_dump(mode="json"),
                "replayed_system1_answers": answers is not None,
                "replayed_grounder_answer": grounder_answer is not None,
                "shards": None if shards is None else str(shards),
                "part": None if part is None else f"{part[0]}/{part[1]}",
            },
            "answers": ANSWERS,
        }
        write_json(staging / SUMMARY, summary)
    return summary


def merge_predictions(parts: Sequence[str | Path], out: str | Path) -> dict:
    """One prediction folder from the folders of `run_predict(part=...)` on the same data and
    model: the expression folders side by side, answers.jsonl in part order, counts and timings
    summed. Replaces `out` whole; returns the merged summary."""
    parts = [Path(p) for p in parts]
    if not parts:
        raise ConfigError(None, "needs at least one prediction folder to merge", "parts")
    summaries = []
    for folder in parts:
        if not (folder / SUMMARY).is_file():
            raise InputError(folder / SUMMARY, "missing: this part's prediction did not complete")
        summaries.append(read_json(folder / SUMMARY))
    first = summaries[0]
    for folder, summary in zip(parts, summaries, strict=True):
        for key in ("format", "data", "splits", "models"):
            if summary.get(key) != first.get(key):
                raise InputError(
                    folder / SUMMARY, f"{key} {summary.get(key)!r} differs from {parts[0]}", key
                )

    def add(a, b):
        if isinstance(a, dict):
            return {k: add(a.get(k, 0), b.get(k, 0)) for k in a.keys() | b.keys()}
        return (a or 0) + (b or 0)

    counts, timings = first["counts"], first["timings_s"]
    for summary in summaries[1:]:
        counts, timings = add(counts, summary["counts"]), add(timings, summary["timings_s"])
    _check_out(Path(out))
    with atomic_dir(out) as staging:
        with (staging / ANSWERS).open("w", encoding="utf-8") as answers:
            for folder in parts:
                for item in sorted(folder.iterdir()):
                    if item.name == ANSWERS:
                        answers.write(item.read_text(encoding="utf-8"))
                    elif item.name != SUMMARY:
                        shutil.copytree(item, staging / item.name, dirs_exist_ok=True)
        merged = {
            **first,
            "counts": counts,
            "timings_s": timings,
            "per_video_s": timings["total"] / counts["videos"] if counts.get("videos") else None,
            "settings": {**first["settings"], "part": None, "merged_parts": len(parts)},
        }
        write_json(staging / SUMMARY, merged)
    return merged
