"""What a saved study stage depends on (`omnir1 study` reuses a stage only when nothing in its
fingerprint changed), and the intervals of its before/after changes."""

from __future__ import annotations

import pytest

from omnir1.experimental.params import System1StageParams
from omnir1.experimental.params import load_study_params as load_params
from omnir1.experimental.study import (
    before_grpo,
    fingerprint,
    grounder_only,
    interval_lines,
    paired_intervals,
    summarize,
    system2_lines,
)
from omnir1.rl.checkpoints import data_digest


def test_fingerprint_follows_params_data_and_settings(tmp_path):
    data = tmp_path / "data"
    (data / "Videos").mkdir(parents=True)
    clip = data / "Videos" / "a.mp4"
    clip.write_bytes(b"12345")
    meta = data / "meta_expressions.json"
    meta.write_text('{"a": 1}')
    params = load_params("params.yaml")

    def key(p=params, **settings):
        return fingerprint(p, data_digest(data), **({"per_sample": 2} | settings))

    first = key()
    assert key(load_params("params.yaml")) == first
    assert key(per_sample=4) != first
    other = params.model_copy(deep=True)
    other.train.max_steps += 1
    assert key(other) != first

    clip.write_bytes(b"123456")  # a media file changed size
    assert key() != first
    clip.write_bytes(b"12345")
    assert key() == first
    meta.write_text('{"a": 2}')  # an annotation changed, same size: read in full
    assert key() != first
    meta.write_text('{"a": 1}')
    (data / "Videos" / "b.mp4").write_bytes(b"")  # a file added
    assert key() != first


def test_warm_starts_are_keyed_without_grpos_own_settings(tmp_path):
    """The grounder's and the seeds' warm-start stages do not change with GRPO's own settings or
    its logging, so a study run again with another GRPO recipe reuses them; they do change with
    the seed, the expressions chosen and everything a warm start or an assessment reads."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "meta_expressions.json").write_text("{}")
    params = load_params("params.yaml")

    def key(p):
        return fingerprint(before_grpo(p), data_digest(data), per_sample=2)

    first = key(params)
    grpo = params.model_copy(deep=True)
    grpo.train.learning_rate *= 2
    grpo.train.max_steps += 1
    grpo.train.beta = 0.0
    grpo.tracking.enabled = not params.tracking.enabled
    grpo.evaluate.videos_per_split = 7
    assert key(grpo) == first
    assert fingerprint(grpo, data_digest(data), per_sample=2) != fingerprint(
        params, data_digest(data), per_sample=2
    )  # the GRPO stage itself runs again
    for change in (
        lambda p: setattr(p.train, "seed", 1),
        lambda p: setattr(p.train, "words", ["red"]),
        lambda p: setattr(p.train, "kinds", ["appearance"]),
        lambda p: setattr(p.warm_start.system1, "steps", 7),
        lambda p: setattr(p.system1, "temperature", 0.5),
        lambda p: setattr(p.grounder, "max_boxes", 3),
        lambda p: setattr(p.rewards.video_accuracy, "a_k", 2.0),  # the assessment's reward
        lambda p: setattr(p.models.tiny, "seed", 3),
    ):
        other = params.model_copy(deep=True)
        change(other)
        assert key(other) != first
    assert params.train.max_steps == load_params("params.yaml").train.max_steps  # untouched


def test_the_shared_grounder_stage_trains_no_system1_stage():
    """The study's environment warm-starts the grounder only, even where System 1's stages give
    their own steps (each seed warm-starts its own System 1)."""
    params = load_params("params.yaml")
    params.warm_start.system1_stages = [
        System1StageParams(words=["red"], steps=800),
        System1StageParams(kinds=["appearance"]),
    ]
    default = params.warm_start.system1.steps
    assert [s.finetune.steps for s in params.warm_start.system1_curriculum()] == [800, default]
    shared = grounder_only(params)
    assert [s.finetune.steps for s in shared.warm_start.system1_curriculum()] == [0]
    assert shared.warm_start.grounder == params.warm_start.grounder
    assert len(params.warm_start.system1_stages) == 2  # the seeds' own params are untouched


def sums(reward: float, keyframes: int, hits: int, iou: float, completions: int = 2) -> dict:
    return {
        "completions": float(completions),
        "reward": reward,
        "keyframes": float(keyframes),
        "hits": float(hits),
        "box_iou": iou,
    }


def run(before: list[dict], after: list[dict]) -> dict:
    def figures(per_sample):
        total = {k: sum(x[k] for x in per_sample) for k in per_sample[0]}
        return {
            "reward": total["reward"] / total["completions"],
            "keyframe_hit_rate": total["hits"] / total["keyframes"],
            "keyframe_hits_per_answer": total["hits"] / total["completions"],
            "box_iou": total["box_iou"] / total["completions"],
            "format_rate": 1.0,
            "per_sample": per_sample,
        }

    return {"before": figures(before), "after": figures(after)}


def test_one_sample_intervals_are_its_exact_change_as_ratios_of_sums():
    """With one held-out sample every draw is that sample: the interval is the change itself,
    computed as the assessment does (hit rate = hits / keyframes, not a mean of rates)."""
    runs = {
        "0": run([sums(3.0, 4, 1, 0.2)], [sums(7.0, 8, 6, 0.6)]),
        "1": run([sums(5.0, 4, 2, 0.4)], [sums(5.0, 4, 2, 0.4)]),
    }
    intervals = paired_intervals(runs, draws=50)
    assert intervals["reward"]["0"] == pytest.approx([2.0, 2.0])  # (7 - 3) / 2 answers
    assert intervals["keyframe_hit_rate"]["0"] == pytest.approx([6 / 8 - 1 / 4] * 2)
    assert intervals["box_iou"]["0"] == pytest.approx([0.2, 0.2])
    assert intervals["reward"]["1"] == pytest.approx([0.0, 0.0])
    assert intervals["reward"]["mean"] == pytest.approx([1.0, 1.0])


def test_intervals_separate_a_steady_gain_from_noise():
    """A gain on every sample gives an interval above 0; gains and losses that cancel give one
    around 0; a stage without per-sample sums (an older version's) gives none."""
    before = [sums(2.0, 4, 1, 0.1) for _ in range(30)]
    steady = [sums(2.0 + 0.5 + 0.1 * (i % 3), 4, 2, 0.2) for i in range(30)]
    noisy = [sums(2.0 + (1.0 if i % 2 else -1.0), 4, 1 + 2 * (i % 2), 0.1) for i in range(30)]
    intervals = paired_intervals({"0": run(before, steady), "1": run(before, noisy)})
    low, high = intervals["reward"]["0"]
    assert 0.5 / 2 <= low < high <= 0.7 / 2
    low, high = intervals["reward"]["1"]
    assert low < 0 < high
    assert intervals["keyframe_hit_rate"]["0"][0] > 0
    steady_only = {"0": run(before, steady)}  # a fixed seed: the same intervals on every run
    assert paired_intervals(steady_only, seed=1) == paired_intervals(steady_only, seed=1)
    old = run(before, steady)
    del old["after"]["per_sample"]
    assert paired_intervals({"0": old}) is None


def test_box_iou_splits_into_answers_with_a_hit_and_their_box_iou():
    """box IoU = (share of answers with a visible keyframe) x (box IoU of those answers): a
    policy that finds the target in more answers, on frames System 2 boxes no better, gains
    on the first figure only."""

    def answered(n: int, iou_each: float) -> dict:
        return sums(2.0, 4, n, iou_each * n) | {"answers_with_hit": float(n)}

    before = [answered(1, 0.3) for _ in range(10)]
    after = [answered(2, 0.3) for _ in range(10)]
    intervals = paired_intervals({"0": run(before, after)})
    assert intervals["answers_with_hit"]["0"] == pytest.approx([0.5, 0.5])  # 1/2 -> 2/2
    assert intervals["box_iou_on_hits"]["0"] == pytest.approx([0.0, 0.0], abs=1e-12)
    assert intervals["box_iou"]["0"] == pytest.approx([0.15, 0.15])


def test_the_study_table_gives_each_seeds_change_with_its_interval():
    before = [sums(2.0, 4, 1, 0.1) for _ in range(10)]
    after = [sums(3.0, 4, 2, 0.3) for _ in range(10)]
    blind = run(before, before)["before"]
    results = {
        "seeds": {"0": run(before, after), "1": run(before, after)},
        "baseline_ignore_video": blind,
        "baseline_read_words": blind,
        "heldout_samples": 10,
    }
    results["summary"] = summarize(results)
    reward = results["summary"]["reward"]
    assert reward["delta"] == pytest.approx(0.5)
    assert reward["delta_interval"] == pytest.approx([0.5, 0.5])
    assert reward["seeds_above_zero"] == 2
    lines = interval_lines(results)
    assert "| mean total reward | +0.500 [+0.500, +0.500] | +0.500 [+0.500, +0.500] |" in lines[4]
    assert [line.split(" |")[0] for line in lines[4:7]] == [
        "| mean total reward",
        "| keyframe hit rate",
        "| box IoU",
    ]
    del results["seeds"]["1"]["before"]["per_sample"]
    results["summary"] = summarize(results)
    assert "delta_interval" not in results["summary"]["reward"] and not interval_lines(results)


def test_the_study_report_says_what_system2_alone_reaches():
    truth = {
        "samples": 3,
        "frames": 12,
        "box_iou": 0.5,
        "box_iou_per_sample": 0.5,
        "zero_share": 0.25,
        "box_iou_by_area_quartile": [0.0, 0.5, 0.6, 0.9],
    }
    (line, blank) = system2_lines({"grounder_on_truth": truth})
    assert "(12 frames of 3 held-out expressions) scores box IoU 0.500" in line
    assert "(0.000 / 0.500 / 0.600 / 0.900 by quartile of the target's area; 0 on 25%" in line
    assert blank == ""
    # a study saved before the check, or held-out targets never visible: no line
    assert system2_lines({}) == []
    assert system2_lines({"grounder_on_truth": {"samples": 0, "frames": 0}}) == []
