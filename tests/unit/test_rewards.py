"""GRPO rewards of System 1 on hand-written completions (parsed by the real parser) and
hand-computed expected values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from omnir1.config import VideoAccuracyParams
from omnir1.rl.rewards import (
    REWARDS,
    VIDEO_ACCURACY_TERMS,
    RewardBreakdown,
    RewardTarget,
    System2Outcome,
    box_iou,
    format_reward,
    get_reward,
    matched_box_iou,
    needs_system2,
    refavs_box_reward,
    video_accuracy_reward,
)
from omnir1.systems.parsing import FrameTimes, parse_answer


def moment(start: object, end: object, description: object = "the dog") -> dict:
    return {"start_time": start, "end_time": end, "description": description}


def answer(*moments: object) -> str:
    return f"<think>The dog is clearest here.</think><answer>{json.dumps(list(moments))}</answer>"


def target(object_areas: list[list[int]], union_areas=None, gt_boxes=None) -> RewardTarget:
    """A target from per-frame object areas; the union defaults to the sum (disjoint objects)
    and the boxes to none."""
    t = len(object_areas)
    return RewardTarget(
        num_frames=t,
        object_areas=object_areas,
        union_areas=union_areas if union_areas is not None else [sum(r) for r in object_areas],
        gt_boxes=gt_boxes if gt_boxes is not None else [[] for _ in range(t)],
    )


def one_object(num_frames: int) -> RewardTarget:
    return target([[1]] * num_frames)


def accuracy(text: str, tgt: RewardTarget, boxes=None, sam_j=None, **weights) -> RewardBreakdown:
    """Video accuracy of `text`; `boxes` defaults to one box per keyframe (so SAM2 runs)."""
    parsed = parse_answer(text, FrameTimes.uniform(tgt.num_frames))
    if boxes is None:
        boxes = [[[0.0, 0.0, 1.0, 1.0]] for _ in parsed.keyframes]
    outcome = System2Outcome(boxes=boxes, sam_j=sam_j)
    return video_accuracy_reward(parsed, tgt, outcome, VideoAccuracyParams(**weights))


# --- format -----------------------------------------------------------------------------------


def test_format_reward():
    good = format_reward(
        parsed=parse_answer(answer(moment("00:00.00", "00:01.00")), FrameTimes.uniform(4))
    )
    assert (good.total, good.components) == (1.0, {"format": 1.0})
    bad = format_reward(
        parsed=parse_answer(json.dumps([moment("00:00.00", "00:01.00")]), FrameTimes.uniform(4))
    )
    assert (bad.total, bad.components) == (0.0, {"format": 0.0})


# --- cumulated --------------------------------------------------------------------------------


def test_cumulated_counts_every_object_and_the_visible_fraction():
    # 2 objects on 4 frames (2 s); object 1 absent on frames 0 and 2, both absent on frame 2
    tgt = target([[5, 0], [5, 3], [0, 0], [2, 2]])
    text = answer(
        moment("00:00.00", "00:01.00"),  # valid, frames 0..2: 3 of 6 pairs visible
        moment("00:01.00", "00:00.00"),  # reversed: parses, not valid
        moment("1:2", "00:01.00"),  # bad start: only present
    )
    result = accuracy(text, tgt)
    expected = ((0.6 + 3 / 6) + 0.4 + 0.2) / 3
    assert result.components["cumulated"] == pytest.approx(expected)


def test_cumulated_beyond_duration_and_bad_description():
    tgt = one_object(4)  # 2 s
    text = answer(moment("00:00.00", "00:02.50"), moment("00:00.00", "00:01.00", ""))
    result = accuracy(text, tgt)
    # beyond duration parses (0.4); an empty description does not (0.2); neither is valid
    assert result.components["cumulated"] == pytest.approx((0.4 + 0.2) / 2)
    assert result.notes == ["gated: no valid interval"]


def test_cumulated_without_gt_objects_has_no_visible_term():
    tgt = target([[], [], [], []], union_areas=[0, 0, 0, 0])
    result = accuracy(answer(moment("00:00.00", "00:01.00")), tgt)
    assert result.components["cumulated"] == pytest.approx(0.6)


# --- keyframe count and diversity -------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected"), [(1, 0.4), (2, 0.8), (3, 1.2), (4, 1.6), (5, 0.8), (6, 0.4)]
)
def test_frame_term(n, expected):
    end = f"00:{(n - 1) // 2:02d}.{50 if (n - 1) % 2 else 0:02d}"  # covers frames 0..n-1
    result = accuracy(answer(moment("00:00.00", end)), one_object(16))
    assert result.components["frame"] == pytest.approx(expected)
    assert result.components["overlap"] == pytest.approx(-0.2 * (n - 1))


def test_frame_term_counts_unique_frames_and_overlap_penalises_duplicates():
    # frames 0..2 and 1..3: 4 unique frames, 2 covered twice
    text = answer(moment("00:00.00", "00:01.00"), moment("00:00.50", "00:01.50"))
    result = accuracy(text, one_object(8))
    assert result.components["frame"] == pytest.approx(1.6)
    assert result.components["overlap"] == pytest.approx(-0.2 * 2 - 0.2 * 2 - 0.5 * 2)


# --- saliency ---------------------------------------------------------------------------------


def test_saliency_relative_to_the_largest_union_of_the_video():
    # keyframes 0 and 1; the largest union (40) is on frame 5, outside them
    tgt = target([[10], [20], [0], [0], [0], [40]])
    result = accuracy(answer(moment("00:00.00", "00:00.50")), tgt)
    assert result.components["saliency"] == pytest.approx((10 / 40 + 20 / 40) / 2)


def test_saliency_is_zero_when_no_frame_shows_the_target():
    result = accuracy(answer(moment("00:00.00", "00:00.50")), target([[0]] * 4))
    assert result.components["saliency"] == 0.0


def test_a_k_ratio_adds_saliency():
    tgt = target([[10], [20], [0], [40]])
    text = answer(moment("00:00.00", "00:00.50"))
    base = accuracy(text, tgt)
    weighted = accuracy(text, tgt, a_k_ratio=1.0)
    assert weighted.total - base.total == pytest.approx(0.375)
    assert base.components["saliency"] == pytest.approx(0.375)  # reported, weighted 0


# --- boxes ------------------------------------------------------------------------------------


def test_box_iou():
    assert box_iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert box_iou([0, 0, 10, 10], [10, 0, 20, 10]) == 0.0  # touching
    assert box_iou([0, 0, 0, 10], [0, 0, 0, 10]) == 0.0  # no area
    assert box_iou([5, 5, 0, 0], [0, 0, 5, 5]) == 0.0  # reversed corners: no area
    assert box_iou([0, 0, float("nan"), 10], [0, 0, 10, 10]) == 0.0


# IoU is 1-D along x here (every box spans y 0..10).
GT_A, GT_B = [0.0, 0.0, 10.0, 10.0], [4.0, 0.0, 14.0, 10.0]
P1, P2 = [1.0, 0.0, 11.0, 10.0], [0.0, 0.0, 4.0, 10.0]
# P1-A 9/11 is the best pair, but taking it leaves P2-B at 0; crossing gives P1-B + P2-A
HUNGARIAN = (7 / 13 + 4 / 10) / 2


def test_matched_box_iou_beats_greedy():
    assert box_iou(P1, GT_A) == pytest.approx(9 / 11)
    greedy = (9 / 11 + box_iou(P2, GT_B)) / 2
    assert matched_box_iou([P1, P2], [GT_A, GT_B]) == pytest.approx(HUNGARIAN)
    assert HUNGARIAN > greedy
    assert matched_box_iou([], [GT_A, GT_B]) == 0.0
    assert matched_box_iou([P1], [GT_A, GT_B]) == pytest.approx(9 / 11 / 2)
    with pytest.raises(ValueError, match="at least one GT box"):
        matched_box_iou([P1], [])


def test_box_iou_is_pooled_over_object_keyframe_pairs():
    # keyframes 0, 1, 2: two objects on frame 0, none on frame 1 (left out), one on frame 2.
    # The released code averages its (object, keyframe) matched-IoU matrix over the pairs that
    # have a GT box: (IoU(A) + IoU(B) + 1) / 3, not the mean of the keyframes' means.
    tgt = target([[1, 1], [0, 0], [1, 0], [0, 0]], gt_boxes=[[GT_A, GT_B], [], [GT_A], []])
    boxes = [[P1, P2], [P1], [GT_A]]
    result = accuracy(answer(moment("00:00.00", "00:01.00")), tgt, boxes=boxes)
    pooled = (2 * HUNGARIAN + 1.0) / 3
    assert result.components["box_iou"] == pytest.approx(pooled)
    assert pooled != pytest.approx((HUNGARIAN + 1.0) / 2)  # the per-keyframe mean differs
    # a GT object left unmatched on a keyframe counts 0 in the pool
    missed = accuracy(answer(moment("00:00.00", "00:01.00")), tgt, boxes=[[], [], [GT_A]])
    assert missed.components["box_iou"] == pytest.approx(1.0 / 3)


def test_box_iou_not_computable_without_gt_boxes():
    result = accuracy(answer(moment("00:00.00", "00:00.50")), one_object(4))
    assert result.components["box_iou"] is None
    assert "box_iou not computed: no GT box on any keyframe" in result.notes


@pytest.mark.parametrize(
    ("areas", "per_keyframe", "expected"),
    [
        ([[1]] * 4, [3, 1], -0.5 * 2 / (1 * 2)),  # one object, 2 extra boxes on keyframe 0
        ([[1, 1]] * 4, [5, 0], -0.5 * 3 / (2 * 2)),  # two objects: normalised by 2
        ([[]] * 4, [1, 2], -0.5 * 3 / (1 * 2)),  # no object: normalised by 1
        ([[1, 1]] * 4, [2, 1], 0.0),  # never more boxes than objects
    ],
)
def test_object_num_mismatch(areas, per_keyframe, expected):
    boxes = [[[0.0, 0.0, 1.0 + i, 1.0]] * n for i, n in enumerate(per_keyframe)]
    result = accuracy(answer(moment("00:00.00", "00:00.50")), target(areas), boxes=boxes)
    assert result.components["object_num_mismatch"] == pytest.approx(expected)


def test_invalid_predicted_boxes_are_dropped():
    boxes = [[[0.0, 0.0, 1.0, 1.0], [3.0, 0.0, 1.0, 1.0]], []]  # one reversed box
    result = accuracy(answer(moment("00:00.00", "00:00.50")), one_object(4), boxes=boxes)
    assert result.components["object_num_mismatch"] == 0.0
    assert "dropped 1 invalid predicted box(es)" in result.notes


# --- SAM2 and the total -----------------------------------------------------------------------


def test_full_breakdown_with_sam_j_weighted_by_a_g():
    # 1 object on 4 frames; keyframes 0 and 1, the object is absent on frame 1
    box0 = [2.0, 2.0, 6.0, 6.0]
    tgt = target([[4], [0], [6], [8]], gt_boxes=[[box0], [], [box0], [box0]])
    boxes = [[box0], [box0, [0.0, 0.0, 1.0, 1.0]]]  # exact on 0; two boxes on 1
    result = accuracy(answer(moment("00:00.00", "00:00.50")), tgt, boxes=boxes, sam_j=0.5)
    assert result.components == pytest.approx(
        {
            "cumulated": 0.6 + 1 / 2,
            "frame": 0.8,
            "overlap": -0.2,
            "saliency": (4 / 8 + 0) / 2,
            "box_iou": 1.0,
            "object_num_mismatch": -0.5 * 1 / (1 * 2),
            "sam_j": 0.5,
        }
    )
    assert result.total == pytest.approx(1.1 + (0.8 - 0.2) + 1.0 - 0.25 + 2 * 0.5)
    assert result.notes == []
    assert result.to_dict() == {
        "total": result.total,
        "components": result.components,
        "notes": [],
    }


def test_weights_scale_their_terms():
    box0 = [2.0, 2.0, 6.0, 6.0]
    tgt = target([[4], [0], [6], [8]], gt_boxes=[[box0], [], [box0], [box0]])
    boxes = [[box0], [box0, [0.0, 0.0, 1.0, 1.0]]]
    text = answer(moment("00:00.00", "00:00.50"))
    result = accuracy(text, tgt, boxes=boxes, sam_j=0.5, a_k=0.5, a_a=2.0, a_g=1.0)
    assert result.total == pytest.approx(1.1 + 0.5 * 0.6 + 2.0 * 1.0 - 0.25 + 1.0 * 0.5)


# --- gating -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "note"),
    [
        ("<think>x</think><answer>[]</answer>", "gated: no JSON object"),
        ("no json at all", "gated: no <answer>...</answer> pair"),
        ("", "gated: no <answer>...</answer> pair"),
    ],
)
def test_no_json_object_gives_zero(text, note):
    result = accuracy(text, one_object(4), boxes=[], sam_j=1.0)
    assert result.total == 0.0
    assert result.components == {"cumulated": 0.0} | dict.fromkeys(VIDEO_ACCURACY_TERMS[1:])
    assert result.notes == [note]


def test_an_answer_without_its_tags_earns_no_video_accuracy():
    """The released code reads the answer between <answer> tags: good JSON outside them is
    worth nothing but its missing format point."""
    good = json.dumps([moment("00:00.00", "00:00.00"), moment("00:01.00", "00:01.00")])
    tagged = accuracy(f"<think>x</think><answer>{good}</answer>", one_object(4), sam_j=1.0)
    assert tagged.total > 3
    for text in (f"<think>x</think>{good}", good, f"<answer>{good}"):
        result = accuracy(text, one_object(4), sam_j=1.0)
        assert result.total == 0.0 and result.notes == ["gated: no <answer>...</answer> pair"]


def test_every_object_of_an_answer_counts():
    """10 moments: the 9th and 10th count in cumulated, frame and overlap like the first 8
    (hand-computed); past system1.max_moments the answer is read as none, never as its head."""
    good = [moment(f"00:0{i}.00", f"00:0{i}.00") for i in range(8)]  # frames 0, 2, ..., 14
    whole = [moment("00:00.00", "00:09.50")] * 2  # all 20 frames, twice
    tgt = one_object(20)
    result = accuracy(answer(*good, *whole), tgt, boxes=[[]] * 4, a_g=0.0)
    # cumulated: 8 x (0.6 + 1.0) and 2 x (0.6 + 1.0), over 10
    assert result.components["cumulated"] == pytest.approx(1.6)
    # 20 unique frames: 0.4 (7 - 20); overlap: 2 x -0.2 x 19, and -0.5 per duplicate slot
    # (8 + 40 slots over 20 frames: 28 duplicates)
    assert result.components["frame"] == pytest.approx(0.4 * (7 - 20))
    assert result.components["overlap"] == pytest.approx(2 * -0.2 * 19 - 0.5 * 28)
    assert result.total < -15  # what writing whole-video moments after 8 good ones costs
    head = accuracy(answer(*good), tgt, boxes=[[]] * 4, a_g=0.0)
    assert head.total > result.total + 15
    # more objects than parse_answer's max_moments: read as no answer at all
    parsed = parse_answer(answer(*good, *whole), FrameTimes.uniform(20), max_moments=9)
    over = video_accuracy_reward(parsed, tgt, None)
    assert over.total == 0.0 and over.notes == ["gated: answer read in part (too_many_moments)"]


def test_no_valid_interval_counts_cumulated_only():
    text = answer(moment("00:01.00", "00:00.00"), moment("00:00.00", "00:09.00"))
    tgt = one_object(4)
    parsed = parse_answer(text, FrameTimes.uniform(4))
    for outcome in (None, System2Outcome(boxes=[], sam_j=0.9)):
        result = video_accuracy_reward(parsed, tgt, outcome)
        assert result.total == pytest.approx(0.4)
        assert result.components == {"cumulated": pytest.approx(0.4)} | dict.fromkeys(
            VIDEO_ACCURACY_TERMS[1:]
        )
        assert result.notes == ["gated: no valid interval"]


def test_no_valid_box_skips_sam2_and_keeps_the_other_terms():
    tgt = target([[4], [4], [0], [0]], gt_boxes=[[GT_A], [GT_A], [], []])
    result = accuracy(answer(moment("00:00.00", "00:00.50")), tgt, boxes=[[], []], sam_j=0.9)
    assert result.components["sam_j"] is None
    assert "sam2 skipped: no valid box" in result.notes
    assert result.components["box_iou"] == 0.0  # computed: missing boxes score 0
    assert result.components["saliency"] == pytest.approx(1.0)
    assert result.total == pytest.approx(1.6 + (0.8 - 0.2))


def test_sam2_skipped_when_a_g_is_zero_or_j_is_missing():
    text = answer(moment("00:00.00", "00:00.50"))
    off = accuracy(text, one_object(4), sam_j=0.9, a_g=0.0)
    assert off.components["sam_j"] is None
    assert "sam2 skipped: a_g is 0" in off.notes
    failed = accuracy(text, one_object(4), sam_j=None)
    assert failed.components["sam_j"] is None
    assert "sam2 skipped: no J (SAM2 not run or failed)" in failed.notes
    assert off.total == pytest.approx(failed.total)


def test_system2_not_run_leaves_its_terms_none():
    tgt = target([[4], [4], [0], [0]], gt_boxes=[[GT_A], [GT_A], [], []])
    parsed = parse_answer(answer(moment("00:00.00", "00:00.50")), FrameTimes.uniform(4))
    result = video_accuracy_reward(parsed=parsed, target=tgt, outcome=None)
    assert result.components["box_iou"] is None
    assert result.components["object_num_mismatch"] is None
    assert result.components["sam_j"] is None
    assert result.components["saliency"] == pytest.approx(1.0)
    assert result.total == pytest.approx(1.6 + 0.6)


# --- clipping ---------------------------------------------------------------------------------


def test_clipping_to_cumulated():
    # 8 frames covered: frame 0.4 * (7 - 8) = -0.4, overlap -1.4, no box, no SAM2
    text = answer(moment("00:00.00", "00:03.50"))
    tgt = target([[0]] * 8)
    plain = accuracy(text, tgt, boxes=[[], [], [], []])
    assert plain.total == pytest.approx(0.6 - 0.4 - 1.4)
    clipped = accuracy(text, tgt, boxes=[[], [], [], []], clip_to_cumulated=True)
    assert clipped.total == pytest.approx(0.6)
    assert "clipped to cumulated" in clipped.notes
    assert clipped.components == plain.components


def test_clipping_keeps_a_positive_rest():
    text = answer(moment("00:00.00", "00:00.50"))
    plain = accuracy(text, one_object(4), sam_j=0.5)
    clipped = accuracy(text, one_object(4), sam_j=0.5, clip_to_cumulated=True)
    assert clipped.total == pytest.approx(plain.total)
    assert clipped.total > clipped.components["cumulated"]
    assert "clipped to cumulated" not in clipped.notes


# --- consistency checks -----------------------------------------------------------------------


def test_mismatched_inputs_raise():
    parsed = parse_answer(answer(moment("00:00.00", "00:03.00")), FrameTimes.uniform(8))
    with pytest.raises(ValueError, match="covers frame 6 but the target has 4 frames"):
        video_accuracy_reward(parsed, one_object(4), None)
    with pytest.raises(ValueError, match="boxes for 1 keyframes"):
        video_accuracy_reward(parsed, one_object(8), System2Outcome(boxes=[[]]))
    with pytest.raises(ValueError, match="sam_j"):
        System2Outcome(boxes=[], sam_j=1.5)
    with pytest.raises(ValueError, match="a_g"):
        VideoAccuracyParams(a_g=float("inf"))


# --- RefAVS -----------------------------------------------------------------------------------


def test_refavs_box_reward():
    tgt = target([[1], [1]], gt_boxes=[[[0.0, 0.0, 10.0, 10.0]], [[0.0, 0.0, 1.0, 1.0]]])
    outcome = System2Outcome(boxes=[[[5.0, 0.0, 15.0, 10.0], [0.0, 0.0, 10.0, 10.0]]])
    result = refavs_box_reward(outcome, tgt)
    assert result.total == pytest.approx(50 / 150)  # the first box only
    assert result.components == {"box_iou": pytest.approx(50 / 150)}


def test_refavs_box_reward_empty_cases():
    tgt = target([[1]], gt_boxes=[[[0.0, 0.0, 10.0, 10.0]]])
    for outcome in (None, System2Outcome(boxes=[]), System2Outcome(boxes=[[]])):
        result = refavs_box_reward(outcome=outcome, target=tgt)
        assert (result.total, result.components) == (0.0, {"box_iou": None})
        assert result.notes == ["no predicted box on frame 0"]
    no_gt = refavs_box_reward(System2Outcome(boxes=[[[0.0, 0.0, 1.0, 1.0]]]), target([[0]]))
    assert (no_gt.total, no_gt.notes) == (0.0, ["no GT box on frame 0"])


# --- registry ---------------------------------------------------------------------------------


def test_registry_calls_every_reward_with_the_same_keywords():
    assert set(REWARDS) == {"format", "video_accuracy", "refavs_box"}
    tgt = target([[4], [4], [0], [0]], gt_boxes=[[GT_A], [GT_A], [], []])
    kwargs = {
        "parsed": parse_answer(answer(moment("00:00.00", "00:00.50")), FrameTimes.uniform(4)),
        "target": tgt,
        "outcome": System2Outcome(boxes=[[GT_A], [GT_A]], sam_j=1.0),
        "weights": VideoAccuracyParams(),
    }
    totals = {name: get_reward(name)(**kwargs).total for name in REWARDS}
    assert totals == pytest.approx(
        {"format": 1.0, "video_accuracy": 1.6 + 0.6 + 1.0 + 2.0, "refavs_box": 1.0}
    )
    assert get_reward("format") is format_reward


def test_registry_errors_and_system2_needs():
    assert not needs_system2("format")
    assert needs_system2("video_accuracy")
    assert needs_system2("refavs_box")
    message = "unknown reward 'accuracy'; valid names: format, refavs_box, video_accuracy"
    with pytest.raises(ValueError, match=message):
        get_reward("accuracy")
    with pytest.raises(ValueError, match="unknown reward"):
        needs_system2("accuracy")


# --- targets from masks -----------------------------------------------------------------------


def test_reward_target_from_masks():
    frame0 = np.zeros((2, 4, 5), bool)
    frame0[0, 1:3, 0:2] = True  # object 0: 4 pixels, box [0, 1, 2, 3]
    frame0[1, 2:4, 1:4] = True  # object 1: 6 pixels, box [1, 2, 4, 4]; overlaps object 0 once
    frame1 = np.zeros((2, 4, 5), bool)
    frame1[1, 0, 4] = True  # object 0 absent; object 1 one pixel, box [4, 0, 5, 1]
    tgt = RewardTarget.from_masks([frame0, frame1])
    assert tgt.num_frames == 2
    assert tgt.num_objects == 2
    assert tgt.object_areas == [[4, 6], [0, 1]]
    assert tgt.union_areas == [9, 1]
    assert tgt.gt_boxes == [[[0.0, 1.0, 2.0, 3.0], [1.0, 2.0, 4.0, 4.0]], [[4.0, 0.0, 5.0, 1.0]]]


def test_reward_target_from_masks_without_objects_and_bad_shapes():
    tgt = RewardTarget.from_masks([np.zeros((0, 3, 3), bool)] * 2)
    assert (tgt.object_areas, tgt.union_areas, tgt.gt_boxes) == ([[], []], [0, 0], [[], []])
    assert tgt.num_objects == 0
    with pytest.raises(ValueError, match="shape"):
        RewardTarget.from_masks([np.zeros((3, 3), bool)])
    with pytest.raises(ValueError, match="same number of objects"):
        RewardTarget.from_masks([np.zeros((1, 3, 3), bool), np.zeros((2, 3, 3), bool)])
    with pytest.raises(ValueError, match="at least one frame"):
        RewardTarget.from_masks([])


def test_unknown_reward_names_in_params_name_the_field():
    from omnir1.errors import ConfigError
    from omnir1.rl.rewards import check_reward_names

    check_reward_names(["format", "video_accuracy"])
    with pytest.raises(
        ConfigError, match=r"params\.yaml: rewards\.names: unknown reward\(s\) \['nope'\]"
    ):
        check_reward_names(["format", "nope"], "params.yaml")
