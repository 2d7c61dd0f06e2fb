"""GRPO group scoring with real System 2 (tiny models) on a synthetic ReVOS sample."""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path

import pytest

from omnir1.benchmarks.registry import load
from omnir1.config import GrounderParams, VideoAccuracyParams
from omnir1.media.video import smart_resize
from omnir1.models.loading import load_models
from omnir1.rl.engine import RewardEngine, System2FailedError, context_from_sample
from omnir1.systems.prompts import format_time
from omnir1.systems.system2 import run_system2

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def models(tiny_models):
    return load_models(tiny_models)


@pytest.fixture(scope="module")
def context(synth_sets):
    sample = next(
        s
        for s in load("revos", synth_sets["revos"])
        if s.split == "valid" and len(s.object_ids) == 1
    )
    return context_from_sample(sample)


def answer_on_visible_frames(ctx, moments: int = 2) -> tuple[str, list[float]]:
    """A well-formed answer whose moments cover frames where the target is visible, and the GT
    box of the first keyframe in the pixels of the image the grounder is shown (what a perfect
    grounder would answer there)."""
    visible = [f for f, area in enumerate(ctx.target.union_areas) if area][:moments]
    moments = [
        {"start_time": format_time(f / 2), "end_time": format_time(f / 2), "description": "it"}
        for f in visible
    ]
    text = f"<think>seen.</think><answer>{json.dumps(moments)}</answer>"
    height, width = ctx.gt_union[0].shape
    shown_h, shown_w = smart_resize(height, width, max_pixels=GrounderParams().max_pixels)
    x0, y0, x1, y1 = ctx.target.gt_boxes[visible[0]][0]
    sx, sy = shown_w / width, shown_h / height
    return text, [x0 * sx, y0 * sy, x1 * sx, y1 * sy]


def test_group_is_scored_with_one_system2_call(models, context):
    good, box = answer_on_visible_frames(context, moments=1)
    calls = []

    def system2(*args, **kwargs):
        calls.append(len(args[2]))  # requests in this call
        grounder = json.dumps([{"bbox_2d": box}])
        return run_system2(*args, grounder_answer=grounder, **kwargs)

    engine = RewardEngine(["format", "video_accuracy"], models, system2=system2)
    completions = [good, "no tags at all", good.replace('"it"', '"the thing"'), ""]
    scores = engine.score_group(context, completions)
    assert calls == [2]  # one call for the group, the two completions with keyframes
    by = scores.rewards
    assert by[0]["format"].total == 1.0 and by[1]["format"].total == 0.0
    assert by[1]["video_accuracy"].total == 0.0  # no JSON object: gated
    assert scores.outcomes[1] is None and scores.outcomes[3] is None
    good_parts = by[0]["video_accuracy"].components
    assert good_parts["box_iou"] == pytest.approx(1.0, abs=1e-6)  # the GT box, one keyframe
    assert 0.0 <= good_parts["sam_j"] <= 1.0  # random SAM2 weights: some J, measured
    assert by[0]["video_accuracy"].total > by[1]["video_accuracy"].total
    # the total weighs each reward as rewards.weights says (TRL's reward_weights), 1 by default
    assert engine.total(by[0]) == by[0]["format"].total + by[0]["video_accuracy"].total
    weighted = RewardEngine(
        ["format", "video_accuracy"], models, reward_weights={"format": 0.25}
    ).total(by[0])
    assert weighted == pytest.approx(0.25 + by[0]["video_accuracy"].total)


def test_system2_failures_are_retried_then_stop_the_run(models, context):
    good, _ = answer_on_visible_frames(context)
    attempts = []

    def flaky(*args, **kwargs):
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("service restarting")
        return run_system2(*args, **kwargs)

    engine = RewardEngine(["video_accuracy"], models, system2=flaky, retries=2, backoff_s=0.01)
    engine.score_group(context, [good])
    assert len(attempts) == 3

    def broken(*args, **kwargs):
        raise ConnectionError("service gone")

    engine = RewardEngine(["video_accuracy"], models, system2=broken, retries=1, backoff_s=0.01)
    failed = r"after 2 attempts: ConnectionError: service gone"
    with pytest.raises(System2FailedError, match=failed):
        engine.score_group(context, [good])


def test_unweighted_sam2_can_run_on_every_nth_group_only(models, context):
    """rewards.sam2_every: with a_g 0, SAM2 runs (and sam_j is logged) on every Nth System-2
    call; the boxes, and so every weighted term, come from every call."""
    good, box = answer_on_visible_frames(context, moments=1)
    segmented = []

    def system2(*args, **kwargs):
        segmented.append(kwargs.get("segment_masks", True))
        return run_system2(*args, grounder_answer=json.dumps([{"bbox_2d": box}]), **kwargs)

    weights = VideoAccuracyParams(a_g=0.0)
    engine = RewardEngine(
        ["video_accuracy"], models, weights=weights, system2=system2, sam2_every=2
    )
    scores = [engine.score_group(context, [good]) for _ in range(3)]
    assert segmented == [True, False, True]
    assert [s.outcomes[0].sam_j is None for s in scores] == [False, True, False]
    parts = [s.rewards[0]["video_accuracy"].components for s in scores]
    assert parts[0]["box_iou"] == parts[1]["box_iou"] == pytest.approx(1.0, abs=1e-6)
    totals = [s.rewards[0]["video_accuracy"].total for s in scores]
    assert totals[0] == totals[1] == totals[2]  # a_g 0: whether SAM2 ran changes no reward
    needs_unweighted = r"sam2_every 2 needs video_accuracy\.a_g 0: SAM2's J is part of the reward"
    with pytest.raises(ValueError, match=needs_unweighted):
        RewardEngine(["video_accuracy"], models, weights=VideoAccuracyParams(a_g=2.0), sam2_every=2)


def test_unknown_reward_names_fail_early(models):
    with pytest.raises(ValueError, match="unknown reward 'nope'"):
        RewardEngine(["format", "nope"], models)


def test_sam_j_is_skipped_without_boxes(models, context):
    good, _ = answer_on_visible_frames(context)
    no_boxes = functools.partial(run_system2, grounder_answer="I see nothing")
    engine = RewardEngine(["video_accuracy"], models, system2=no_boxes)
    scores = engine.score_group(context, [good])
    assert scores.outcomes[0].sam_j is None
    assert scores.rewards[0]["video_accuracy"].components["sam_j"] is None


def test_refavs_recipe_grounds_the_first_frame_with_the_whole_audio(models, synth_sets):
    """RefAID: System 1 sees frame 0 and all of the audio; its description is grounded on frame 0
    and the reward is the IoU of System 2's first box there."""
    from omnir1.config import load_params
    from omnir1.rl.warmstart import system1_answer
    from omnir1.systems.reasoning import GlobalReasoner, load_clip

    params = load_params(ROOT / "params.yaml", [ROOT / "configs/params/refavs.yaml"])
    s1 = params.system1
    sample = next(s for s in load("refavs", synth_sets["refavs"]) if not s.is_null)
    clip = load_clip(sample.frame_paths[0].parent, audio=sample.audio_path, cfg=s1, folder_fps=1)
    assert clip.num_frames == 1 and clip.source_indices.tolist() == [0]
    assert len(clip.audio) == pytest.approx(clip.duration_s * 16_000, rel=0.01)
    inputs = GlobalReasoner(models.system1, models.system1_processor, s1).inputs(
        clip, sample.expression, random.Random(0)
    )
    assert inputs["video_grid_thw"][0, 0] == 1 and "input_features" in inputs

    engine = RewardEngine(params.rewards.names, models, max_keyframes=1)
    ctx = context_from_sample(sample, s1, clip)
    calls = []

    def system2(*args, **kwargs):
        calls.append([k.frame for r in args[2] for k in r.keyframes])
        return run_system2(*args, **kwargs)

    engine.system2 = system2
    scores = engine.score_group(ctx, [system1_answer([0], "the red circle", 1, ctx.frame_times)])
    assert calls == [[0]]
    box = scores.rewards[0]["refavs_box"]
    predicted = scores.outcomes[0].boxes[0]
    assert (box.total > 0) == bool(predicted and ctx.target.gt_boxes[0])
    assert scores.rewards[0]["format"].total == 1.0


def test_scores_from_a_shard_equal_scores_from_decoding(models, synth_sets, tmp_path):
    """System 2 on a preprocessed shard's frames (what `omnir1 train --shards` uses) gives the
    same boxes, masks and rewards as System 2 decoding the video itself."""
    from dataclasses import replace

    from omnir1.cli import main
    from omnir1.config import load_params
    from omnir1.data.shards import views_for

    s1 = load_params(ROOT / "params.yaml").system1
    made = [
        "data",
        "preprocess",
        "--format",
        "revos",
        str(synth_sets["revos"]),
        "--out",
        str(tmp_path / "shards"),
        "--params",
        str(ROOT / "params.yaml"),
        "--quiet",
    ]
    assert main(made) == 0
    sample = next(s for s in load("revos", synth_sets["revos"]) if len(s.object_ids) == 1)
    (clip,), (frames,) = views_for([sample], s1, tmp_path / "shards")
    assert frames is not None and frames.shape[0] == sample.num_frames
    from_shard = context_from_sample(sample, s1, clip, frames)
    decoded = replace(from_shard, frames=None)
    good, box = answer_on_visible_frames(decoded, moments=2)
    grounder = json.dumps([{"bbox_2d": box}])
    seen = []

    def system2(models, video, *args, **kwargs):
        seen.append(type(video).__name__)
        return run_system2(models, video, *args, grounder_answer=grounder, **kwargs)

    engine = RewardEngine(["format", "video_accuracy"], models, system2=system2)
    a = engine.score_group(from_shard, [good, good])
    b = engine.score_group(decoded, [good, good])
    assert seen == ["memmap", "PosixPath"]
    assert a.outcomes == b.outcomes
    assert [r["video_accuracy"].components for r in a.rewards] == [
        r["video_accuracy"].components for r in b.rewards
    ]


def test_adversarial_answers_score_zero_and_are_counted(models, context):
    """System 1 and the grounder writing hostile text: the group is scored, never a crash."""
    good, box = answer_on_visible_frames(context, moments=1)
    many = [{"start_time": "00:00.00", "end_time": "00:00.00", "description": "x"}] * 5000
    hostile = [
        "<think>" + "a" * 2_000_000 + "</think><answer>[]</answer>",  # very long
        "<think>x</think><answer>" + "[" * 100_000 + "]" * 100_000 + "</answer>",  # deep
        "<think>x</think><answer>" + '{"a":' * 5000 + "1" + "}" * 5000 + "</answer>",
        f"<think>x</think><answer>{json.dumps(many)}</answer>",  # thousands of moments
    ]
    boxes = json.dumps([{"bbox_2d": box}] + [{"bbox_2d": [1, 2, 3, 4]}] * 5000)
    thousands_of_boxes = functools.partial(run_system2, grounder_answer=boxes)
    engine = RewardEngine(["format", "video_accuracy"], models, system2=thousands_of_boxes)
    scores = engine.score_group(context, [good, *hostile])
    accuracy = [r["video_accuracy"].total for r in scores.rewards]
    assert all(a == 0.0 for a in accuracy[1:3])  # no JSON object read: gated to zero
    assert scores.parsed[2].problems and scores.parsed[3].problems  # counted, with reasons
    # thousands of moments: over max_moments, read as no answer, and said so
    assert scores.parsed[4].moments == [] and "too_many_moments" in scores.parsed[4].problems
    assert accuracy[4] == 0.0
    assert scores.outcomes[0] is not None and len(scores.outcomes[0].boxes[0]) <= 16
    assert scores.rewards[0]["video_accuracy"].components["object_num_mismatch"] < 0


def test_the_recipes_grounder_settings_reach_system2(models, context, monkeypatch):
    """The grounder must see keyframes as it was warm-started on them (params.grounder's
    pixel budget): the engine once called System 2 with the release defaults, and a grounder
    warm-started at 56 x 84 px wrote no box at 900 x 28 x 28."""
    from omnir1.config import load_params
    from omnir1.rl import engine as engine_module

    params = load_params(ROOT / "params.yaml")
    seen = []

    def spy(*args, grounder_cfg=None, **kwargs):
        seen.append(grounder_cfg)
        return run_system2(*args, grounder_cfg=grounder_cfg, **kwargs)

    monkeypatch.setattr(engine_module, "run_system2", spy)
    engine = engine_module.engine_from_params(params, models, segment_masks=False)
    good, _ = answer_on_visible_frames(context)
    engine.score_group(context, [good])
    assert seen == [params.grounder]
    assert seen[0].max_pixels == 6272 != GrounderParams().max_pixels
