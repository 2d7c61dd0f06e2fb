"""Answers derived from the ground truth for the supervised warm starts, and the figures of the
held-out assessment: each checked against hand-computed values."""

from __future__ import annotations

import json

import pytest

from omnir1.experimental.assess import (
    assess,
    expression_template,
    grounder_on_truth,
    ignore_video_completions,
    prior_frames,
    read_words_completions,
)
from omnir1.rl.engine import GroupContext, RewardEngine
from omnir1.rl.rewards import RewardTarget, video_accuracy_reward
from omnir1.rl.warmstart import (
    Example,
    collate,
    object_descriptions,
    spread,
    system1_answer,
    target_description,
)
from omnir1.systems.parsing import FrameTimes, parse_answer


def target_visible_on(frames: set[int], num_frames: int = 20) -> RewardTarget:
    areas = [[100 if f in frames else 0] for f in range(num_frames)]
    boxes = [[[0.0, 0.0, 10.0, 10.0]] if f in frames else [] for f in range(num_frames)]
    return RewardTarget(num_frames, areas, [a[0] for a in areas], boxes)


def test_spread_picks_evenly_from_first_to_last():
    assert spread(list(range(10)), 4) == [0, 3, 6, 9]
    assert spread([2, 5], 4) == [2, 5]
    assert spread([7], 1) == [7]


def test_the_derived_answer_parses_back_to_its_frames_and_earns_the_full_keyframe_reward():
    visible = [3, 4, 5, 9, 10, 11, 17]
    text = system1_answer(visible, "the red circle", 4, FrameTimes.uniform(20))
    parsed = parse_answer(text, FrameTimes.uniform(20))
    assert parsed.format_ok and parsed.keyframes == [3, 5, 10, 17]
    assert all(m.valid and len(m.frames) == 1 for m in parsed.moments)
    assert parsed.keyframe_descriptions == ["the red circle"] * 4
    reward = video_accuracy_reward(parsed, target_visible_on(set(visible)), None)
    # per moment 0.2 + 0.2 + 0.2 + 1.0 visible; 4 frames 0.4 * 4; single-frame moments: no overlap
    assert reward.components["cumulated"] == pytest.approx(1.6)
    assert reward.components["frame"] == pytest.approx(1.6)
    assert reward.components["overlap"] == 0


def test_derived_times_map_back_to_the_same_frame():
    frames = [0, 1, 7, 13, 19]
    parsed = parse_answer(
        system1_answer(frames, "x", 5, FrameTimes.uniform(20)),
        FrameTimes.uniform(20),
        max_keyframes=5,
    )
    assert parsed.keyframes == frames


def test_descriptions_come_from_the_data_set_or_fall_back_to_the_expression(tmp_path):
    from types import SimpleNamespace

    (tmp_path / "synth_objects.json").write_text(
        json.dumps(
            {
                "v1": {
                    "1": {"color": "red", "shape": "circle", "size": "small"},
                    "2": {"color": "blue", "shape": "star", "size": "large"},
                }
            }
        )
    )
    table = object_descriptions(tmp_path)
    assert table == {("v1", "1"): "the red circle", ("v1", "2"): "the blue star"}
    sample = SimpleNamespace(video_id="v1", object_ids=("2", "1"), expression="the one")
    assert target_description(sample, table) == "the blue star and the red circle"
    unknown = SimpleNamespace(video_id="v9", object_ids=("1",), expression="the one")
    assert target_description(unknown, table) == "the one"
    assert object_descriptions(tmp_path / "missing") == {}


def test_collate_puts_labels_on_answer_tokens_only():
    import torch

    examples = [
        Example([1, 2, 3], [4, 5], {"pixel_values": torch.ones(2, 3)}),
        Example([1, 2], [6], {"pixel_values": torch.zeros(1, 3)}),
    ]
    batch = collate(examples, pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5], [1, 2, 6, 0, 0]]
    assert batch["labels"].tolist() == [[-100, -100, -100, 4, 5], [-100, -100, 6, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch["pixel_values"].shape == (3, 3)


def test_prior_frames_are_the_most_often_visible_ones():
    targets = [target_visible_on({5, 6, 7}), target_visible_on({6, 7, 8}), target_visible_on({7})]
    assert prior_frames(targets, 2) == [6, 7]
    assert prior_frames(targets, 3) == [5, 6, 7]  # ties: the earlier frame


def test_assessment_counts_keyframe_hits_and_malformed_answers():
    ctx = GroupContext(
        "v/0",
        None,
        1.0,
        list(range(20)),
        target_visible_on({2, 3, 4}),
        [],
        frame_times=FrameTimes.uniform(20),
    )
    engine = RewardEngine(["format"], models=None)
    good = system1_answer([2, 3, 10], "the red circle", 3, FrameTimes.uniform(20))
    result = assess(engine, [ctx], [[good, "no answer at all"]])
    assert result.completions == 2 and result.format_rate == 0.5
    assert result.keyframes_per_answer == 1.5
    assert result.keyframe_hit_rate == pytest.approx(2 / 3)
    assert result.keyframe_hits_per_answer == pytest.approx(1.0)  # 2 hits over 2 answers
    assert result.reward == pytest.approx(0.5)  # format only: 1 and 0
    assert result.box_iou == 0.0
    assert result.answers_with_hit == 0.5  # the malformed answer has no keyframe
    assert result.box_iou_on_hits == 0.0  # no System 2 here: no boxes
    # the sample's sums, which the study's intervals resample
    assert result.per_sample == [
        {
            "completions": 2.0,
            "reward": 1.0,
            "keyframes": 3.0,
            "hits": 2.0,
            "box_iou": 0.0,
            "answers_with_hit": 1.0,
        }
    ]


def test_system2_alone_boxes_each_visible_frame_given_the_true_description():
    """The grounder check asks System 2 about every frame where the target is visible, with
    the true description, and reports its box IoU by the target's area on the frame."""
    from omnir1.systems.system2 import KeyframeResult, System2Result

    areas = [[0], [400], [100], [300], [200], [0]]  # frames 1-4 visible
    truth = [[[0.0, 0.0, 10.0, 10.0]] if a[0] else [] for a in areas]
    target = RewardTarget(6, areas, [a[0] for a in areas], truth)
    asked = []

    def grounder(models, video, requests, on_frame, **kwargs):
        """Boxes the target exactly on large views (area >= 300), half of it otherwise."""
        results = []
        for r in requests:
            (k,) = r.keyframes
            asked.append((k.frame, k.description))
            box = [0.0, 0.0, 10.0, 10.0] if areas[k.frame][0] >= 300 else [0.0, 0.0, 5.0, 10.0]
            results.append(System2Result(r.id, [KeyframeResult(k.frame, k.description, [box])]))
        return results

    six = FrameTimes.uniform(6)
    ctx = GroupContext("v/0", None, 1.0, list(range(6)), target, [], frame_times=six)
    unseen = GroupContext(
        "v/1", None, 1.0, list(range(6)), target_visible_on(set(), 6), [], frame_times=six
    )
    engine = RewardEngine(["format", "video_accuracy"], None, system2=grounder)
    result = grounder_on_truth(engine, [ctx, unseen], ["the red circle", "the blue star"])
    assert sorted(asked) == [(f, "the red circle") for f in (1, 2, 3, 4)]
    assert result["samples"] == 1 and result["frames"] == 4  # the unseen target: no frame
    assert result["box_iou"] == pytest.approx(0.75)  # 1, 0.5, 1, 0.5
    assert result["box_iou_per_sample"] == pytest.approx(0.75)
    assert result["zero_share"] == 0.0
    # areas 100, 200, 300, 400: the small views are the half boxes
    assert result["box_iou_by_area_quartile"] == pytest.approx([0.5, 0.5, 1.0, 1.0])
    assert grounder_on_truth(engine, [unseen], ["the blue star"]) == {"samples": 0, "frames": 0}


def test_the_ignore_the_video_baseline_answers_the_prior_frames_with_the_expression():
    targets = [target_visible_on({5, 6}), target_visible_on({6})]
    (answer,), (other,) = ignore_video_completions(
        targets,
        ["the red circle", "the blue star"],
        moments=2,
        frame_times=[FrameTimes.uniform(20)] * 2,
    )
    parsed = parse_answer(answer, FrameTimes.uniform(20))
    assert parsed.keyframes == [5, 6]
    assert parsed.keyframe_descriptions == ["the red circle"] * 2
    assert "the blue star" in other


def test_the_read_the_words_baseline_picks_frames_by_the_expressions_template():
    words = {"red", "blue", "green", "circle", "star", "small"}
    assert expression_template("The red circle that appears LAST.", words) == (
        "the _ _ that appears last."
    )
    assert expression_template("all the small stars", words) == "all the _ _"
    train = [target_visible_on({6, 7}), target_visible_on({7}), target_visible_on({1, 2})]
    texts = ["the red circle that appears last", "the blue star that appears last", "the star"]
    (late,), (same,), (unseen,) = read_words_completions(
        train,
        texts,
        ["the green circle that appears last", "the red circle", "the star on the left"],
        moments=2,
        object_words=words,
        frame_times=[FrameTimes.uniform(20)] * 3,
    )
    assert parse_answer(late, FrameTimes.uniform(20)).keyframes == [
        6,
        7,
    ]  # frames of "the _ _ that appears last"
    assert parse_answer(same, FrameTimes.uniform(20)).keyframes == [
        1,
        7,
    ]  # "the _ _" unseen: all training targets
    assert parse_answer(unseen, FrameTimes.uniform(20)).keyframes == [1, 7]
    assert "the green circle that appears last" in late  # the expression as the description


def test_example_fields_keep_only_the_clips_own_audio_features():
    """Whisper pads features to 30 s: an example keeps its clip's frames only, in storage of
    its own (a slice would hold the padded buffer), and collate pads a batch back."""
    import torch

    from omnir1.rl.warmstart import _fields

    mask = torch.zeros(1, 3000, dtype=torch.long)
    mask[0, :400] = 1
    inputs = {
        "input_ids": torch.ones(1, 5, dtype=torch.long),
        "attention_mask": torch.ones(1, 5, dtype=torch.long),
        "input_features": torch.randn(1, 128, 3000),
        "feature_attention_mask": mask,
    }
    fields = _fields(inputs)
    assert set(fields) == {"input_features", "feature_attention_mask"}
    features = fields["input_features"]
    assert features.shape == (1, 128, 400)
    assert features.untyped_storage().nbytes() == 128 * 400 * 4
    assert torch.equal(features, inputs["input_features"][..., :400])
    short = Example([1], [2], fields)
    longer = dict(fields, input_features=torch.randn(1, 128, 500))
    longer["feature_attention_mask"] = torch.ones(1, 500, dtype=torch.long)
    batch = collate([short, Example([1], [2], longer)], pad_id=0)
    assert batch["input_features"].shape == (2, 128, 500)
    assert batch["feature_attention_mask"][0].sum() == 400


@pytest.mark.parametrize(
    ("expression", "kind"),
    [
        ("the small red circle", "appearance"),
        ("the red shape", "appearance"),
        ("the triangle", "appearance"),
        ("the object making the drum beat", "audio"),
        ("the shape that appears last", "temporal"),
        ("the shape that enters after the low hum starts", "temporal"),
        ("all the red shapes", "multi"),
        ("the red circle and the blue square", "multi"),
    ],
)
def test_expression_kind_of_each_template(expression, kind):
    from omnir1.data.synth.expressions import expression_kind

    assert expression_kind(expression) == kind
