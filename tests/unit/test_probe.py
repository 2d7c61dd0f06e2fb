"""Hallucination probes: reading yes/no answers, the scores on hand-computed batches, and the
probes built from an objects table (every expected answer follows from the table)."""

import random

import pytest

from omnir1.eval.probe import (
    _object_probes,
    binary_scores,
    cmm_scores,
    read_yes_no,
)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("Yes.", True),
        ("no, it is not there", False),
        ("  YES", True),
        ("<think>yes, I hear it</think><answer>No</answer>", False),
        ("<think>it could be yes</think> no", False),
        ("<think>unterminated yes", None),
        ("<answer>yes", True),
        ("maybe", None),
        ("Noah", None),
        ("", None),
        ('[{"bbox_2d": [1, 2, 3, 4]}]', None),
    ],
)
def test_read_yes_no(text, said):
    assert read_yes_no(text) is said


def test_binary_scores_on_a_known_batch():
    expected = [True, True, True, False, False]
    said = [True, None, False, True, False]  # tp 1, fn 2 (one unanswered), fp 1, tn 1
    scores = binary_scores(expected, said)
    assert scores["n"] == 5
    assert scores["accuracy"] == pytest.approx(2 / 5)  # the unanswered probe is wrong
    assert scores["precision"] == pytest.approx(1 / 2)
    assert scores["recall"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
    assert scores["yes_ratio"] == pytest.approx(2 / 5)
    assert scores["answered"] == pytest.approx(4 / 5)
    assert binary_scores([], []) == {"n": 0}
    always_no = binary_scores([True, False], [False, False])
    assert always_no["precision"] == 0.0 and always_no["f1"] == 0.0
    assert always_no["yes_ratio"] == 0.0 and always_no["accuracy"] == 0.5


def test_cmm_scores():
    scores = cmm_scores([True, True, False, False, False], [True, False, True, False, False])
    assert scores["pa"] == pytest.approx(1 / 2)
    assert scores["hr"] == pytest.approx(2 / 3)  # resistance: "no" on absent objects
    assert scores["accuracy"] == pytest.approx(3 / 5)
    assert scores["yes_ratio"] == pytest.approx(2 / 5)
    assert (scores["present"], scores["absent"]) == (2, 3)
    assert cmm_scores([False], [False])["pa"] is None


def obj(color, shape, visible, sound):
    return {"color": color, "shape": shape, "size": "small", "visible": visible, "sound": sound}


OBJECTS = {
    "a": {
        "1": obj("red", "circle", True, "whistle"),
        "2": obj("blue", "square", True, None),
        "3": obj("green", "triangle", False, "hum"),  # heard, never seen
    },
    "b": {"1": obj("yellow", "star", True, "buzz")},
}


def test_probes_built_from_an_objects_table_have_the_true_answers():
    probes = _object_probes("revos", ["a"], OBJECTS, 20, random.Random(0), ["a", "b"])
    got = {(p.family, p.text, p.audio_from): p.expected for p in probes}
    a2v = "Is the object making the {} visible in the video?"
    v2a = "Does the {} make a sound in the audio?"
    assert got[("audio_to_video", a2v.format("whistle"), None)] is True
    assert got[("audio_to_video", a2v.format("hum"), None)] is False  # heard, source unseen
    assert got[("audio_to_video", a2v.format("buzz"), None)] is False  # not in this video
    assert got[("video_to_audio", v2a.format("red circle"), None)] is True
    assert got[("video_to_audio", v2a.format("blue square"), None)] is False  # seen, silent
    assert got[("swapped_audio", a2v.format("buzz"), "b")] is False
    assert got[("cmm", "the red circle", None)] is True
    assert got[("cmm", "the blue square", None)] is True
    absent = {t for (f, t, _), e in got.items() if f == "cmm" and not e}
    assert "the yellow star" in absent and "the red square" in absent
    # an object of the video, even one never visible, is neither present nor absent
    assert "the green triangle" not in absent and ("cmm", "the green triangle", None) not in got
    assert all(p.video_id == "a" and p.dataset == "revos" for p in probes)


def test_probe_draws_are_bounded_and_seeded():
    one = _object_probes("revos", ["a", "b"], OBJECTS, 1, random.Random(7))
    again = _object_probes("revos", ["a", "b"], OBJECTS, 1, random.Random(7))
    assert one == again
    per_key: dict = {}
    for p in one:
        key = (p.video_id, p.family, p.expected, p.audio_from)
        per_key[key] = per_key.get(key, 0) + 1
    # at most one per (video, family, answer) and source list ("no" audio_to_video has two)
    assert all(n <= 2 for n in per_key.values())
