"""Does training learn on the embedded default? The before/after experiment of GRPO.

    omnir1 study --data DIR --format revos --out DIR [--seeds 0 1 2] [--params params.yaml]
        [--jobs 2]

System 2 is the environment: one grounder, warm-started once on the training split (from the
tiny models of the first seed) and frozen, with SAM2. Then, for every seed: tiny models of that
seed; System 1 warm-started on ground-truth answers; assessed on the held-out split (before);
GRPO against System 2 (`omnir1 train`'s code path, params.yaml's `train` section); assessed
again (after). The ignore-the-video baseline is assessed once. Everything is trained on the
training split only; the held-out videos are never seen before assessment.

Writes OUT/study.json (every figure), OUT/study.md (the table), OUT/reward_curves.png and, per
seed, OUT/seed_N/{base,warm,grpo}.

A study takes tens of minutes, so each finished stage (the grounder; every seed's System 1
warm start with its assessment before GRPO; the blind baselines with System 2 alone; every
seed's GRPO with its assessment after) is saved with a fingerprint of what it depends on
(params, the data set's digest, held-out settings, package version); run again with the same
--out, a stopped study goes on from the first unfinished stage and a finished one only rewrites
its report. Anything else in the fingerprint changed: the stage runs again. Only the GRPO stages
depend on GRPO's own settings (`before_grpo`), so a study run again with another GRPO recipe
trains GRPO and assesses after it, and nothing else: ~15 of the red study's 45-50 minutes
(research/LOG.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from omnir1.errors import OmniR1Error
from omnir1.fsutil import atomic_path, read_json, write_json

if TYPE_CHECKING:
    from omnir1.data.records import Sample

# the study's figures (Assessment fields), in the order its tables give them, and their labels
NAMES = {
    "reward": "mean total reward",
    "keyframe_hit_rate": "keyframe hit rate",
    "keyframe_hits_per_answer": "keyframe hits per answer",
    "box_iou": "box IoU",
    "answers_with_hit": "answers with a visible keyframe",
    "box_iou_on_hits": "box IoU of those answers",
    "format_rate": "well-formed answers",
}
HEADLINE = tuple(NAMES)


def _assess_folder(params, models_dir: Path, samples, clips, contexts, *, per_sample: int, seed):
    from omnir1.experimental.assess import assess, policy_completions
    from omnir1.models.loading import load_models
    from omnir1.systems.reasoning import GlobalReasoner

    models = load_models(models_dir)
    engine = _engine(params, models)
    reasoner = GlobalReasoner(models.system1, models.system1_processor, params.system1)
    texts = policy_completions(
        reasoner, clips, [s.expression for s in samples], per_sample=per_sample, seed=seed
    )
    return assess(engine, contexts, texts), texts[0][0]


def _engine(params, models):
    """The training recipe's rewards; SAM2 runs only where its J weighs (a_g > 0)."""
    from omnir1.rl.engine import engine_from_params

    return engine_from_params(params, models, segment_masks=params.rewards.video_accuracy.a_g != 0)


def fingerprint(params, data_digest: str, **settings) -> str:
    """What a study's results depend on: the merged params, the data set
    (`omnir1.rl.checkpoints.data_digest`), the assessment settings and the package version."""
    from omnir1 import __version__

    blob = json.dumps(
        [params.model_dump(mode="json"), data_digest, settings, __version__], sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()


# the training section's own GRPO settings: everything in it but the seed and the expressions
# chosen (which the warm starts' assessment before GRPO also reads)
TRAIN_KEPT = ("seed", "kinds", "words")


def before_grpo(params):
    """`params` without what only GRPO and its logging read (`train` but TRAIN_KEPT, `tracking`,
    and the sections a study never reads): what the grounder, a seed's System 1 warm start and
    its assessment before GRPO depend on, and so their fingerprints."""
    from omnir1.experimental.params import StudyParams, StudyTrainParams

    defaults = StudyParams()
    shared = params.model_copy(deep=True)
    shared.train = StudyTrainParams(**{k: getattr(params.train, k) for k in TRAIN_KEPT})
    for section in ("tracking", "evaluate", "probe", "registry", "remote"):
        setattr(shared, section, getattr(defaults, section))
    return shared


def grounder_only(params):
    """`params` with a warm start that trains the grounder alone: the study's environment, which
    every seed shares, while each seed warm-starts its own System 1."""
    shared = params.model_copy(deep=True)
    shared.warm_start.system1.steps = 0
    shared.warm_start.system1_stages = []  # a stage's own `steps` would train System 1
    return shared


def _saved_stage(
    path: Path, key: str, compute: Callable[[], dict], log, reused: list[str], name: str = ""
) -> dict:
    """`compute()`'s result, saved at `path` under `key`; an earlier run's result when `path`
    holds one with the same key (its `name`, by default its folder's, is then added to
    `reused`)."""
    if path.is_file():
        saved = read_json(path)
        if saved.get("fingerprint") == key:
            log(f"reusing {path} (the same params, data and settings)")
            reused.append(name or path.parent.name)
            return saved["result"]
        log(f"{path} is from other params, data or settings: running it again")
    result = compute()
    write_json(path, {"fingerprint": key, "result": result})
    return result


def blind_baselines(params, engine, data: Path, heldout, train_samples, train_targets):
    """The two baselines that never look at the video (ignore it; read the words), assessed on
    the held-out (samples, clips, contexts) by `engine`'s System 2: (Assessment, Assessment)."""
    from omnir1.experimental.assess import assess, ignore_video_completions, read_words_completions
    from omnir1.experimental.warmstart import object_words

    samples, _, contexts = heldout
    expressions = [s.expression for s in samples]
    moments = params.system1.moments
    times = [ctx.frame_times for ctx in contexts]
    ignore = ignore_video_completions(
        train_targets, expressions, moments=moments, frame_times=times
    )
    read_words = read_words_completions(
        train_targets,
        [s.expression for s in train_samples],
        expressions,
        moments=moments,
        object_words=object_words(data),
        frame_times=times,
    )
    return assess(engine, contexts, ignore), assess(engine, contexts, read_words)


def system2_alone(params, models, heldout_data: Path, heldout) -> dict:
    """`omnir1.experimental.assess.grounder_on_truth` on the held-out (samples, clips,
    contexts): how well the frozen grounder boxes each target given its true description (a
    synthetic set's object descriptions; the expression where the set has none). Boxes only:
    SAM2 would track every visible frame's request through the video for a figure the check
    does not report."""
    from omnir1.experimental.assess import grounder_on_truth
    from omnir1.rl.engine import engine_from_params
    from omnir1.rl.warmstart import object_descriptions, target_description

    samples, _, contexts = heldout
    known = object_descriptions(heldout_data)
    engine = engine_from_params(params, models, segment_masks=False)
    return grounder_on_truth(engine, contexts, [target_description(s, known) for s in samples])


# synth_summary.json fields that say how a synthetic set was drawn (not its seed or size)
DRAWING = (
    "format",
    "fps",
    "duration_s",
    "width",
    "height",
    "sample_rate",
    "layout",
    "background",
    "object_scale",
    "visit_fraction",
)


def check_drawn_alike(data: Path, heldout: Path) -> None:
    """A held-out set from another folder must be drawn like the training set (synthetic sets
    say how in synth_summary.json), else the study would measure another task than it trains."""
    from omnir1.errors import DataError

    train_file, heldout_file = (folder / "synth_summary.json" for folder in (data, heldout))
    if not (train_file.is_file() and heldout_file.is_file()):
        return
    train, held = read_json(train_file), read_json(heldout_file)
    for key in DRAWING:
        if train.get(key) != held.get(key):
            raise DataError(
                heldout_file,
                f"{key} is {held.get(key)!r} where the training set's ({train_file}) is "
                f"{train.get(key)!r}: a held-out set must be drawn like the training set",
                field=key,
            )


def _stage_done(path: Path, key: str) -> bool:
    """Whether `path` holds a stage saved under `key` (`_saved_stage`)."""
    return path.is_file() and read_json(path).get("fingerprint") == key


def _seeds_in_processes(params, *, data, fmt, out: Path, seeds, jobs: int, heldout, log) -> None:
    """Each of `seeds` in a worker process (omnir1.workers: JSON lines), `jobs` at a time, each
    with its share of the cores (small models compute faster in one thread per process than in
    several threads of one); a seed's output goes to OUT/seed_N/study.log. The params travel as
    JSON (OUT/study_params.json), so every process computes the same fingerprints."""
    from omnir1.workers import run_pool

    split, limit, per_sample, heldout_data = heldout
    params_file = out / "study_params.json"
    write_json(params_file, params.model_dump(mode="json", by_alias=True))
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    setup = {
        "params": str(params_file),
        "data": str(data),
        "format": fmt,
        "out": str(out),
        "heldout": [split, limit, per_sample, None if heldout_data is None else str(heldout_data)],
    }
    for seed in seeds:
        log(
            f"seed {seed}: in a process of its own ({threads} threads; {out}/seed_{seed}/study.log)"
        )
    for done in run_pool(
        "omnir1.experimental.study",
        [{"seed": seed} for seed in seeds],
        workers=jobs,
        setup=setup,
        env=env,
        describe=lambda job: f"seed {job['seed']} (log {out}/seed_{job['seed']}/study.log)",
    ):
        log(f"seed {done['seed']}: process finished")


def _seed_worker(setup: dict, job: dict) -> dict:
    """A worker's job: one seed's stages (`run_study(seeds_only=True)`), logged to its folder."""
    import contextlib

    from omnir1.experimental.params import StudyParams

    seed, out = job["seed"], Path(setup["out"])
    params = StudyParams.model_validate(read_json(Path(setup["params"])))
    folder = out / f"seed_{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    log_file = folder / "study.log"
    with (
        log_file.open("w", encoding="utf-8") as sink,
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(sink),
    ):
        try:
            _run_seed(params, setup, seed, out)
        except Exception as exc:  # the parent names the seed and its log
            import traceback

            traceback.print_exc()
            raise OmniR1Error(
                f"study seed {seed} failed (log {log_file}): {type(exc).__name__}: {exc}"
            ) from None
    return {"seed": seed}


def _run_seed(params, setup: dict, seed: int, out: Path) -> None:
    """One seed's stages, as the parent's `run_study` would run them."""
    split, limit, per_sample, heldout_data = setup["heldout"]
    run_study(
        params,
        data=setup["data"],
        fmt=setup["format"],
        out=out,
        seeds=[seed],
        heldout_split=split,
        heldout_limit=limit,
        heldout_data=heldout_data,
        per_sample=per_sample,
        seeds_only=True,
        log=lambda line: print(line, flush=True),
    )


def _split_inputs(
    params,
    fmt: str,
    data: Path,
    split: str,
    limit: int | None = None,
    keep: Callable[[Sample], bool] | None = None,
):
    """(samples, System 1's clips, contexts) of a split's first `limit` trainable expressions
    that `keep` accepts; clips are decoded only for those."""
    from omnir1.data.shards import clips_for
    from omnir1.experimental.warmstart import study_samples
    from omnir1.rl.engine import context_from_sample

    s1 = params.system1
    samples = study_samples(fmt, data, split, kinds=params.train.kinds, words=params.train.words)
    samples = [s for s in samples if keep is None or keep(s)][:limit]
    clips = clips_for(samples, s1)
    contexts = [context_from_sample(s, s1, c) for s, c in zip(samples, clips, strict=True)]
    return samples, clips, contexts


def run_study(
    params,
    *,
    data: str | Path,
    fmt: str,
    out: str | Path,
    seeds: Sequence[int] = (0, 1, 2),
    heldout_split: str = "valid",
    heldout_limit: int | None = None,
    heldout_data: str | Path | None = None,
    per_sample: int = 2,
    jobs: int = 1,
    seeds_only: bool = False,
    log=print,
) -> dict:
    """The study (module docstring). `heldout_data`: the held-out split comes from this data
    set (of the same format, drawn alike: e.g. more held-out videos than `data` holds) instead
    of `data`. `jobs` > 1: the seeds not yet done run in that many processes at a time
    (worker processes of this module, one seed each, each with its share of the cores), then this
    one writes the report. `seeds_only`: the grounder and the seeds' stages only, no baselines
    and no report (what those processes run)."""
    from omnir1.experimental.warmstart import run_study_warm_start
    from omnir1.models.loading import load_models
    from omnir1.models.tiny import init_tiny
    from omnir1.rl.checkpoints import data_digest
    from omnir1.rl.train import run_training

    if jobs < 1:
        from omnir1.errors import ConfigError

        raise ConfigError("--jobs", f"must be at least 1, got {jobs}")
    data, out = Path(data), Path(out)
    heldout_from = data
    if heldout_data is not None:
        heldout_from = Path(heldout_data)
        check_drawn_alike(data, heldout_from)
    out.mkdir(parents=True, exist_ok=True)
    sizes = params.models.tiny.sizes()
    start = time.perf_counter()
    timings: dict[str, float] = {}

    def timed(name: str, fn, *args, into: dict[str, float] | None = None, **kwargs):
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        elapsed = time.perf_counter() - t0
        for sink in (timings, into) if into is not None else (timings,):
            sink[name] = sink.get(name, 0.0) + elapsed
        return result

    heldout = timed(
        "load_heldout", _split_inputs, params, fmt, heldout_from, heldout_split, heldout_limit
    )
    train_samples, _, train_contexts = _split_inputs(params, fmt, data, "train")
    train_targets = [c.target for c in train_contexts]

    # the environment: one warm-started, frozen grounder (System 1 untouched here)
    env_base = out / "environment" / "base"
    if not (env_base / "models.json").is_file():
        init_tiny(env_base, seed=seeds[0], sizes=sizes)
    env = out / "environment" / "models"
    no_system1 = grounder_only(params)
    # the grounder depends neither on the held-out settings nor on GRPO's; the seeds' warm
    # starts (with their assessment before GRPO) on the first, their GRPO stages on both
    digest = data_digest(data)
    grounder_key = fingerprint(before_grpo(params), digest, fmt=fmt)
    settings = {"split": heldout_split, "limit": heldout_limit, "per_sample": per_sample}
    if heldout_data is not None:
        settings["heldout_data"] = data_digest(heldout_from)
    key = fingerprint(params, digest, fmt=fmt, **settings)
    warm_key = fingerprint(before_grpo(params), digest, fmt=fmt, **settings)
    reused: list[str] = []  # stages taken from an earlier run (their time is not in `seconds`)

    def warm_grounder() -> dict:
        log(f"grounder warm start ({params.warm_start.grounder.steps} steps)")
        return timed(
            "grounder_warm_start",
            run_study_warm_start,
            no_system1,
            data=data,
            fmt=fmt,
            models_dir=env_base,
            out=env,
        )

    grounder_summary = _saved_stage(
        out / "environment" / "stage.json", grounder_key, warm_grounder, log, reused
    )

    seed_key = {seed: f"{key}:seed{seed}" for seed in seeds}
    in_processes: list[str] = []  # seeds' stages written by worker processes
    if jobs > 1 and not seeds_only:
        todo = [s for s in seeds if not _stage_done(out / f"seed_{s}" / "stage.json", seed_key[s])]
        if len(todo) > 1:
            t0 = time.perf_counter()
            _seeds_in_processes(
                params,
                data=data,
                fmt=fmt,
                out=out,
                seeds=todo,
                jobs=jobs,
                heldout=(heldout_split, heldout_limit, per_sample, heldout_data),
                log=log,
            )
            timings["seeds_in_processes"] = time.perf_counter() - t0
            in_processes = [f"seed_{s}" for s in todo]
    results: dict = {"grounder": grounder_summary, "seeds": {}}
    if not seeds_only:

        def baselines() -> dict:
            """The blind baselines and System 2 alone: what the frozen grounder and the
            held-out split decide, so saved with the warm starts' fingerprint."""
            system2_models = load_models(env)
            engine = _engine(params, system2_models)
            ignore, read_words = timed(
                "baselines",
                blind_baselines,
                params,
                engine,
                data,
                heldout,
                train_samples,
                train_targets,
            )
            system2 = timed(
                "grounder_on_truth", system2_alone, params, system2_models, heldout_from, heldout
            )
            return {
                "grounder_on_truth": system2,
                "baseline_ignore_video": ignore.to_dict(),
                "baseline_read_words": read_words.to_dict(),
            }

        blind = _saved_stage(
            out / "baselines.json", warm_key, baselines, log, reused, name="baselines"
        )
        results = {
            "data": {
                "path": str(data),
                "format": fmt,
                "heldout_split": heldout_split,
                "heldout_path": str(heldout_from),
            },
            "heldout_samples": len(heldout[0]),
            "completions_per_sample": per_sample,
            "grounder": grounder_summary,
            **blind,
            "seeds": {},
        }
    no_grounder = params.model_copy(deep=True)
    no_grounder.warm_start.grounder.steps = 0

    def seeded_params(seed: int):
        seeded = no_grounder.model_copy(deep=True)
        seeded.train.seed = seed
        return seeded

    def warm_and_before(seed: int, folder: Path) -> dict:
        """The seed's System 1 warm start and its assessment on the held-out split."""
        seeded = seeded_params(seed)
        base = folder / "base"
        if not (base / "models.json").is_file():
            init_tiny(base, seed=seed, sizes=sizes)
        steps = sum(stage.finetune.steps for stage in params.warm_start.system1_curriculum())
        log(f"seed {seed}: System 1 warm start ({steps} steps)")
        seconds: dict[str, float] = {}
        warm = timed(
            "system1_warm_start",
            run_study_warm_start,
            seeded,
            data=data,
            fmt=fmt,
            models_dir=base,
            out=folder / "warm",
            grounder_from=env,
            into=seconds,
        )
        before, example = timed(
            "assess",
            _assess_folder,
            seeded,
            folder / "warm",
            *heldout,
            per_sample=per_sample,
            seed=1000 + seed,
            into=seconds,
        )
        return {
            "warm_start": warm,
            "before": before.to_dict(),
            "seconds": seconds,
            "example": example[:600],
        }

    def one_seed(seed: int, folder: Path) -> dict:
        seeded = seeded_params(seed)
        warm_stage = f"seed_{seed} warm start"
        warm = _saved_stage(
            folder / "warm_stage.json",
            f"{warm_key}:seed{seed}",
            lambda: warm_and_before(seed, folder),
            log,
            reused,
            name=warm_stage,
        )
        log(f"seed {seed}: before GRPO reward {warm['before']['reward']:.3f}; GRPO")
        seconds = dict(warm["seconds"])  # the warm start's and its assessment's, when they ran
        grpo_started = time.time()
        train = timed(
            "grpo",
            run_training,
            seeded,
            data=data,
            fmt=fmt,
            models_dir=folder / "warm",
            out=folder / "grpo",
            resume="auto",  # a study stopped mid-GRPO goes on from its last checkpoint
            samples=train_samples,  # of train.kinds, naming train.words
            into=seconds,
        )
        grpo_ended = time.time()
        after, after_example = timed(
            "assess",
            _assess_folder,
            seeded,
            folder / "grpo" / "model",
            *heldout,
            per_sample=per_sample,
            seed=1000 + seed,
            into=seconds,
        )
        log(f"seed {seed}: after GRPO reward {after.reward:.3f}")
        return {
            "warm_start": warm["warm_start"],
            "warm_start_reused": warm_stage in reused,
            "before": warm["before"],
            "after": after.to_dict(),
            "grpo": {k: v for k, v in train.items() if k != "history"},
            "grpo_window": [grpo_started, grpo_ended],  # wall clock: the seeds' GRPO span
            "history": train.get("history", []),
            "seconds": seconds,
            "examples": {"before": warm["example"], "after": after_example[:600]},
        }

    for seed in seeds:
        folder = out / f"seed_{seed}"
        results["seeds"][str(seed)] = _saved_stage(
            folder / "stage.json",
            seed_key[seed],
            lambda seed=seed, folder=folder: one_seed(seed, folder),
            log,
            reused,
        )
    if seeds_only:
        return results
    results["reused_stages"] = [stage for stage in reused if stage not in in_processes]
    for seed, run in results["seeds"].items():  # reused in the seed's own process
        stage = f"seed_{seed} warm start"
        if run.get("warm_start_reused") and f"seed_{seed}" in in_processes:
            results["reused_stages"].append(stage)
    results["seeds_in_processes"] = in_processes
    results["summary"] = summarize(results)
    results["seconds"] = {**timings, "total": time.perf_counter() - start}
    results["cpus"] = os.cpu_count()
    write_json(out / "study.json", results)
    with atomic_path(out / "study.md") as tmp:
        tmp.write_text(table(results), encoding="utf-8")
    plot_curves(results, out / "reward_curves.png")
    return results


def paired_intervals(
    runs: dict[str, dict], *, draws: int = 2000, level: float = 0.95, seed: int = 0
) -> dict[str, dict[str, list[float]]] | None:
    """{figure: {seed: [low, high], "mean": [low, high]}}: a `level` interval of each seed's
    change (after - before) of every HEADLINE_RATIOS figure, and of its mean over the seeds, by
    a paired bootstrap over the held-out samples. Each draw resamples the samples (the same
    ones for every seed, before and after) and recomputes the figures from their sums
    (Assessment.per_sample), so the interval covers both which expressions were held out and
    which answers were sampled. None when a run lacks the sums (a stage of an older version)."""
    import numpy as np

    from omnir1.experimental.assess import HEADLINE_RATIOS

    sides = {}
    for name, run in runs.items():
        before, after = run["before"].get("per_sample"), run["after"].get("per_sample")
        if not before or not after:
            return None
        sides[name] = tuple(
            {k: np.array([x[k] for x in side], dtype=float) for k in side[0]}
            for side in (before, after)
        )
    sizes = {len(side["completions"]) for pair in sides.values() for side in pair}
    if len(sizes) != 1:
        return None
    (n,) = sizes
    picks = np.random.default_rng(seed).integers(0, n, size=(draws, n))

    def figure(side: dict, num: str, den: str):
        top, bottom = side[num][picks].sum(axis=1), side[den][picks].sum(axis=1)
        return np.divide(top, bottom, out=np.zeros_like(top), where=bottom > 0)

    tail = (1 - level) / 2 * 100
    out = {}
    for key, (num, den) in HEADLINE_RATIOS.items():
        if any(k not in side for pair in sides.values() for side in pair for k in (num, den)):
            continue  # a sum an older version's stage lacks
        changes = {
            name: figure(after, num, den) - figure(before, num, den)
            for name, (before, after) in sides.items()
        }
        changes["mean"] = np.mean(list(changes.values()), axis=0)
        out[key] = {
            name: [float(v) for v in np.percentile(change, [tail, 100 - tail])]
            for name, change in changes.items()
        }
    return out


def summarize(results: dict) -> dict:
    """Mean and spread over seeds of every headline figure, before and after GRPO, and the
    intervals of `paired_intervals` where the seeds' assessments keep their per-sample sums."""
    summary = {}
    runs = results["seeds"].values()
    blind = (results["baseline_ignore_video"], results["baseline_read_words"])
    sides = [*blind, *(r[side] for r in runs for side in ("before", "after"))]
    for key in (k for k in HEADLINE if all(k in side for side in sides)):  # older stages lack some
        before = [r["before"][key] for r in runs]
        after = [r["after"][key] for r in runs]
        delta = [a - b for a, b in zip(after, before, strict=True)]
        summary[key] = {
            "before": statistics.fmean(before),
            "after": statistics.fmean(after),
            "delta": statistics.fmean(delta),
            "delta_min": min(delta),
            "improved_seeds": sum(d > 0 for d in delta),
            "baseline": results["baseline_ignore_video"][key],
            "baseline_read_words": results["baseline_read_words"][key],
        }
    intervals = paired_intervals(results["seeds"])
    for key, by_run in (intervals or {}).items():
        summary[key]["delta_interval"] = by_run.pop("mean")
        summary[key]["seed_intervals"] = by_run
        summary[key]["seeds_above_zero"] = sum(low > 0 for low, _ in by_run.values())
    return summary


def table(results: dict) -> str:
    seeds = list(results["seeds"])
    lines = [
        f"Held-out: {results['heldout_samples']} expressions "
        f"({results['data']['heldout_split']} split), "
        f"{results['completions_per_sample']} sampled answers each; seeds {', '.join(seeds)}.",
        "",
        "| metric | ignore the video | read the words | "
        + " | ".join(f"seed {s} before → after" for s in seeds)
        + " | mean Δ |",
        "|---|---|---|" + "---|" * len(seeds) + "---|",
    ]
    for key, label in NAMES.items():
        if key not in results["summary"]:
            continue
        cells = [
            f"{results['seeds'][s]['before'][key]:.3f} → {results['seeds'][s]['after'][key]:.3f}"
            for s in seeds
        ]
        mean_delta = results["summary"][key]["delta"]
        lines.append(
            f"| {label} | {results['baseline_ignore_video'][key]:.3f} | "
            f"{results['baseline_read_words'][key]:.3f} | "
            + " | ".join(cells)
            + f" | {mean_delta:+.3f} |"
        )
    return (
        "\n".join(
            [*lines, "", *system2_lines(results), *interval_lines(results), *time_lines(results)]
        )
        + "\n"
    )


def system2_lines(results: dict) -> list[str]:
    """What System 2 alone reaches (`system2_alone`), when the study measured it."""
    truth = results.get("grounder_on_truth")
    if not truth or not truth.get("frames"):
        return []
    quartiles = " / ".join(f"{v:.3f}" for v in truth["box_iou_by_area_quartile"])
    return [
        f"System 2 alone: the frozen grounder given each target's true description on every "
        f"frame where it is visible ({truth['frames']} frames of {truth['samples']} held-out "
        f"expressions) scores box IoU {truth['box_iou']:.3f} ({quartiles} by quartile of the "
        f"target's area; 0 on {truth['zero_share']:.0%} of the frames). A low figure caps box "
        "IoU whatever System 1 learns.",
        "",
    ]


def interval_lines(results: dict) -> list[str]:
    """The table of each seed's change with its interval (`paired_intervals`), when known."""
    summary = results["summary"]
    keys = [key for key in HEADLINE if "seed_intervals" in summary.get(key, {})]
    if not keys:
        return []
    seeds = list(results["seeds"])
    lines = [
        f"Change after GRPO with a 95 % interval (paired bootstrap over the "
        f"{results['heldout_samples']} held-out expressions and their sampled answers; an "
        "interval above 0: a gain that the choice of expressions and answers does not explain):",
        "",
        "| metric | " + " | ".join(f"seed {s}" for s in seeds) + " | mean over seeds |",
        "|---|" + "---|" * (len(seeds) + 1),
    ]

    def cell(delta: float, interval: list[float]) -> str:
        return f"{delta:+.3f} [{interval[0]:+.3f}, {interval[1]:+.3f}]"

    for key in keys:
        figures = summary[key]
        cells = [
            cell(
                results["seeds"][s]["after"][key] - results["seeds"][s]["before"][key],
                figures["seed_intervals"][s],
            )
            for s in seeds
        ]
        cells.append(cell(figures["delta"], figures["delta_interval"]))
        lines.append(f"| {NAMES[key]} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def time_lines(results: dict) -> list[str]:
    """Where the study's time went: in all, the grounder's warm start, and each seed's parts
    (a seed's own seconds, also when it ran in its own process)."""
    seconds = results.get("seconds", {})
    lines = []
    if "total" in seconds:
        grounder = seconds.get("grounder_warm_start")
        lines.append(
            f"Time: {seconds['total'] / 60:.1f} min in all"
            + (f" (grounder warm start {grounder / 60:.1f} min)" if grounder else "")
            + "; reused stages: "
            + (", ".join(results.get("reused_stages", [])) or "none")
            + "."
        )
    # GRPO's own span: its seeds side by side, from the first start to the last end (seeds
    # reused whole ran at other times)
    reused = set(results.get("reused_stages", []))
    windows = [
        run["grpo_window"]
        for seed, run in results["seeds"].items()
        if run.get("grpo_window") and f"seed_{seed}" not in reused
    ]
    if windows:
        span = max(end for _, end in windows) - min(start for start, _ in windows)
        lines.append(
            f"GRPO of {len(windows)} seed{'s' if len(windows) > 1 else ''}: {span / 60:.1f} min "
            f"from the first start to the last end, on {results.get('cpus', '?')} cores."
        )
    parts = {"system1_warm_start": "System 1 warm start", "assess": "assessments", "grpo": "GRPO"}
    for seed, run in results["seeds"].items():
        if run.get("seconds"):
            lines.append(
                f"Seed {seed}: "
                + ", ".join(
                    f"{label} {run['seconds'].get(k, 0.0) / 60:.1f}" for k, label in parts.items()
                )
                + " min"
                + (
                    " (its warm start and first assessment reused)"
                    if run.get("warm_start_reused")
                    else ""
                )
                + "."
            )
    return lines


def plot_curves(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for seed, run in results["seeds"].items():
        steps = [h["step"] for h in run["history"] if "reward" in h]
        rewards = [h["reward"] for h in run["history"] if "reward" in h]
        if steps:
            # one group per step is noisy: each step faint, the mean of the last 10 drawn over it
            (raw,) = ax.plot(steps, rewards, alpha=0.25, lw=0.8)
            mean = [statistics.fmean(rewards[max(0, i - 9) : i + 1]) for i in range(len(rewards))]
            ax.plot(steps, mean, color=raw.get_color(), lw=2, label=f"seed {seed} (mean of 10)")
    for key, style, label in (
        ("baseline_ignore_video", "--", "ignore the video (held-out)"),
        ("baseline_read_words", ":", "read the words (held-out)"),
    ):
        if key in results:
            ax.axhline(results[key]["reward"], color="grey", ls=style, label=label)
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("mean total reward of the group")
    ax.set_title(f"GRPO of System 1 (omnir1 study, {results['data']['format']})")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    import sys

    from omnir1.workers import serve

    sys.exit(serve(_seed_worker))
