"""The total parsers of System 1's answers and System 2's boxes: exact results on good output,
a reason code (and never an exception) on anything else."""

from __future__ import annotations

import json
import random

import pytest

from omnir1.systems.parsing import (
    ANSWER_REASONS,
    BOX_ITEM_REASONS,
    BOX_REASONS,
    MAX_BOX_PROBLEMS,
    MOMENT_REASONS,
    FrameTimes,
    ParsedAnswer,
    ParsedBoxes,
    parse_answer,
    parse_boxes,
)


def moment(start: object, end: object, description: object = "the dog", **extra) -> dict:
    return {"start_time": start, "end_time": end, "description": description, **extra}


def answer(*moments: object, think: str = "The dog is clearest here.") -> str:
    return f"<think>{think}</think><answer>{json.dumps(list(moments))}</answer>"


def checked(result: ParsedAnswer) -> ParsedAnswer:
    """Invariants of every answer result: known codes only, strict-JSON-serialisable dict,
    keyframes consistent with the valid moments."""
    assert set(result.problems) <= set(ANSWER_REASONS)
    assert len(result.problems) == len(set(result.problems))
    for m in result.moments:
        assert set(m.problems) <= set(MOMENT_REASONS)
        assert m.valid == (not m.problems)
        assert bool(m.frames) == m.valid
    json.dumps(result.to_dict(), allow_nan=False)
    assert result.valid_moments == sum(m.valid for m in result.moments)
    assert result.keyframes == sorted(set(result.keyframes))
    assert len(result.keyframes) == len(result.keyframe_descriptions)
    assert len(result.moments) + result.num_dropped == result.num_objects
    assert ("no_valid_moment" in result.problems) == (result.valid_moments == 0)
    return result


def checked_boxes(result: ParsedBoxes, width: int, height: int) -> ParsedBoxes:
    assert len(result.problems) <= MAX_BOX_PROBLEMS
    for problem in result.problems:
        if problem.startswith("item "):
            assert problem.split(": ")[1] in BOX_ITEM_REASONS
        else:
            assert problem in BOX_REASONS
    assert len(result.boxes) == len(result.labels)
    for x0, y0, x1, y1 in result.boxes:
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    json.dumps(result.to_dict(), allow_nan=False)
    return result


# --- System 1: well-formed answers ---------------------------------------------------------


def test_well_formed_answer():
    text = answer(
        moment("00:01.00", "00:02.00", "the dog jumps"),  # frames 2..4
        moment("00:01.50", "00:03.00", "the dog lands"),  # frames 3..6
        moment("00:06.00", "00:07.50", "the dog sits"),  # frames 12..15
        moment("00:07.00", "00:08.00", "the dog sleeps"),  # frames 14..15 (end at duration)
    )
    result = checked(parse_answer(text, FrameTimes.uniform(16)))
    assert result.format_ok and result.answer_found and result.json_found
    assert result.problems == []
    assert result.num_objects == 4 and result.valid_moments == 4 and result.num_dropped == 0
    assert result.keyframes == [2, 3, 4, 5]
    assert result.keyframe_descriptions == [
        "the dog jumps",
        "the dog jumps",
        "the dog jumps",
        "the dog lands",
    ]
    assert [m.frames for m in result.moments] == [
        [2, 3, 4],
        [3, 4, 5, 6],
        [12, 13, 14, 15],
        [14, 15],
    ]
    first = result.moments[0]
    assert (first.start_s, first.end_s, first.description) == (1.0, 2.0, "the dog jumps")
    assert result.duplicate_frames == 4  # frames 3, 4, 14 and 15 are covered twice


@pytest.mark.parametrize(
    ("time", "num_frames", "frame"),
    [
        ("00:00", 8, 0),
        ("00:00.49", 8, 0),
        ("00:00.50", 8, 1),
        ("00:01.99", 8, 3),
        ("00:02.00", 8, 4),
        ("00:03.5", 8, 7),  # ".5" is half a second
        ("00:03.05", 8, 6),  # ".05" is five hundredths
        ("00:04.00", 8, 7),  # the end of the video falls on the last frame
        ("1:00.00", 200, 120),
        ("00:00.00", 1, 0),
    ],
)
def test_frame_of_time(time, num_frames, frame):
    result = checked(parse_answer(answer(moment(time, time)), FrameTimes.uniform(num_frames)))
    assert result.moments[0].frames == [frame]
    assert result.keyframes == [frame]


@pytest.mark.parametrize(
    ("time", "seconds"),
    [("00:01.5", 1.5), ("00:01.05", 1.05), ("00:01.50", 1.5), ("01:02", 62.0), ("10:59.9", 659.9)],
)
def test_time_values(time, seconds):
    result = parse_answer(answer(moment(time, time)), FrameTimes.uniform(2000))
    assert result.moments[0].start_s == pytest.approx(seconds)


def test_keyframes_cap_at_k0_and_lowest_first():
    text = answer(moment("00:05.00", "00:05.50", "late"), moment("00:00.00", "00:04.00", "long"))
    result = checked(parse_answer(text, FrameTimes.uniform(20)))
    assert result.keyframes == [0, 1, 2, 3]
    assert result.keyframe_descriptions == ["long"] * 4
    assert checked(parse_answer(text, FrameTimes.uniform(20), max_keyframes=2)).keyframes == [0, 1]
    assert checked(parse_answer(text, FrameTimes.uniform(20), max_keyframes=0)).keyframes == []
    assert checked(parse_answer(text, FrameTimes.uniform(20), max_keyframes=100)).keyframes == [
        *range(9),
        10,
        11,
    ]


def test_keyframes_span_disjoint_intervals_in_frame_order():
    text = answer(moment("00:05.00", "00:05.00", "c"), moment("00:01.00", "00:01.50", "a"))
    result = checked(parse_answer(text, FrameTimes.uniform(20)))
    assert result.keyframes == [2, 3, 10]
    assert result.keyframe_descriptions == ["a", "a", "c"]


def test_keyframe_description_from_first_valid_covering_interval():
    text = answer(
        moment("00:00.00", "00:05.00", None),  # invalid: covers frame 0 but does not count
        moment("00:01.50", "00:03.00", "first in answer order"),  # frames 3..6
        moment("00:00.00", "00:02.00", "lower frames"),  # frames 0..4
    )
    result = checked(parse_answer(text, FrameTimes.uniform(20)))
    assert result.keyframes == [0, 1, 2, 3]
    assert result.keyframe_descriptions == [
        "lower frames",
        "lower frames",
        "lower frames",
        "first in answer order",
    ]
    assert result.valid_moments == 2


def test_duplicate_frames():
    same = moment("00:01.00", "00:02.00")  # frames 2..4
    assert (
        checked(parse_answer(answer(same, same, same), FrameTimes.uniform(10))).duplicate_frames
        == 6
    )
    touching = [moment("00:00.00", "00:01.00"), moment("00:01.50", "00:02.00")]  # 0..2, 3..4
    assert checked(parse_answer(answer(*touching), FrameTimes.uniform(10))).duplicate_frames == 0
    nested = [moment("00:00.00", "00:04.00"), moment("00:01.00", "00:01.50")]  # 0..8, 2..3
    assert checked(parse_answer(answer(*nested), FrameTimes.uniform(10))).duplicate_frames == 2


def test_description_is_stripped_and_unknown_keys_reported():
    text = answer(moment("00:01", "00:02", "  a dog \n", confidence=0.9, bbox=[1, 2]))
    result = checked(parse_answer(text, FrameTimes.uniform(10)))
    m = result.moments[0]
    assert m.valid and m.description == "a dog"
    assert m.unknown_keys == ["confidence", "bbox"]
    assert m.raw == moment("00:01", "00:02", "  a dog \n", confidence=0.9, bbox=[1, 2])


@pytest.mark.parametrize(
    ("text", "format_ok"),
    [
        ("<think>a</think><answer>[]</answer>", True),
        ("  \n<think>a\nb</think>\n\n<answer>\n[]\n</answer>\n", True),
        ("<think></think><answer></answer>", True),
        ("<think>a</think><answer>[]</answer> trailing", False),
        ("preamble <think>a</think><answer>[]</answer>", False),
        ("<answer>[]</answer>", False),
        ("<think>a</think>", False),
        ("<think>a</think>x<answer>[]</answer>", False),
    ],
)
def test_format_ok(text, format_ok):
    assert checked(parse_answer(text, FrameTimes.uniform(4))).format_ok is format_ok


# --- System 1: reason codes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "problems"),
    [
        (moment(None, "00:01"), ["bad_start_time"]),
        (moment(1.0, "00:01"), ["bad_start_time"]),
        (moment("00:00", 2), ["bad_end_time"]),
        ({"end_time": "00:01", "description": "x"}, ["bad_start_time"]),
        ({"start_time": "00:01", "description": "x"}, ["bad_end_time"]),
        (moment("-00:01", "00:01"), ["bad_start_time"]),
        (moment("00:60", "01:00"), ["bad_start_time"]),
        (moment("000:01", "00:02"), ["bad_start_time"]),
        (moment("00:01.123", "00:02"), ["bad_start_time"]),
        (moment("00:01.", "00:02"), ["bad_start_time"]),
        (moment("0:1", "00:02"), ["bad_start_time"]),
        (moment("00:01\n", "00:02"), ["bad_start_time"]),
        (moment(" 00:01", "00:02"), ["bad_start_time"]),
        (moment("٠٠:٠١", "00:02"), ["bad_start_time"]),  # Arabic-Indic digits are not ASCII
        (moment("1.5s", "2.0s"), ["bad_start_time", "bad_end_time"]),
        (moment(True, [1]), ["bad_start_time", "bad_end_time"]),
        (moment("00:01", "00:02", ""), ["bad_description"]),
        (moment("00:01", "00:02", "   \n"), ["bad_description"]),
        (moment("00:01", "00:02", 7), ["bad_description"]),
        (moment("00:01", "00:02", ["a dog"]), ["bad_description"]),
        ({"start_time": "00:01", "end_time": "00:02"}, ["bad_description"]),
        (moment("00:03", "00:02"), ["reversed"]),
        (moment("00:04.01", "00:04.01"), ["beyond_duration"]),
        (moment("00:01", "00:05"), ["beyond_duration"]),
        (moment("00:06", "00:05"), ["reversed", "beyond_duration"]),
        ({}, ["bad_start_time", "bad_end_time", "bad_description"]),
    ],
)
def test_moment_problems(item, problems):
    result = checked(parse_answer(answer(item), FrameTimes.uniform(8)))  # 8 frames: 4 s
    m = result.moments[0]
    assert m.problems == problems
    assert not m.valid and m.frames == []
    assert result.problems == ["no_valid_moment"]
    assert result.keyframes == [] and result.keyframe_descriptions == []


def test_end_exactly_at_duration_is_valid():
    result = checked(parse_answer(answer(moment("00:03.50", "00:04.00")), FrameTimes.uniform(8)))
    assert result.moments[0].frames == [7]


def test_lone_surrogate_description_is_bad():
    text = '<think></think><answer>[{"start_time": "00:00", "end_time": "00:01", '
    text += '"description": "dog \\ud800"}]</answer>'
    result = checked(parse_answer(text, FrameTimes.uniform(4)))
    assert result.moments[0].problems == ["bad_description"]


def test_every_moment_is_read_up_to_max_moments_and_none_past_it():
    items = [moment(f"00:0{i}", f"00:0{i}", f"m{i}") for i in range(10)]
    result = checked(parse_answer(answer(*items), FrameTimes.uniform(20)))
    assert result.num_objects == 10 and result.num_dropped == 0 and result.problems == []
    assert [m.description for m in result.moments] == [f"m{i}" for i in range(10)]
    over = checked(parse_answer(answer(*items), FrameTimes.uniform(20), max_moments=9))
    assert over.problems == ["too_many_moments", "no_valid_moment"]
    assert over.num_objects == 10 and over.num_dropped == 10 and over.moments == []


def test_not_an_object_items_skipped():
    text = "<think></think><answer>" + json.dumps([1, "x", None, [], moment("00:00", "00:01")])
    result = checked(parse_answer(text + "</answer>", FrameTimes.uniform(4)))
    assert result.problems == ["not_an_object"]
    assert result.num_objects == 1 and result.valid_moments == 1


def test_nan_and_infinity_are_invalid_values():
    text = '<think></think><answer>[{"start_time": NaN, "end_time": Infinity, "description": '
    text += '"x"}, {"start_time": "00:00", "end_time": "00:01", "description": -Infinity}]'
    result = checked(parse_answer(text + "</answer>", FrameTimes.uniform(4)))
    assert result.moments[0].problems == ["bad_start_time", "bad_end_time"]
    assert result.moments[1].problems == ["bad_description"]
    as_dict = result.to_dict()
    assert as_dict["moments"][0]["raw"] is None  # not strict JSON: dropped
    assert as_dict["moments"][1]["raw"] is None


def test_to_dict_keeps_raw():
    result = checked(
        parse_answer(answer(moment("00:00", "00:01", "x", extra={"k": [1]})), FrameTimes.uniform(4))
    )
    as_dict = json.loads(json.dumps(result.to_dict()))
    assert as_dict["moments"][0]["raw"] == moment("00:00", "00:01", "x", extra={"k": [1]})
    assert as_dict["keyframes"] == [0, 1, 2]
    assert as_dict["moments"][0]["unknown_keys"] == ["extra"]


GOOD = json.dumps(moment("00:00.00", "00:01.00", "a dog"))
DEEP_LIST = "[" * 10_000
DEEP_OBJECT = '{"a":' * 10_000 + "1" + "}" * 10_000
MANY = "[" + ",".join([GOOD] * 5000) + "]"

# (id, text, reasons that must be reported, valid moments)
CORPUS = [
    ("empty", "", ["missing_answer_tags", "no_json"], 0),
    ("whitespace", " \n\t ", ["missing_answer_tags", "no_json"], 0),
    ("garbage", "I think the dog is on the left.", ["missing_answer_tags", "no_json"], 0),
    ("missing tags, after think", f"<think>{{x}}</think> {GOOD}", ["missing_answer_tags"], 1),
    ("no tags, bare json", f"[{GOOD}]", ["missing_answer_tags"], 1),
    ("unclosed answer", f"<think>t</think><answer>[{GOOD}]", ["missing_answer_tags"], 1),
    ("unclosed think", f"<think>t [{GOOD}]", ["missing_answer_tags"], 1),
    ("closing tag only", f"<think>t</think>[{GOOD}]</answer>", ["missing_answer_tags"], 1),
    ("empty answer", "<think>t</think><answer></answer>", ["no_json"], 0),
    ("empty list", "<think>t</think><answer>[]</answer>", [], 0),
    ("single object", f"<answer>{GOOD}</answer>", [], 1),
    ("comma separated", f"<answer>{GOOD}, {GOOD}</answer>", [], 2),
    ("newline separated", f"<answer>{GOOD}\n{GOOD}\n{GOOD}</answer>", [], 3),
    ("trailing comma in list", f"<answer>[{GOOD}, {GOOD},]</answer>", [], 2),
    ("trailing comma in object", f'<answer>[{GOOD}, {{"a": 1,}}]</answer>',
     ["invalid_json_object"], 1),
    ("prose around", f"<answer>Moments: {GOOD} and also {GOOD}.</answer>", [], 2),
    ("unclosed list", f"<answer>[{GOOD}, {GOOD}</answer>", [], 2),
    ("unclosed object", f'<answer>{{"start_time": "00:00", {GOOD}</answer>', [], 1),
    ("single quotes", "<answer>[{'start_time': '00:00'}]</answer>", ["invalid_json_object"], 0),
    ("mismatched brackets", f"<answer>[{GOOD}}}]]]</answer>", [], 1),
    ("braces in strings", '<answer>[{"start_time": "00:00", "end_time": "00:01", '
     '"description": "a } tricky { dog \\" ]"}]</answer>', [], 1),
    ("deep list", DEEP_LIST, ["too_deep", "no_json"], 0),
    ("deep object", DEEP_OBJECT, ["too_deep", "no_json"], 0),
    ("deep in answer", f"<answer>{DEEP_OBJECT}</answer>", ["too_deep", "no_json"], 0),
    ("deep object within max_chars", '{"a":' * 1000 + "1" + "}" * 1000, ["too_deep", "no_json"], 0),
    ("deep recursion bait", "[" * 1500 + "]" * 1500, ["too_deep", "no_json"], 0),
    # the pre-scan ignores quotes outside brackets, so a "[" string hides the depth from it;
    # the check after loading still refuses the value
    ("depth hidden from scan", f'<answer>"[", {"[" * 30 + "]" * 30}</answer>',
     ["too_deep", "no_json"], 0),
    ("deep unclosed object", '{"a":' * 10_000, ["too_deep", "no_json"], 0),
    ("deep beside good", f"<answer>[{GOOD}, {'[' * 30 + ']' * 30}]</answer>", ["too_deep"], 1),
    ("deep object beside good", f"<answer>{GOOD}\n{DEEP_OBJECT}</answer>", ["too_deep"], 1),
    ("depth 20 is fine", f'<answer>{{"start_time": "00:00", "end_time": "00:01", "description": '
     f'"x", "k": {"[" * 19 + "]" * 19}}}</answer>', [], 1),
    ("1 MB", "<think>" + "x" * 1_000_000 + "</think><answer>[]</answer>",
     ["too_long", "no_json"], 0),
    ("5000 moments", f"<answer>{MANY}</answer>", ["too_long", "too_many_moments"], 0),
    ("NaN", '<answer>[{"start_time": NaN}]</answer>', ["no_valid_moment"], 0),
    ("huge float", '<answer>[{"start_time": 1e999}]</answer>', ["no_valid_moment"], 0),
    ("huge int", "<answer>[" + "9" * 5000 + "]</answer>", ["no_json"], 0),
    ("scalar", "<answer>42</answer>", ["not_an_object"], 0),
    ("string", '<answer>"00:01"</answer>', ["not_an_object"], 0),
    ("null", "<answer>null</answer>", ["not_an_object"], 0),
    ("list of lists", f"<answer>[[{GOOD}]]</answer>", ["not_an_object"], 0),
    ("unicode", '<think>狗在哪里？🐕</think><answer>[{"start_time": "00:00", "end_time": '
     '"00:01", "description": "跳起来的狗 🐕"}]</answer>', [], 1),
    ("nul and controls", "<answer>\x00\x01[\x00]\ufeff</answer>", ["no_json"], 0),
    ("tags inside json", f"<answer>[{GOOD}, <answer>]</answer>", [], 1),
    ("only brackets", "<answer>}}}]]]{{{[[[</answer>", ["no_json"], 0),
    ("escaped quotes", '<answer>{"a": "\\\\"}\\\\\\ {"b": "\\" {"}</answer>',
     ["no_valid_moment"], 0),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "reasons", "valid"), [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS]
)
def test_malformed_answers(text, reasons, valid):
    result = checked(parse_answer(text, FrameTimes.uniform(8)))
    assert set(reasons) <= set(result.problems), result.problems
    assert result.valid_moments == valid
    if valid:
        assert result.keyframes == [0, 1, 2]
        assert result.keyframe_descriptions[0]


def test_brackets_and_escapes_inside_strings_are_text():
    text = '<answer>{"a": "\\\\"}\\\\\\ {"b": "\\" {", "c": "]]"} x {"d": "}"}</answer>'
    result = checked(parse_answer(text, FrameTimes.uniform(4)))
    assert [m.raw for m in result.moments] == [{"a": "\\"}, {"b": '" {', "c": "]]"}, {"d": "}"}]


def test_5000_moments_read_in_full_when_allowed():
    result = checked(
        parse_answer(
            f"<think></think><answer>{MANY}</answer>", FrameTimes.uniform(8), max_chars=10**6
        )
    )
    assert result.problems == ["too_many_moments", "no_valid_moment"]
    assert result.num_objects == 5000 and result.num_dropped == 5000
    read = checked(
        parse_answer(
            f"<think></think><answer>{MANY}</answer>",
            FrameTimes.uniform(8),
            max_chars=10**6,
            max_moments=5000,
        )
    )
    assert read.problems == [] and len(read.moments) == 5000


def test_not_a_string():
    for value in (None, 3, b"<answer>[]</answer>", ["x"]):
        result = checked(parse_answer(value, FrameTimes.uniform(4)))  # type: ignore[arg-type]
        assert result.problems[0] == "not_a_string"


def test_too_long_reads_the_prefix():
    text = answer(moment("00:00", "00:01")) + " " * 100
    result = checked(parse_answer(text, FrameTimes.uniform(4), max_chars=len(text) - 100))
    assert result.problems == ["too_long"] and result.valid_moments == 1 and result.format_ok


def test_random_bytes_never_raise():
    rng = random.Random(0)
    alphabet = [*'{}[]":,\\ 0123456789.-eEaNIfinty<>/answerthk', "NaN", "\\u", "\n"]
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 120)))
        checked(parse_answer(text, FrameTimes.uniform(rng.randrange(1, 40))))
        checked_boxes(parse_boxes(text, 64, 48), 64, 48)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"frame_times": 4},
        {"frame_times": [0.0, 0.5]},
        {"frame_times": FrameTimes.uniform(4), "max_keyframes": -1},
        {"frame_times": FrameTimes.uniform(4), "max_moments": -1},
        {"frame_times": FrameTimes.uniform(4), "max_chars": -1},
    ],
)
def test_programming_errors_raise(kwargs):
    with pytest.raises(ValueError):
        parse_answer("<answer>[]</answer>", **kwargs)


@pytest.mark.parametrize(
    ("times", "duration"),
    [((), 1.0), ((0.0, 1.0, 0.5), 2.0), ((0.0, float("nan")), 2.0), ((0.0,), 0.0), ((-1.0,), 1.0)],
)
def test_impossible_frame_times_raise(times, duration):
    with pytest.raises(ValueError):
        FrameTimes(times, duration)
    with pytest.raises(ValueError):
        FrameTimes.uniform(0)


# --- System 2: boxes -----------------------------------------------------------------------


def test_fenced_json_boxes():
    text = (
        "Sure.\n```json\n"
        '[{"bbox_2d": [10, 20, 110, 220], "label": "dog"}, {"bbox_2d": [0.5, 1.5, 2, 3]}]\n'
        "```\nAnything after the fence is ignored: [1, 2, 3, 4]"
    )
    result = checked_boxes(parse_boxes(text, 640, 480), 640, 480)
    assert result.boxes == [[10.0, 20.0, 110.0, 220.0], [0.5, 1.5, 2.0, 3.0]]
    assert result.labels == ["dog", None]
    assert result.problems == [] and result.json_found
    assert result.num_items == 2 and result.num_dropped == 0
    assert all(isinstance(v, float) for box in result.boxes for v in box)


@pytest.mark.parametrize(
    "text",
    [
        '```json\n{"bbox_2d": [1, 2, 3, 4], "label": "a"}\n```',
        '```\n[{"bbox_2d": [1, 2, 3, 4], "label": "a"}]\n```',
        '```json [{"bbox_2d": [1, 2, 3, 4], "label": "a"}]```',
        '```[{"bbox_2d": [1, 2, 3, 4], "label": "a"}]```',
        '```json\n[{"bbox_2d": [1, 2, 3, 4], "label": "a"}]',  # unclosed fence
        '<think>[9, 9, 9, 9]</think><answer>[{"bbox_2d": [1, 2, 3, 4], "label": "a"}]</answer>',
        '[{"bbox_2d": [1, 2, 3, 4], "label": "a"},]',
        '{"bbox_2d": [1, 2, 3, 4], "label": "a"}',
        'The box: {"bbox_2d": [1, 2, 3, 4], "label": "a"}.',
    ],
)
def test_box_containers(text):
    result = checked_boxes(parse_boxes(text, 10, 10), 10, 10)
    assert result.boxes == [[1.0, 2.0, 3.0, 4.0]] and result.labels == ["a"]


def test_bare_boxes():
    assert parse_boxes("[1, 2, 3, 4]", 10, 10).boxes == [[1.0, 2.0, 3.0, 4.0]]
    result = checked_boxes(parse_boxes("```\n[[1, 2, 3, 4], [5, 5, 6, 6]]\n```", 10, 10), 10, 10)
    assert result.boxes == [[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 6.0, 6.0]]
    assert result.labels == [None, None]


def test_clipping_is_a_note():
    text = '[{"bbox_2d": [-5, 10, 700, 20.5], "label": "dog"}, {"bbox_2d": [-0.0, 0, 1, 1]}]'
    result = checked_boxes(parse_boxes(text, 640, 480), 640, 480)
    assert result.boxes == [[0.0, 10.0, 640.0, 20.5], [0.0, 0.0, 1.0, 1.0]]
    assert result.problems == ["item 0: clipped"]
    assert str(result.boxes[1][0]) == "0.0"  # not -0.0


@pytest.mark.parametrize(
    "bbox",
    [[5, 5, 5, 8], [5, 5, 8, 5], [8, 5, 5, 8], [5, 8, 8, 5], [700, 10, 800, 20], [-9, 0, -1, 5]],
)
def test_degenerate_boxes_are_dropped(bbox):
    result = checked_boxes(parse_boxes(json.dumps([{"bbox_2d": bbox}]), 640, 480), 640, 480)
    assert result.boxes == []
    assert result.problems == ["no_valid_box", "item 0: degenerate"]


@pytest.mark.parametrize(
    "coords",
    [
        '["1", "2", "3", "4"]',
        "[true, 0, 5, 5]",
        "[0, 0, 5, false]",
        "[1, 2, 3]",
        "[1, 2, 3, 4, 5]",
        "[NaN, 0, 5, 5]",
        "[0, 0, Infinity, 5]",
        "[0, 0, -Infinity, 5]",
        "[0, 0, 1e999, 5]",
        "[0, 0, " + "9" * 400 + ", 5]",  # an int beyond float range
        "null",
        '"1, 2, 3, 4"',
        '{"x0": 1}',
        "[[1], 2, 3, 4]",
    ],
)
def test_bad_coordinates(coords):
    result = checked_boxes(parse_boxes(f'[{{"bbox_2d": {coords}}}]', 640, 480), 640, 480)
    assert result.boxes == []
    assert result.problems == ["no_valid_box", "item 0: bad_coordinates"]


def test_item_reasons_and_labels():
    text = json.dumps(
        [
            {"box": [1, 2, 3, 4]},
            "dog",
            7,
            [1, 2],
            {"bbox_2d": [1, 2, 3, 4], "label": 5},
            {"bbox_2d": [1, 2, 3, 4], "label": "ok"},
        ]
    )
    result = checked_boxes(parse_boxes(text, 10, 10), 10, 10)
    assert result.problems == [
        "item 0: no_bbox_2d",
        "item 1: not_an_object",
        "item 2: not_an_object",
        "item 3: not_an_object",
    ]
    assert result.labels == [None, "ok"] and result.num_items == 6


def test_too_many_boxes():
    many = "[" + ",".join('{"bbox_2d": [1, 2, 30, 40]}' for _ in range(5000)) + "]"
    result = checked_boxes(parse_boxes(many, 100, 100, max_chars=10**6), 100, 100)
    assert len(result.boxes) == 16 and result.num_items == 5000 and result.num_dropped == 4984
    assert result.problems == ["too_many_boxes"]
    truncated = checked_boxes(parse_boxes(many, 100, 100), 100, 100)
    assert truncated.problems == ["too_long", "too_many_boxes"]
    assert len(truncated.boxes) == 16 and truncated.num_dropped == truncated.num_items - 16
    assert checked_boxes(parse_boxes(many, 100, 100, max_boxes=0), 100, 100).boxes == []


def test_box_problems_are_capped_with_top_level_first():
    text = "[" + ",".join(["[1, 2, 3]"] * 200 + ['{"bbox_2d": [1, 2, 3, 4]}'] * 20) + "]"
    result = checked_boxes(parse_boxes(text, 10, 10, max_boxes=2), 10, 10)
    assert len(result.problems) == MAX_BOX_PROBLEMS
    assert result.problems[0] == "too_many_boxes"
    assert result.problems[1] == "item 0: not_an_object"
    assert result.num_dropped == 18


@pytest.mark.parametrize(
    ("text", "reasons"),
    [
        ("", ["no_json", "no_valid_box"]),
        ("no boxes here", ["no_json", "no_valid_box"]),
        ("[]", ["no_valid_box"]),
        ("```json\n```", ["no_json", "no_valid_box"]),
        ("[" * 10_000, ["too_deep", "no_json", "no_valid_box"]),
        (
            '{"bbox_2d":' * 10_000 + "[1,2,3,4]" + "}" * 10_000,
            ["too_long", "too_deep", "no_json", "no_valid_box"],
        ),
        (
            '{"bbox_2d":' * 1000 + "[1,2,3,4]" + "}" * 1000,  # closed, within max_chars
            ["too_deep", "no_json", "no_valid_box"],
        ),
        ('[{"bbox_2d": [1, 2, 3, 4],}]', ["invalid_json_object", "no_json", "no_valid_box"]),
        ("x" * 1_000_000, ["too_long", "no_json", "no_valid_box"]),
        ("```json\n" + "{[" * 5000 + "\n```", ["too_deep", "no_json", "no_valid_box"]),
        ('[{"bbox_2d": [1, 2, 3, 4], "label": "狗 🐕"}]', []),
    ],
)
def test_malformed_boxes(text, reasons):
    result = checked_boxes(parse_boxes(text, 640, 480), 640, 480)
    assert [p for p in result.problems if not p.startswith("item ")] == reasons


def test_boxes_not_a_string_and_bad_sizes():
    assert parse_boxes(None, 10, 10).problems[0] == "not_a_string"  # type: ignore[arg-type]
    for width, height in ((0, 10), (10, -1), (10.0, 10)):
        with pytest.raises(ValueError):
            parse_boxes("[]", width, height)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        parse_boxes("[]", 10, 10, max_boxes=-1)
