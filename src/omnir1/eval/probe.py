"""`omnir1 probe`: hallucination probes built from each data set's own annotations, asked of
every model (the trained System 1 and the one it started from), side by side.

    omnir1 probe --data revos=data/sets/revos --data refavs=data/sets/refavs
                 --model untrained=models/warm --model trained=runs/train/model
                 --evaluation metrics/evaluate.json --out reports/probe --metrics metrics/probe.json

Families (docs/design.md §4), on the evaluated splits' videos:
- AVHBench-style yes/no questions System 1 answers in text, from the video and its audio:
  `audio_to_video` "Is the object making the {sound} visible in the video?" (yes: a visible
  object plays it; no: a sound of the data set that this video does not play),
  `video_to_audio` "Does the {color} {shape} make a sound in the audio?" (yes: a visible object
  that plays a sound; no: a visible silent one, else an object the video does not have),
  `swapped_audio` the audio_to_video question on the video with another video's soundtrack,
  about the sounds of that soundtrack (yes only when this video shows their source too).
  An answer is yes or no by its first word (inside <answer> when there is one); anything else
  is counted as unanswered: wrong, and not a yes.
- CMM-style present/absent pairs through both systems: System 1 answers the description of an
  object the video has ("present") or does not have ("absent"), System 2's grounder boxes its
  keyframes; "yes" = at least one box. PA = yes-rate on present, HR = no-rate on absent
  (hallucination resistance, as CMM defines it: higher is better).
- Mask level, from the evaluate stage's metrics when given: the empty-mask rate and S on the
  RefAVS null split, ReVOS R.

The object and sound facts come from the data set's `synth_objects.json` (what each object
looks like, whether it is visible, what it plays). A data set without one (the public ones)
gets the CMM pairs from its own expressions: present = its referring expressions, absent =
its null expressions. Probes are drawn with `params.probe.seed`, at most
`questions_per_video` per family, video and expected answer, balanced yes/no where the video
allows it.

OUT/{format}/{model}.jsonl  every probe, the model's answer and how it was read
METRICS  {model: {"avh": {accuracy, precision, recall, f1, yes_ratio, answered, n,
          "families": {...}}, "cmm": {pa, hr, accuracy, yes_ratio, n}, "mask": {...}},
          "delta": second model - first, "probes": counts, "seconds": ...}
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from omnir1.errors import ConfigError
from omnir1.fsutil import atomic_open, read_json, write_json
from omnir1.media.audio import SAMPLE_RATE

OBJECTS_FILE = "synth_objects.json"
AVH_FAMILIES = ("audio_to_video", "video_to_audio", "swapped_audio")
YES_NO_SUFFIX = " Answer yes or no."
_ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.S)
_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.S)
_FIRST_WORD = re.compile(r"[A-Za-z]+")


@dataclass(frozen=True)
class Probe:
    family: str  # one of AVH_FAMILIES, or "cmm"
    dataset: str
    video_id: str
    text: str  # the question (AVH) or the description System 1 gets (CMM)
    expected: bool
    audio_from: str | None = None  # swapped_audio: the video whose soundtrack is played


def read_yes_no(text: str) -> bool | None:
    """True/False by the answer's first word; None when it is neither yes nor no."""
    inside = _ANSWER.search(text)
    body = inside.group(1) if inside else _THINK.sub(" ", text)
    word = _FIRST_WORD.search(body)
    if word is None:
        return None
    return {"yes": True, "no": False}.get(word.group(0).lower())


def binary_scores(expected: Sequence[bool], said: Sequence[bool | None]) -> dict:
    """Accuracy, precision, recall and F1 of "yes", the yes-ratio, and the answered rate; an
    unanswered probe counts as wrong and as not a yes."""
    n = len(expected)
    if n == 0:
        return {"n": 0}
    tp = sum(e and s is True for e, s in zip(expected, said, strict=True))
    fp = sum((not e) and s is True for e, s in zip(expected, said, strict=True))
    fn = sum(e and s is not True for e, s in zip(expected, said, strict=True))
    correct = sum(s is not None and s == e for e, s in zip(expected, said, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "n": n,
        "accuracy": correct / n,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": sum(s is True for s in said) / n,
        "answered": sum(s is not None for s in said) / n,
    }


def cmm_scores(expected: Sequence[bool], said: Sequence[bool]) -> dict:
    """PA (yes on present), HR (no on absent: hallucination resistance), accuracy, yes-ratio."""
    present = [s for e, s in zip(expected, said, strict=True) if e]
    absent = [s for e, s in zip(expected, said, strict=True) if not e]
    n = len(expected)
    return {
        "n": n,
        "present": len(present),
        "absent": len(absent),
        "pa": float(np.mean(present)) if present else None,
        "hr": float(np.mean([not s for s in absent])) if absent else None,
        "accuracy": sum(s == e for e, s in zip(expected, said, strict=True)) / n if n else None,
        "yes_ratio": float(np.mean(said)) if n else None,
    }


# ------------------------------------------------------------------------------ building


def _draw(rng: random.Random, items: Sequence, k: int) -> list:
    items = sorted(set(items))
    return rng.sample(items, min(k, len(items)))


def _object_probes(
    fmt: str,
    videos: Sequence[str],
    objects: Mapping,
    k: int,
    rng: random.Random,
    soundtracks: Sequence[str] = (),
) -> list[Probe]:
    """Probes of `videos` from the objects file; swapped soundtracks come from `soundtracks`
    (default: `videos`)."""

    def name(o: Mapping) -> str:
        return f"{o['color']} {o['shape']}"

    everything = [o for vid in objects.values() for o in vid.values()]
    all_sounds = {o["sound"] for o in everything if o.get("sound")}
    all_names = {(o["color"], o["shape"]) for o in everything}
    colors = sorted({c for c, _ in all_names})
    shapes = sorted({s for _, s in all_names})
    probes: list[Probe] = []
    for vid in videos:
        objs = list(objects.get(vid, {}).values())
        if not objs:
            continue
        visible = [o for o in objs if o.get("visible")]
        played = {o["sound"] for o in objs if o.get("sound")}
        shown_sounds = {o["sound"] for o in visible if o.get("sound")}
        had = {(o["color"], o["shape"]) for o in objs}
        absent = [f"{c} {s}" for c in colors for s in shapes if (c, s) not in had]

        def add(family: str, texts: Sequence[str], expected: bool, vid: str = vid) -> None:
            probes.extend(Probe(family, fmt, vid, t, expected) for t in _draw(rng, texts, k))

        a2v = "Is the object making the {} visible in the video?"
        add("audio_to_video", [a2v.format(s) for s in shown_sounds], True)
        add("audio_to_video", [a2v.format(s) for s in (played - shown_sounds)], False)
        add("audio_to_video", [a2v.format(s) for s in (all_sounds - played)], False)
        v2a = "Does the {} make a sound in the audio?"
        add("video_to_audio", [v2a.format(name(o)) for o in visible if o.get("sound")], True)
        silent = [v2a.format(name(o)) for o in visible if not o.get("sound")]
        add("video_to_audio", silent or [v2a.format(a) for a in absent], False)
        # swapped audio: the soundtrack of the next video that plays something this one does not
        others = list(soundtracks or videos)
        at = others.index(vid) if vid in others else -1
        for other in [*others[at + 1 :], *others[: max(at, 0)]]:
            theirs = {o["sound"] for o in objects.get(other, {}).values() if o.get("sound")}
            if theirs - played:
                for s in _draw(rng, theirs, k):
                    probes.append(
                        Probe("swapped_audio", fmt, vid, a2v.format(s), s in shown_sounds, other)
                    )
                break
        add("cmm", [f"the {name(o)}" for o in visible], True)
        add("cmm", [f"the {a}" for a in absent], False)
    return probes


def _expression_probes(fmt: str, samples: Sequence, k: int, rng: random.Random) -> list[Probe]:
    probes = []
    for vid in dict.fromkeys(s.video_id for s in samples):
        mine = [s for s in samples if s.video_id == vid]
        for expected in (True, False):
            texts = [s.expression for s in mine if s.is_null != expected]
            probes += [Probe("cmm", fmt, vid, t, expected) for t in _draw(rng, texts, k)]
    return probes


def build_probes(fmt: str, data: str | Path, cfg) -> tuple[list[Probe], dict[str, object]]:
    """The probes of one data set and, per probed video, one of its samples (frames, audio)."""
    from omnir1.eval.predict import select_expressions

    data = Path(data)
    samples, _, _ = select_expressions(fmt, data)
    first: dict[str, object] = {}
    for s in samples:
        first.setdefault(s.video_id, s)
    videos = list(first)[: cfg.max_videos]
    rng = random.Random(f"{cfg.seed}:{fmt}")
    objects_path = data / OBJECTS_FILE
    if objects_path.is_file():
        probes = _object_probes(fmt, videos, read_json(objects_path), cfg.questions_per_video, rng)
        # swapped soundtracks may come from any evaluated video, not only the probed ones
        needed = {p.audio_from for p in probes if p.audio_from}
    else:
        kept = [s for s in samples if s.video_id in set(videos)]
        probes = _expression_probes(fmt, kept, cfg.questions_per_video, rng)
        needed = set()
    return probes, {v: first[v] for v in dict.fromkeys([*videos, *sorted(needed)]) if v in first}


# ------------------------------------------------------------------------------ answering


def _fit(audio: np.ndarray | None, length: int) -> np.ndarray | None:
    """Another video's soundtrack cut or zero-padded to this clip's length."""
    if audio is None:
        return None
    out = np.zeros(length, np.float32)
    out[: min(length, len(audio))] = audio[:length]
    return out


def question_prompts(reasoner, questions: Sequence[str]) -> list[str]:
    from omnir1.systems.prompts import SYSTEM1_SYSTEM

    return [
        reasoner.chat_prompt(
            [
                {"role": "system", "content": SYSTEM1_SYSTEM},
                {
                    "role": "user",
                    "content": [{"type": "video"}, {"type": "text", "text": q + YES_NO_SUFFIX}],
                },
            ]
        )
        for q in questions
    ]


def _ground(models, reasoner, s1, clip, sample, descriptions, cfg_grounder, seed, batch):
    """For each description: does System 2 find at least one box on System 1's keyframes?"""
    from omnir1.eval.predict import frame_folder
    from omnir1.systems.collaboration import keyframes_from_answer
    from omnir1.systems.parsing import parse_answer
    from omnir1.systems.system2 import KeyframeRequest, System2Request, run_system2

    texts = reasoner.answer_greedy(clip, descriptions, seed=seed, batch_size=batch)
    requests = []
    for i, text in enumerate(texts):
        answer = parse_answer(
            text, clip.frame_times, max_keyframes=s1.max_keyframes, max_moments=s1.max_moments
        )
        keyframes = keyframes_from_answer(clip, answer)
        requests.append(
            System2Request(
                str(i), tuple(KeyframeRequest(k.frame, k.description) for k in keyframes)
            )
        )
    results = run_system2(
        models,
        frame_folder(sample),
        requests,
        lambda *_: None,
        grounder_cfg=cfg_grounder,
        folder_fps=sample.fps,
        segment_masks=False,
    )
    return texts, [any(k.boxes for k in r.keyframes) for r in results]


def answer_probes(
    params,
    models_dir: str | Path,
    probes: Sequence[Probe],
    samples: Mapping,
    clips: Mapping,
    *,
    progress: bool = False,
    device: str = "cpu",
) -> list[dict]:
    """Every probe asked of one model folder; one record per probe (in order)."""
    from tqdm import tqdm

    from omnir1.models.loading import load_models
    from omnir1.systems.reasoning import GlobalReasoner

    cfg = params.probe
    s1 = params.system1
    models = load_models(models_dir, device=device, attn_implementation=s1.attn_implementation)
    reasoner = GlobalReasoner(models.system1, models.system1_processor, s1, greedy=True)
    batch = params.evaluate.system1_batch_size
    records: list[dict | None] = [None] * len(probes)
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(probes):
        kind = "cmm" if p.family == "cmm" else "text"
        groups.setdefault((p.dataset, p.video_id, p.audio_from, kind), []).append(i)
    bar = tqdm(groups.items(), desc=f"probe {Path(models_dir).name}", disable=not progress)
    for (fmt, vid, audio_from, kind), idx in bar:
        clip = clips[fmt, vid]
        if audio_from is not None:
            own = clip.audio
            length = len(own) if own is not None else round(clip.duration_s * SAMPLE_RATE)
            clip = replace(clip, audio=_fit(clips[fmt, audio_from].audio, length))
        texts = [probes[i].text for i in idx]
        if kind == "text":
            answers = reasoner.generate_greedy(
                clip,
                question_prompts(reasoner, texts),
                batch_size=batch,
                max_new_tokens=cfg.max_new_tokens,
            )
            said = [read_yes_no(a) for a in answers]
        else:
            answers, said = _ground(
                models,
                reasoner,
                s1,
                clip,
                samples[fmt, vid],
                texts,
                params.grounder,
                params.train.seed,
                batch,
            )
        for i, answer, yes in zip(idx, answers, said, strict=True):
            records[i] = {**asdict(probes[i]), "answer": answer, "said": yes}
    return [r for r in records if r is not None]


class LazyClips(Mapping):
    """(format, video id) -> System 1's clip of that video, decoded on first use; the last
    few kept (the probes of a video, and a CMM probe's audio donor, come together)."""

    def __init__(self, samples: Mapping, cfg, keep: int = 4):
        from omnir1.lazy import LRU

        self.samples, self.cfg = samples, cfg
        self._get = LRU(self._load, keep)

    def _load(self, key):
        from omnir1.systems.reasoning import load_clip

        s = self.samples[key]
        return load_clip(
            s.frame_paths[0].parent, audio=s.audio_path, cfg=self.cfg, folder_fps=s.fps
        )

    def __getitem__(self, key):
        if key not in self.samples:
            raise KeyError(key)
        return self._get(key)

    def __iter__(self):
        return iter(self.samples)

    def __len__(self) -> int:
        return len(self.samples)


def score(records: Sequence[dict]) -> dict:
    """AVH (pooled and per family) and CMM figures of one model's answered probes."""
    avh = [r for r in records if r["family"] in AVH_FAMILIES]
    cmm = [r for r in records if r["family"] == "cmm"]
    families = {
        f: binary_scores([r["expected"] for r in rs], [r["said"] for r in rs])
        for f in AVH_FAMILIES
        if (rs := [r for r in avh if r["family"] == f])
    }
    return {
        "avh": {
            **binary_scores([r["expected"] for r in avh], [r["said"] for r in avh]),
            "families": families,
        },
        "cmm": cmm_scores([r["expected"] for r in cmm], [bool(r["said"]) for r in cmm]),
    }


def mask_level(evaluation: Mapping, label: str) -> dict:
    """Null-split empty-mask rate and S (RefAVS) and R (ReVOS) of one model, from the evaluate
    stage's metrics (what it has of them)."""
    from omnir1.benchmarks.registry import BENCHMARKS

    figures = evaluation.get(label, {})
    out = {}
    for name, benchmark in BENCHMARKS.items():
        if name in figures:
            out.update(benchmark.mask_figures(figures[name]))
    return out


def run_probe(
    params,
    *,
    data: Mapping[str, str | Path],
    models: Mapping[str, str | Path],
    out: str | Path,
    metrics: str | Path,
    evaluation: str | Path | None = None,
    progress: bool = True,
    device: str = "cpu",
) -> dict:
    """Build the probes of every data set, ask every model, write OUT and METRICS."""

    from omnir1.eval.benchmark import difference

    if not data or not models:
        raise ConfigError(None, "needs at least one --data FORMAT=DIR and one --model NAME=DIR")
    start = time.perf_counter()
    evaluated = read_json(evaluation) if evaluation is not None else {}
    s1 = params.system1
    probes: list[Probe] = []
    samples: dict[tuple[str, str], object] = {}
    for fmt, folder in data.items():
        found, videos = build_probes(fmt, folder, params.probe)
        probes += found
        samples.update({(fmt, vid): s for vid, s in videos.items()})
    if not probes:
        raise ConfigError(None, "no probe could be built from the data sets given", "--data")
    # decoded when a probe asks (a few kept): memory stays flat in the number of videos
    clips = LazyClips(samples, s1)
    built = time.perf_counter()
    report: dict = {}
    seconds: dict = {"build": built - start}
    out = Path(out)
    for label, model_dir in models.items():
        began = time.perf_counter()
        records = answer_probes(
            params, model_dir, probes, samples, clips, progress=progress, device=device
        )
        for fmt in data:
            with atomic_open(out / fmt / f"{label}.jsonl", "w", encoding="utf-8") as fh:
                for r in records:
                    if r["dataset"] == fmt:
                        fh.write(json.dumps(r) + "\n")
        report[label] = {**score(records), "mask": mask_level(evaluated, label)}
        report[label]["by_dataset"] = {
            fmt: score([r for r in records if r["dataset"] == fmt]) for fmt in data
        }
        seconds[label] = time.perf_counter() - began
    labels = list(models)
    if len(labels) == 2:
        report["delta"] = difference(report[labels[1]], report[labels[0]])
    counts: dict = {}
    for p in probes:
        family = counts.setdefault(p.dataset, {}).setdefault(p.family, {"yes": 0, "no": 0})
        family["yes" if p.expected else "no"] += 1
    report["probes"] = counts
    report["models"] = {label: str(path) for label, path in models.items()}
    report["seconds"] = seconds
    write_json(metrics, report)
    return report
