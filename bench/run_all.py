"""Every benchmark in one run: a table on stdout and one JSON file (`make bench`).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python bench/run_all.py
        [--quick] [--only NAME ...] [--out reports/bench.json]

Each benchmark is a function returning rows {name, figure, unit, value, baseline, ratio,
command, note}: `value` is ours, `baseline` the straightforward way measured side by side in the
same run, `ratio` how many times better `value` is (baseline/value for times, value/baseline for
rates; null where a figure has no baseline) and `command` what reproduces it. Results are
checked equal to the baseline's before anything is timed, where both compute the same thing.
The existing scripts' helpers are reused (bench_metrics, bench_evaluate, bench_infer,
bench_long_video), so a figure here and there come from the same code. `--quick` is a smoke
size (seconds, for the tests): its figures are not the documented ones.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
ROOT = Path(__file__).resolve().parents[1]
THREADS = "OMP_NUM_THREADS=1 MKL_NUM_THREADS=1"
TOKEN = "bench-token"  # the local System-2 service's bearer token (127.0.0.1 only)


class Row(TypedDict):
    """One figure of reports/bench.json."""

    name: str
    figure: str
    unit: str
    value: float
    baseline: float | None
    ratio: float | None
    command: str
    note: str


@dataclass
class Context:
    """Sizes and shared inputs: tiny models and a small synthetic ReVOS set are built once per
    run (in a temporary folder) for the benchmarks that need them."""

    quick: bool
    tmp: Path
    _cache: dict[str, Path] = field(default_factory=dict)

    def command(self, name: str) -> str:
        quick = " --quick" if self.quick else ""
        return f"{THREADS} .venv/bin/python bench/run_all.py --only {name}{quick}"

    def models(self) -> Path:
        """`omnir1 models init-tiny` at params.yaml's SAM2 size (64 px), built here."""
        if "models" not in self._cache:
            out = self.tmp / "models"
            cli("models", "init-tiny", "--out", str(out), "--sam2-size", "64")
            self._cache["models"] = out
        return self._cache["models"]

    def revos(self) -> Path:
        """`omnir1 data synth` ReVOS set: 6 videos of 10 s, 320x180 at 6 fps."""
        if "revos" not in self._cache:
            out = self.tmp / "revos"
            cli("data", "synth", "--format", "revos", "--videos", "6", "--out", str(out), "--quiet")
            self._cache["revos"] = out
        return self._cache["revos"]


def cli(*args: str) -> float:
    """Run `omnir1 ARGS` in a fresh interpreter (as DVC stages do); returns its seconds."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "omnir1.cli", *args], capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(f"omnir1 {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    """Fewest seconds over `repeats` calls: the run least disturbed by other work."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def row(
    ctx: Context,
    name: str,
    figure: str,
    unit: str,
    value: float,
    baseline: float | None = None,
    *,
    higher_is_better: bool,
    note: str = "",
) -> Row:
    """A figure with its ratio (above 1: ours is better) and the command that reproduces it."""
    ratio = None
    if baseline is not None:
        ratio = value / baseline if higher_is_better else baseline / value
    bench = name.split("/")[0]
    return Row(
        name=name,
        figure=figure,
        unit=unit,
        value=value,
        baseline=baseline,
        ratio=ratio,
        command=ctx.command(bench),
        note=note,
    )


# ---------------------------------------------------------------------------------------------
# 1. metric speed


def bench_metrics(ctx: Context) -> list[Row]:
    """J and F per frame at 480p and 1080p on compact masks and on the same masks with
    scattered false positives, ours vs the scipy reference and, for F, the DAVIS toolkit's own
    method (OpenCV dilation); bench_metrics.py's masks and timer."""
    from bench_metrics import SIZES, mask_kinds, per_frame_ms

    from omnir1.eval.metrics import boundary_f, jaccard
    from omnir1.eval.reference import (
        boundary_f_reference,
        boundary_f_toolkit,
        jaccard_reference,
    )

    frames, ref_frames, repeats = (4, 2, 1) if ctx.quick else (20, 3, 3)
    rng = np.random.default_rng(0)
    rows = []
    for size, (h, w) in SIZES.items():
        for kind, data in mask_kinds(rng, h, w, frames).items():
            few = data[:ref_frames]  # the scipy reference is slow: fewer frames
            for p, g in few:
                assert abs(boundary_f(p, g) - boundary_f_reference(p, g)) <= 1e-9
                assert abs(boundary_f(p, g) - boundary_f_toolkit(p, g)) <= 1e-9
                assert jaccard(p, g) == jaccard_reference(p, g)
            masks = f"{size} {kind}"
            j = per_frame_ms(jaccard, data, repeats)
            rows.append(
                row(
                    ctx,
                    f"metrics/J {masks}",
                    f"J per frame at {size}, {kind} masks, ours vs plain numpy reference",
                    "ms",
                    j,
                    per_frame_ms(jaccard_reference, data, repeats),
                    higher_is_better=False,
                )
            )
            f = per_frame_ms(boundary_f, data, repeats)
            rows.append(
                row(
                    ctx,
                    f"metrics/F {masks}",
                    f"F per frame at {size}, {kind} masks, ours vs scipy reference",
                    "ms",
                    f,
                    per_frame_ms(boundary_f_reference, few),
                    higher_is_better=False,
                )
            )
            rows.append(
                row(
                    ctx,
                    f"metrics/F {masks} toolkit",
                    f"F per frame at {size}, {kind} masks, ours vs the DAVIS toolkit's method "
                    "(OpenCV)",
                    "ms",
                    f,
                    per_frame_ms(boundary_f_toolkit, data, repeats),
                    higher_is_better=False,
                )
            )
    return rows


def bench_evaluate(ctx: Context) -> list[Row]:
    """A whole ReVOS-layout evaluation with 2 worker processes vs 1 (bench_evaluate.py's set
    and predictions); both must give the same scores."""
    from bench_evaluate import write_shifted_predictions

    from omnir1.data.synth import SynthConfig, synthesize
    from omnir1.eval.protocols import evaluate

    videos = 8 if ctx.quick else 64
    data, pred = ctx.tmp / "eval_revos", ctx.tmp / "eval_pred"
    synthesize(SynthConfig(format="revos", videos=videos, seed=0), data, progress=False)
    write_shifted_predictions(data, pred)
    seconds, scores, frames = {}, {}, 0
    for workers in (1, 2, 1, 2):  # interleaved, best of two each: the other job comes and goes
        start = time.perf_counter()
        ev = evaluate("revos", data, pred, workers=workers)
        elapsed = time.perf_counter() - start
        seconds[workers] = min(seconds.get(workers, elapsed), elapsed)
        scores[workers] = [s.to_dict() for s in ev.scores]
        frames = ev.counts["frames"]
    assert scores[1] == scores[2], "the worker count changed the scores"
    return [
        row(
            ctx,
            "evaluate/2 vs 1 process",
            f"whole ReVOS evaluation ({frames} frames), 2 worker processes vs 1",
            "s",
            seconds[2],
            seconds[1],
            higher_is_better=False,
            note=f"{frames / seconds[2]:.0f} vs {frames / seconds[1]:.0f} frames/s",
        )
    ]


# ---------------------------------------------------------------------------------------------
# 2. media


def decode_every_frame(path: Path, times: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """The straightforward way with the same library (PyAV): decode and convert every frame,
    keep the last one at or before each sample time, resize those (the same rule and resize as
    `sample_frames`)."""
    import av

    from omnir1.media.video import resize

    chosen: list[np.ndarray] = []
    last = None
    with av.open(str(path)) as container:
        t0 = None
        for frame in container.decode(container.streams.video[0]):
            image = frame.to_ndarray(format="rgb24")
            t0 = frame.time if t0 is None else t0
            while len(chosen) < len(times) and frame.time - t0 > times[len(chosen)] + 1e-6:
                chosen.append(last if last is not None else image)
            last = image
    chosen += [last] * (len(times) - len(chosen))
    return np.stack([resize(c, size) for c in chosen])


def bench_media(ctx: Context) -> list[Row]:
    """Frames per second through `sample_frames` at 2 fps (only sampled frames are converted to
    pixels) vs decoding every frame, for System 1 (128x28x28 px per frame) and System 2 (full
    resolution), on bench_infer.py's 720p 30 fps H.264 clip."""
    from bench_infer import make_clip

    from omnir1.media import inspect, sample_frames, sample_times, smart_resize

    seconds, repeats = (2, 1) if ctx.quick else (5, 3)
    clip = make_clip(ctx.tmp / "clip720p.mp4", seconds=seconds)
    info = inspect(clip)
    times = sample_times(info.duration_s, 2.0)
    rows = []
    for system, max_pixels in (("System 1", 128 * 28 * 28), ("System 2", None)):
        size = None if max_pixels is None else smart_resize(720, 1280, max_pixels=max_pixels)
        ours = sample_frames(clip, fps=2.0, max_pixels=max_pixels)
        assert np.array_equal(ours.frames, decode_every_frame(clip, times, size))
        t_ours = best_of(lambda mp=max_pixels: sample_frames(clip, fps=2.0, max_pixels=mp), repeats)
        t_ref = best_of(lambda s=size: decode_every_frame(clip, times, s), repeats)
        shown = "x".join(map(str, ours.frames.shape[1:3]))
        rows.append(
            row(
                ctx,
                f"media/{system} 2 fps",
                f"{system}: 2 fps at {shown} px from a {seconds} s 720p 30 fps H.264 clip, "
                "sample_frames vs decoding every frame",
                "video frames/s",
                info.num_frames / t_ours,
                info.num_frames / t_ref,
                higher_is_better=True,
                note=f"{len(times)} frames sampled from {info.num_frames}",
            )
        )
    return rows


# ---------------------------------------------------------------------------------------------
# 3. System 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def system2_service(models: Path, data_root: Path, log: Path, *extra: str) -> Iterator[str]:
    """`omnir1 serve-system2 ... EXTRA` on 127.0.0.1 with a token, as tests/conftest.py starts
    it."""
    import requests

    port = free_port()
    cmd = [sys.executable, "-m", "omnir1.cli", "serve-system2", "--models", str(models)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--data-root", str(data_root), *extra]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OMNIR1_SYSTEM2_TOKEN": TOKEN}
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 180
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text()[-3000:]
                    raise RuntimeError(f"System-2 service did not start:\n{tail}")
                with contextlib.suppress(requests.RequestException):
                    if requests.get(url + "/health", timeout=1).status_code == 200:
                        break
                time.sleep(0.3)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def grpo_group(frames: int, boxed: bool, seed: int = 0) -> list:
    """G=8 completions of 4 keyframes each, drawn from 6 frames x 2 descriptions, so the same
    keyframe+description recurs across completions as in a GRPO group. `boxed`: each keyframe
    carries the box a deterministic grounder would give for it (SAM2 then has work to do; the
    random tiny grounder returns no boxes)."""
    from omnir1.systems.system2 import KeyframeRequest, System2Request

    rng = np.random.default_rng(seed)
    pool = np.linspace(0, frames - 1, 6).round().astype(int)
    descriptions = ("the red ball", "the ball moving right")
    group = []
    for c in range(8):
        keyframes = []
        for f in sorted(rng.choice(pool, 4, replace=False).tolist()):
            d = int(rng.integers(2))
            cx = 150 + f  # bench_long_video.make_clip's ball: centre (150 + i, 180), radius 45
            box = (cx - 45 - 8 * d, 135 - 8 * d, cx + 45 + 8 * d, 225 + 8 * d)
            keyframes.append(KeyframeRequest(f, descriptions[d], (box,) if boxed else None))
        group.append(System2Request(str(c), tuple(keyframes)))
    return group


def mask_differences(group: list, together: dict, apart: dict) -> int:
    """Pixels where a completion's masks from the batched call and from its own call differ."""
    from omnir1.data import rle

    differ = 0
    for r in group:
        assert together[r.id].keys() == apart[r.id].keys(), r.id  # every frame both ways
        for frame, mask in together[r.id].items():
            differ += int((rle.decode(mask) != rle.decode(apart[r.id][frame])).sum())
    return differ


@contextlib.contextmanager
def patched_environ(values: dict[str, str]) -> Iterator[None]:
    """`values` in os.environ for the block (what a service started in it inherits)."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def bench_system2(ctx: Context) -> list[Row]:
    """Masks per second for one GRPO group (G=8, 4 keyframes each, with duplicates): one
    batched, deduplicated call vs one call per completion, in process and through the service.
    Two cases: keyframes grounded by the tiny grounder (it returns no boxes, so this times the
    grounder), and keyframes with boxes (this times SAM2 tracking them through the video).
    SAM2's features are not kept across calls here (in process or in the service), so that
    the calls per completion recompute them as the batched call's sweeps do: this measures
    batching; `sam2_reuse` measures the feature store."""
    import functools

    from bench_long_video import make_clip

    from omnir1.models.loading import load_models
    from omnir1.service.client import System2Client
    from omnir1.systems.segmentation import FEATURE_CACHE_ENV
    from omnir1.systems.system2 import collect_rle, run_system2

    seconds, fps, repeats = (1, 6, 1) if ctx.quick else (2, 4, 2)
    root = ctx.tmp / "served"
    root.mkdir(exist_ok=True)
    clip = make_clip(root / "clip.mp4", seconds=seconds, fps=fps)  # 640x360, one moving ball
    frames = seconds * fps
    models = load_models(ctx.models())
    rows = []
    no_store = {FEATURE_CACHE_ENV: "0"}  # the service's FeatureStore off
    with (
        patched_environ(no_store),
        system2_service(ctx.models(), root, ctx.tmp / "service.log") as url,
    ):
        client = System2Client(url, token=TOKEN, data_root=root)  # sends the video's path
        in_process = functools.partial(run_system2, features=None)
        routes = {"in process": in_process, "service": client.run_system2}
        for case, boxed in (("grounder", False), ("SAM2", True)):
            group = grpo_group(frames, boxed)
            keyframes = [(k.frame, k.description) for r in group for k in r.keyframes]
            unique = len(set(keyframes))
            masks = len(group) * frames  # one union mask per completion per frame
            pixels = masks * 360 * 640
            batched: dict[str, float] = {}
            for route, system2 in routes.items():
                one_by_one = float("inf")
                for _ in range(repeats):  # interleaved, best of each: the other job varies
                    sink, together = collect_rle()
                    start = time.perf_counter()
                    system2(models, clip, group, sink)
                    took = time.perf_counter() - start
                    batched[route] = min(batched.get(route, took), took)
                    sink, apart = collect_rle()
                    start = time.perf_counter()
                    for request in group:
                        system2(models, clip, [request], sink)
                    one_by_one = min(one_by_one, time.perf_counter() - start)
                # batching must not change any completion's masks beyond the rounding of
                # batched products (boxes on the same frame run as one SAM2 batch)
                differ = mask_differences(group, together, apart)
                assert differ <= pixels * 1e-4, (route, differ)
                rows.append(
                    row(
                        ctx,
                        f"system2/{case} {route}",
                        f"GRPO group, {case} ({'given boxes' if boxed else 'tiny grounder'}), "
                        f"{route}: one batched deduplicated call vs one call per completion",
                        "masks/s",
                        masks / batched[route],
                        masks / one_by_one,
                        higher_is_better=True,
                        note=f"8 completions x {frames} frames; {len(keyframes)} keyframes, "
                        f"{unique} unique; {differ} of {pixels:,} mask pixels "
                        "differ both ways (rounding of batched products)",
                    )
                )
            rows.append(
                row(
                    ctx,
                    f"system2/{case} service vs in process",
                    f"GRPO group, {case}, batched: through the service vs in process",
                    "masks/s",
                    masks / batched["service"],
                    masks / batched["in process"],
                    higher_is_better=True,
                    note="HTTP, JSON and RLE masks: the service's overhead",
                )
            )
    return rows


def bench_service_load(ctx: Context) -> list[Row]:
    """16 clients calling one replica back to back for 60 s (bench_service_load.py), with the
    service's default queue and timeouts: 2 workers (jobs run at once) vs 1 (the one-job lock
    the service had before). Each call: one boxed request on an 8-frame 640x360 clip (SAM2
    tracks it), every answer checked against the in-process masks."""
    from bench_long_video import make_clip
    from bench_service_load import run_load

    from omnir1.models.loading import load_models
    from omnir1.service.client import System2Client
    from omnir1.systems.system2 import KeyframeRequest, System2Request, collect_rle, run_system2

    seconds, clients = (6.0, 16) if ctx.quick else (60.0, 16)
    root = ctx.tmp / "served-load"
    root.mkdir(exist_ok=True)
    clip = make_clip(root / "clip.mp4", seconds=1, fps=8)
    request = System2Request("ball", (KeyframeRequest(2, "the red ball", ((107, 135, 197, 225),)),))
    sink, expected = collect_rle()
    run_system2(load_models(ctx.models(), system1=False), clip, [request], sink)
    want = [expected["ball"][t] for t in range(len(expected["ball"]))]
    body = System2Client("http://unused", data_root=root).segment_body(clip, [request], 1.0)

    def check(answer: dict) -> bool:
        return answer["results"][0]["masks"] == want

    got = {}
    for workers in (1, 2):
        log = ctx.tmp / f"service-load-{workers}.log"
        with system2_service(ctx.models(), root, log, "--workers", str(workers)) as url:
            got[workers] = run_load(url, TOKEN, body, check, clients=clients, seconds=seconds)
    one, two = got[1].summary(), got[2].summary()
    assert one["wrong"] == two["wrong"] == 0, (one, two)

    def note(s: dict) -> str:
        return (
            f"{s['correct']} correct in {seconds:g} s, {s['refused']} refused with 429 "
            f"(p95 {s['refused_p95_s'] * 1000:.0f} ms), {s['timed_out']} ended in 503/504 or "
            f"a client timeout, {s['wrong']} wrong"
        )

    def load_row(name, figure, unit, key, higher_is_better):
        return row(
            ctx,
            f"service_load/{name}",
            figure,
            unit,
            two[key],
            one[key],
            higher_is_better=higher_is_better,
            note=f"2 workers: {note(two)}; 1 worker: {note(one)}",
        )

    queue_timeout = 120.0  # the service's default --queue-timeout
    return [
        load_row(
            "answers", f"{clients} clients, 2 workers vs 1", "correct/s", "correct_per_s", True
        ),
        load_row("p50", "latency of an answer, p50, 2 workers vs 1", "s", "p50_s", False),
        load_row("p95", "latency of an answer, p95, 2 workers vs 1", "s", "p95_s", False),
        row(
            ctx,
            "service_load/refusal",
            "longest wait for a 429, 2 workers (before: callers waited out the timeout, "
            f"{queue_timeout:g} s, for a 503)",
            "s",
            two["refused_max_s"],
            higher_is_better=False,
            note=f"1 worker: {one['refused_max_s']:.3f} s",
        ),
    ]


# ---------------------------------------------------------------------------------------------
# 4. training


def small_params(folder: Path, changes: Callable[[dict], None]) -> Path:
    """params.yaml with tracking off and `changes` applied, written to FOLDER/params.yaml."""
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["tracking"]["enabled"] = False
    changes(params)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    return path


def bench_training(ctx: Context) -> list[Row]:
    """GRPO step time split into generation, System 2, reward and update (train.json's
    step_seconds) and peak memory of `omnir1 train`, from a short System-1 warm start (long
    enough that most completions parse, so System 2 is called; the grounder is not
    warm-started: it returns no boxes and SAM2 is skipped)."""
    from bench_infer import MEASURED_CLI

    work = ctx.tmp / "training"
    ws_steps, steps, group, tokens = (2, 1, 2, 16) if ctx.quick else (100, 3, 8, 256)

    def changes(p: dict) -> None:
        p["warm_start"]["grounder"]["steps"] = 0
        p["warm_start"]["system1"]["steps"] = ws_steps
        p["train"].update(num_generations=group, max_completion_length=tokens, save_steps=1000)

    params = small_params(work, changes)
    data, models = ctx.revos(), ctx.models()
    shards = work / "shards"
    common = ["--data", str(data), "--format", "revos", "--params", str(params)]
    pre = ["--format", "revos", str(data), "--out", str(shards), "--params", str(params)]
    cli("data", "preprocess", *pre, "--quiet")  # the shards training reads, as in dvc.yaml
    cli("warm-start", *common, "--models", str(models), "--out", str(work / "warm"))
    cmd = [sys.executable, "-c", MEASURED_CLI, "train", *common, "--shards", str(shards)]
    cmd += ["--models", str(work / "warm"), "--out", str(work / "run"), "--max-steps", str(steps)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"omnir1 train failed:\n{done.stderr[-3000:]}")
    peak_mb = int(done.stderr.strip().splitlines()[-1]) / 1024
    summary = json.loads((work / "run" / "train.json").read_text())
    split = summary["step_seconds"]
    step = sum(split.values())
    fmt = summary["last"].get("rewards/format/mean", 0.0)
    setting = f"G={group}, {tokens} tokens, mean of {steps} steps"
    rows = [
        row(
            ctx,
            f"training/{part.removesuffix('_s')}",
            f"GRPO step: {part.removesuffix('_s')} ({setting})",
            "s/step",
            seconds,
            higher_is_better=False,
            note=f"{seconds / step:.0%} of the step",
        )
        for part, seconds in split.items()
    ]
    rows.append(
        row(
            ctx,
            "training/step",
            f"GRPO step, all four parts ({setting})",
            "s/step",
            step,
            higher_is_better=False,
            note=f"format reward {fmt:.2f} at the last step (share of completions that parse)",
        )
    )
    rows.append(
        row(
            ctx,
            "training/peak memory",
            "peak resident memory of the `omnir1 train` process (ru_maxrss)",
            "MB",
            peak_mb,
            higher_is_better=False,
        )
    )
    return rows


def bench_warm_start(ctx: Context) -> list[Row]:
    """One supervised warm-start step (forward and backward) of System 1 (batch 8 of the
    embedded default's video + audio prompts) and of the grounder (batch 16 of its image
    prompts): `answer_loss` (logits on the answer tokens only) vs the thinker's own
    `model(**batch).loss` (logits on every position), checked equal first."""
    import random

    import torch

    from omnir1.config import load_params
    from omnir1.data.shards import clips_for
    from omnir1.models.loading import freeze_towers, load_models
    from omnir1.rl.engine import context_from_sample
    from omnir1.rl.train import trainable_samples
    from omnir1.rl.warmstart import (
        answer_loss,
        collate,
        grounder_examples,
        object_descriptions,
        system1_examples,
    )
    from omnir1.systems.grounding import Grounder
    from omnir1.systems.reasoning import GlobalReasoner

    params = load_params(ROOT / "params.yaml")
    data = ctx.revos()
    models = load_models(ctx.models(), system2=False)
    model, processor = models.system1, models.system1_processor
    freeze_towers(model)
    s1 = params.system1
    samples = trainable_samples("revos", data)
    clips = clips_for(samples, s1)
    targets = [context_from_sample(s, s1, c).target for s, c in zip(samples, clips, strict=True)]
    descriptions = object_descriptions(data)
    reasoner = GlobalReasoner(model, processor, s1)
    grounder = Grounder(model, processor, params.grounder)
    pad = processor.tokenizer.pad_token_id
    sizes = (2, 1) if ctx.quick else (8, 3)
    parts = {
        "system 1": system1_examples(reasoner, samples, clips, targets, descriptions),
        "grounder": grounder_examples(grounder, samples, descriptions),
    }
    rows = []
    for part, examples in parts.items():
        batch_size = sizes[0] * (2 if part == "grounder" else 1)
        rng = random.Random(0)
        batch = collate([rng.choice(examples) for _ in range(batch_size)], pad)
        own, ours = model(**batch).loss, answer_loss(model, batch)
        if not torch.allclose(own, ours, atol=1e-5):
            raise RuntimeError(f"{part}: answer_loss {float(ours)} != the model's {float(own)}")

        def step(answer_only: bool, batch=batch) -> None:
            model.zero_grad(set_to_none=True)
            loss = answer_loss(model, batch) if answer_only else model(**batch).loss
            loss.backward()

        baseline = best_of(lambda: step(False), sizes[1])
        value = best_of(lambda: step(True), sizes[1])
        width = batch["input_ids"].shape[1]
        answer = int((batch["labels"] != -100).sum()) / batch_size
        rows.append(
            row(
                ctx,
                f"warm_start/{part}",
                f"{part} warm-start step, batch {batch_size} (answer-only logits vs all)",
                "s/step",
                value,
                baseline,
                higher_is_better=False,
                note=f"{width} tokens a row, {answer:.0f} of them answer",
            )
        )
    return rows


def bench_encode_once(ctx: Context) -> list[Row]:
    """A GRPO group's log-prob forward (G = 8 rows of one embedded-default prompt, video and
    audio, plus 32 completion tokens each) and its generation (8 new tokens, greedy), with
    each prompt's media through the encoders once (omnir1.rl.encode_once) vs once per row,
    checked to give the same log-probs and tokens. The tiny thinker's towers are small next to
    its language model, so the ratio here understates the release size's (24 frames, 12 s of
    audio: 1,740 of a row's ~2,900 tokens come from the encoders)."""
    import torch

    from omnir1.config import load_params
    from omnir1.models.loading import load_models
    from omnir1.rl.encode_once import encode_each_input_once
    from omnir1.rl.inputs import LazyPrompts, SampleViews
    from omnir1.rl.train import trainable_samples
    from omnir1.rl.trainer import media_fields
    from omnir1.systems.reasoning import GlobalReasoner

    s1 = load_params(ROOT / "params.yaml").system1
    sample = trainable_samples("revos", ctx.revos())[0]
    repeats = 1 if ctx.quick else 3
    figures: dict[bool, dict[str, float]] = {}
    outputs: dict[bool, tuple] = {}
    for once in (False, True):
        models = load_models(ctx.models(), system2=False)
        thinker = models.system1.eval()
        if once:
            encode_each_input_once(thinker)
        reasoner = GlobalReasoner(thinker, models.system1_processor, s1)
        prompt = LazyPrompts(reasoner, SampleViews([sample], s1), [sample.expression])
        fields = media_fields(prompt, [0] * 8)
        ids = prompt[0]["input_ids"].repeat(8, 1)
        completion = torch.randint(10, 200, (8, 32), generator=torch.Generator().manual_seed(0))
        full = torch.cat([ids, completion], dim=1)
        with torch.no_grad():

            def forward(full=full, fields=fields, thinker=thinker):
                return thinker(input_ids=full, attention_mask=torch.ones_like(full), **fields)

            def generate(ids=ids, fields=fields, thinker=thinker):
                return thinker.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=8,
                    do_sample=False,
                    **fields,
                )

            outputs[once] = (forward().logits.log_softmax(-1), generate())
            figures[once] = {
                "forward": best_of(forward, repeats),
                "generate": best_of(generate, repeats),
            }
    diff = (outputs[True][0] - outputs[False][0]).abs().max().item()
    assert diff <= 1e-5 and torch.equal(outputs[True][1], outputs[False][1]), diff
    return [
        row(
            ctx,
            f"encode_once/{part}",
            f"GRPO group of 8, {part}: each prompt encoded once vs once per row",
            "s",
            figures[True][part],
            figures[False][part],
            higher_is_better=False,
            note=f"{ids.shape[1]} prompt tokens per row; largest log-prob difference {diff:.1e}",
        )
        for part in ("forward", "generate")
    ]


def bench_study(ctx: Context) -> list[Row]:
    """`omnir1 study` over two seeds: every seed in this process with torch's threads on every
    core (--jobs 1, the baseline) vs each seed in its own one-thread process (--jobs 2), the
    same params and data; the grounder's warm start, done once either way, is left out of the
    seeds' figure."""
    work = ctx.tmp / "study"
    ws_steps, steps, group, tokens = (2, 1, 2, 16) if ctx.quick else (100, 10, 8, 256)

    def changes(p: dict) -> None:
        p["warm_start"]["grounder"]["steps"] = ws_steps
        p["warm_start"]["system1"]["steps"] = ws_steps
        p["rewards"]["video_accuracy"]["a_g"] = 0.0  # random SAM2 masks: logged every 1000th group
        p["rewards"]["sam2_every"] = 1000
        p["train"].update(
            num_generations=group, max_steps=steps, max_completion_length=tokens, save_steps=1000
        )
        if ctx.quick:  # random models write to their limit: keep the assessments short
            p["system1"]["max_new_tokens"] = p["grounder"]["max_new_tokens"] = tokens

    params = small_params(work, changes)
    common = ["study", "--data", str(ctx.revos()), "--format", "revos", "--params", str(params)]
    common += ["--seeds", "0", "1", "--heldout-limit", "8", "--per-sample", "2"]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    seconds = {}
    for jobs in (1, 2):
        out = work / f"jobs{jobs}"
        cmd = [sys.executable, "-m", "omnir1.cli", *common, "--out", str(out), "--jobs", str(jobs)]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode:
            raise RuntimeError(f"omnir1 study --jobs {jobs} failed:\n{done.stderr[-3000:]}")
        total = time.perf_counter() - start
        spent = json.loads((out / "study.json").read_text())["seconds"]
        seeds = spent.get("seeds_in_processes") or sum(
            spent.get(k, 0.0) for k in ("system1_warm_start", "assess", "grpo")
        )
        seconds[jobs] = (seeds, total)
    cores = os.cpu_count()
    setting = f"2 seeds, {ws_steps} warm-start steps, {steps} GRPO steps of G={group}"
    return [
        row(
            ctx,
            "study/seeds",
            f"the seeds of a study, in processes (--jobs 2) vs one process ({setting})",
            "s",
            seconds[2][0],
            seconds[1][0],
            higher_is_better=False,
            note=f"{cores} cores; one process uses torch's {cores} threads",
        ),
        row(
            ctx,
            "study/total",
            f"the whole study, --jobs 2 vs --jobs 1 ({setting})",
            "s",
            seconds[2][1],
            seconds[1][1],
            higher_is_better=False,
            note="grounder warm start, baselines and the report included",
        ),
    ]


# ---------------------------------------------------------------------------------------------
# 5. pipeline overhead


def bench_dvc(ctx: Context) -> list[Row]:
    """`dvc repro` with nothing to do vs the first run, on a copy of the project whose dvc.yaml
    keeps the data, validate, preprocess and models stages (ReVOS only, 6 synthetic videos):
    the later stages would take minutes to run once, and the no-op cost is per stage."""
    import yaml

    project = ctx.tmp / "dvc_project"
    project.mkdir()
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
    keep = ("data", "validate", "preprocess", "models")
    spec["stages"] = {k: v for k, v in spec["stages"].items() if k in keep}
    (project / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    videos = 4 if ctx.quick else 6

    def changes(p: dict) -> None:
        p["data"]["formats"] = ["revos"]
        p["data"]["synth"]["videos"] = videos

    small_params(project, changes)
    shutil.copytree(
        ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    def dvc(*args: str) -> tuple[float, str]:
        start = time.perf_counter()
        done = subprocess.run(["dvc", *args], cwd=project, env=env, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"dvc {' '.join(args)} failed:\n{done.stdout[-2000:]}")
        return time.perf_counter() - start, done.stdout

    dvc("init", "--no-scm", "-q")
    first, _ = dvc("repro")
    noop, out = min(dvc("repro") for _ in range(1 if ctx.quick else 2))
    assert "Running stage" not in out, out  # nothing ran
    return [
        row(
            ctx,
            "dvc/repro no-op",
            f"`dvc repro` with nothing to do ({len(keep)} stages, ReVOS {videos} videos) "
            "vs the first run doing the work",
            "s",
            noop,
            first,
            higher_is_better=False,
        )
    ]


def bench_compile(ctx: Context) -> list[Row]:
    """`omnir1 pipeline compile`: both Kubeflow pipelines to YAML, a fresh process."""
    runs = 1 if ctx.quick else 2
    seconds = min(
        cli("pipeline", "compile", "--out", str(ctx.tmp / f"compiled{i}")) for i in range(runs)
    )
    return [
        row(
            ctx,
            "compile/pipelines",
            "`omnir1 pipeline compile` (training + evaluation pipelines), whole command",
            "s",
            seconds,
            higher_is_better=False,
        )
    ]


def bench_preprocess(ctx: Context) -> list[Row]:
    """`omnir1 data preprocess` on 1x, 2x and 4x the videos (`--part` of one synthetic ReVOS
    set, 10 s 320x180 at 6 fps each), params.yaml's workers: videos per second at each size vs
    at 1x, so that cost growth shows (ratio 1 = linear)."""
    from omnir1.data.synth import SynthConfig, synthesize

    base = 1 if ctx.quick else 2
    params = ROOT / "params.yaml"  # its preprocess workers and System-1 settings, read only
    data = ctx.tmp / "pre_revos"
    synthesize(SynthConfig(format="revos", videos=4 * base, seed=1), data, progress=False)
    seconds = {}
    for parts in (4, 2, 1):
        shards = ctx.tmp / f"shards_{parts}"
        part = ["--part", f"0/{parts}"] if parts > 1 else []
        args = ["--format", "revos", str(data), "--out", str(shards), "--quiet", *part]
        seconds[4 // parts] = cli("data", "preprocess", *args, "--params", str(params))
    rows = []
    for k, s in seconds.items():
        videos = k * base
        rows.append(
            row(
                ctx,
                f"preprocess/{k}x",
                f"`omnir1 data preprocess` of {videos} videos ({k}x): throughput vs 1x",
                "videos/s",
                videos / s,
                base / seconds[1],
                higher_is_better=True,
                note=f"{s:.2f} s for {videos} videos",
            )
        )
    return rows


def expression_index(source: Path, out: Path, expressions: int) -> Path:
    """A ReVOS-layout set of `expressions` training expressions over the videos of `source`
    (the same media files, annotations and masks; the train split's expressions repeated under
    new ids; those with a referent, which training takes): what a 10k-expression index over a
    few shared files looks like to a loader."""
    from omnir1.rl.train import trainable_samples

    trainable = {(s.video_id, s.expression_id) for s in trainable_samples("revos", source)}
    out.mkdir(parents=True)
    for item in source.iterdir():  # the media and masks are shared, not copied
        if item.name != "meta_expressions_train_.json":
            (out / item.name).symlink_to(item)
    meta = json.loads((source / "meta_expressions_train_.json").read_text())
    pool = [
        (vid, exp)
        for vid, v in meta["videos"].items()
        for eid, exp in v["expressions"].items()
        if (vid, eid) in trainable
    ]
    for v in meta["videos"].values():
        v["expressions"] = {}
    for k in range(expressions):
        vid, exp = pool[k % len(pool)]
        meta["videos"][vid]["expressions"][f"x{k}"] = exp
    (out / "meta_expressions_train_.json").write_text(json.dumps(meta))
    return out


def bench_startup(ctx: Context) -> list[Row]:
    """Peak resident memory and time to the first GRPO step of `omnir1 train --max-steps 1`
    (a fresh process: models loaded, inputs prepared, one step of G=2) for 100, 1,000 and
    10,000 training expressions over the same 6 videos' shards: flat in the number of
    expressions, as inputs are built per step (omnir1.rl.inputs). Ratios are against 100."""
    from bench_infer import MEASURED_CLI

    work = ctx.tmp / "startup"
    sizes = (100, 1000) if ctx.quick else (100, 1_000, 10_000)

    def changes(p: dict) -> None:
        p["train"].update(num_generations=2, max_completion_length=8, save_steps=1000)

    params = small_params(work, changes)
    data, models = ctx.revos(), ctx.models()
    shards = work / "shards"
    pre = ["--format", "revos", str(data), "--out", str(shards), "--params", str(params)]
    cli("data", "preprocess", *pre, "--quiet")
    figures = {}
    for n in sizes:
        index = expression_index(data, work / f"set_{n}", n)
        cmd = [sys.executable, "-c", MEASURED_CLI, "train", "--data", str(index)]
        cmd += ["--format", "revos", "--params", str(params), "--shards", str(shards)]
        cmd += ["--models", str(models), "--out", str(work / f"run_{n}"), "--max-steps", "1"]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode:
            raise RuntimeError(f"omnir1 train failed:\n{done.stderr[-3000:]}")
        samples = json.loads((work / f"run_{n}" / "train.json").read_text())["samples"]
        if samples != n:
            raise RuntimeError(f"trained on {samples} expressions, expected {n}")
        figures[n] = (int(done.stderr.strip().splitlines()[-1]) / 1024, seconds)
    base_mb, base_s = figures[sizes[0]]
    rows = []
    for n, (mb, seconds) in figures.items():
        rows.append(
            row(
                ctx,
                f"startup/{n} memory",
                f"`omnir1 train --max-steps 1` on {n:,} expressions: peak RSS (vs {sizes[0]})",
                "MB",
                mb,
                base_mb,
                higher_is_better=False,
            )
        )
        rows.append(
            row(
                ctx,
                f"startup/{n} first step",
                f"... time to the end of the first GRPO step, whole process (vs {sizes[0]})",
                "s",
                seconds,
                base_s,
                higher_is_better=False,
            )
        )
    return rows


def expressions_of(frames: int, count: int) -> list:
    """`count` expressions of make_clip's video, each its own System-2 request with given boxes
    of the ball on one or two keyframes (as System 1 and the grounder would give them)."""
    from omnir1.systems.system2 import KeyframeRequest, System2Request

    def box(f: int, pad: int) -> tuple[float, float, float, float]:
        cx = 150 + f  # make_clip's ball: centre (150 + i, 180), radius 45
        return (cx - 45 - pad, 135 - pad, cx + 45 + pad, 225 + pad)

    requests = []
    for e in range(count):
        first = (e * frames) // (2 * count)
        keyframes = [KeyframeRequest(first, "the red ball", (box(first, 4 * e),))]
        if e % 2:
            last = frames - 1 - first
            keyframes.append(KeyframeRequest(last, "the red ball", (box(last, 4 * e),)))
        requests.append(System2Request(str(e), tuple(keyframes)))
    return requests


@contextlib.contextmanager
def counting_encoder(predictor) -> Iterator[list[int]]:
    """Counts the frames through SAM2's image encoder."""
    counted = [0]
    forward_image = predictor.forward_image

    def counting(image):
        counted[0] += 1
        return forward_image(image)

    predictor.forward_image = counting
    try:
        yield counted
    finally:
        del predictor.forward_image


def interleaved(fns: list[Callable[[], Any]], repeats: int) -> list[float]:
    """Fewest seconds of each function over `repeats` rounds that run each once in turn, so
    that other work on the machine weighs on all of them alike."""
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def bench_sam2_reuse(ctx: Context) -> list[Row]:
    """SAM2 without repeated work. Four expressions of one video, one System-2 call each (as
    the service gets them, or `omnir1 predict` for the trained and then the untrained policy,
    or a retried call): image features kept across the calls (a fresh FeatureStore per
    repetition: the first call computes, the others reuse) vs computed in every call; the
    masks checked the same bits (every RLE compared) before timing. At the embedded SAM2
    size (64 px) and at 256 px, where the image encoder weighs more (as hiera-l's does at
    1024 px). And SAM2Frames' preparation of a clip at 1024 px: resized by threads while
    decoding vs in the decoding thread."""
    from bench_long_video import make_clip

    from omnir1.models.loading import load_models
    from omnir1.systems.segmentation import FeatureStore, SAM2Frames
    from omnir1.systems.system2 import collect_rle, run_system2

    seconds, fps, repeats = (1, 6, 1) if ctx.quick else (4, 6, 2)
    frames = seconds * fps
    clip = make_clip(ctx.tmp / "reuse.mp4", seconds=seconds, fps=fps)  # 640x360, one ball
    requests = expressions_of(frames, 4)
    sizes = {"64 px": ctx.models()}
    if not ctx.quick:
        sizes["256 px"] = ctx.tmp / "models-256"
        cli("models", "init-tiny", "--out", str(sizes["256 px"]), "--sam2-size", "256")
    rows = []
    for size, folder in sizes.items():
        models = load_models(folder, system1=False)

        def each_expression(features, models=models) -> list[dict]:
            outs = []
            for request in requests:
                sink, out = collect_rle()
                run_system2(models, clip, [request], sink, features=features)
                outs.append(out)
            return outs

        with counting_encoder(models.sam2) as without:
            reference = each_expression(None)
        with counting_encoder(models.sam2) as with_store:
            assert each_expression(FeatureStore(2**30)) == reference  # the same bits
        recomputed, reused = interleaved(
            [lambda: each_expression(None), lambda: each_expression(FeatureStore(2**30))],
            repeats,
        )
        rows.append(
            row(
                ctx,
                f"sam2_reuse/expressions {size}",
                f"4 expressions of one video, a System-2 call each, SAM2 at {size}: image "
                "features kept across calls vs computed in each call",
                "s/video",
                reused,
                recomputed,
                higher_is_better=False,
                note=f"{frames} frames, 640x360; {with_store[0]} frames through the image "
                f"encoder vs {without[0]}; masks the same bits",
            )
        )
    resize_size, resize_clip = 1024, ctx.tmp / "reuse-prep.mp4"
    make_clip(resize_clip, seconds=seconds * 2, fps=fps)

    def prepare(workers: int | None) -> None:
        SAM2Frames(resize_clip, resize_size, workers=workers).close()

    threaded = SAM2Frames(resize_clip, resize_size)
    serial = SAM2Frames(resize_clip, resize_size, workers=0)
    try:
        assert threaded.digests == serial.digests  # the same frames
        workers = min(4, os.cpu_count() or 1)
    finally:
        threaded.close()
        serial.close()
    rows.append(
        row(
            ctx,
            "sam2_reuse/frames prep",
            f"SAM2Frames: decode and resize to {resize_size} px, {workers} resizing threads vs "
            "resizing in the decoding thread",
            "s/clip",
            *interleaved([lambda: prepare(None), lambda: prepare(0)], repeats + 1),
            higher_is_better=False,
            note=f"{2 * frames} frames 640x360 into the uint8 memmap, with each frame's "
            "digest; the same bytes both ways",
        )
    )
    return rows


BENCHMARKS: dict[str, Callable[[Context], list[Row]]] = {
    "metrics": bench_metrics,
    "evaluate": bench_evaluate,
    "media": bench_media,
    "system2": bench_system2,
    "service_load": bench_service_load,
    "training": bench_training,
    "startup": bench_startup,
    "warm_start": bench_warm_start,
    "encode_once": bench_encode_once,
    "study": bench_study,
    "dvc": bench_dvc,
    "compile": bench_compile,
    "preprocess": bench_preprocess,
    "sam2_reuse": bench_sam2_reuse,
}


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def table(rows: list[Row]) -> str:
    lines = [f"{'benchmark':34} {'value':>10} {'baseline':>10} {'ratio':>7}  unit"]
    for r in rows:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        lines.append(
            f"{r['name']:34} {fmt(r['value']):>10} {fmt(r['baseline']):>10} {ratio:>7}  {r['unit']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from omnir1.fsutil import write_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke sizes (seconds), for tests")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), metavar="NAME")
    parser.add_argument("--out", default="reports/bench.json")
    args = parser.parse_args(argv)
    names = args.only or list(BENCHMARKS)
    os.environ.setdefault("TQDM_DISABLE", "1")  # SAM2's and the trainer's progress bars
    start = time.perf_counter()
    rows: list[Row] = []
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="omnir1-bench-") as tmp:
        ctx = Context(quick=args.quick, tmp=Path(tmp))
        for name in names:
            t0 = time.perf_counter()
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            rows += BENCHMARKS[name](ctx)
            seconds[name] = time.perf_counter() - t0
            print(f"[bench] {name}: {seconds[name]:.1f} s", file=sys.stderr, flush=True)
    report = {
        "date": date.today().isoformat(),
        "quick": args.quick,
        "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")},
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "seconds": {"total": time.perf_counter() - start, **seconds},
        "rows": rows,
    }
    write_json(args.out, report)
    print(table(rows))
    print(f"\n{len(rows)} figures in {report['seconds']['total']:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
