"""Parsers for what the two systems write. Model output is untrusted data, so both are total.

System 1 (a video LLM shown T frames sampled at known times: 2 fps, or spread evenly over a clip
too long for `system1.max_frames` at 2 fps) completes

    <think>...</think><answer>[{"start_time": "mm:ss.ff", "end_time": "mm:ss.ff",
                                "description": "..."}, ...]</answer>

with moments where the target is clear. `parse_answer` reads them:
- a time is "mm:ss.ff" (1-2 digit minutes, 2 digit seconds, 0-2 fraction digits read as a
  decimal fraction: ".5" is 0.5 s, ".05" is 0.05 s); nothing else is a time;
- the clip's frames were sampled at times t_0 = 0 <= t_1 <= ... <= t_{T-1} and it lasts D
  seconds (`FrameTimes`; all in hundredths, as the prompt writes them); time t falls on the last
  frame sampled at or before t, and a valid moment ends by D and covers frame(start) ..
  frame(end) inclusive (at 2 fps: frame min(int(2t), T - 1), D = T / 2);
- the keyframes are the `max_keyframes` lowest frames covered by valid moments, each described
  by the first valid moment (in answer order) that covers it.

System 2's grounder answers boxes in the Qwen2.5-VL convention: a JSON list of
`{"bbox_2d": [x0, y0, x1, y1], "label": "..."}` in absolute pixels of the image it was shown,
possibly in a ```json fence or in <answer>...</answer>. `parse_boxes` reads them, clipped to the
image.

Totality: any text gives a result, never an exception; every defect is a reason code in
`problems` (the codes are listed in the *_REASONS tuples below). Only arguments that come from
our own code (frame count, image size, limits) raise ValueError when they are impossible.

JSON extraction (shared): the whole body, then the body wrapped in [...] (objects separated by
commas), then every outermost balanced {...} on its own (objects separated by newlines, trailing
commas, prose around them). Nesting is measured by an iterative scan before anything is loaded
(too deep: not loaded) and again, iteratively, after (a top-level string can hide brackets from
the scan); json.loads's own RecursionError is caught as well. Nothing here recurses.
NaN, Infinity and floats that overflow load as a marker that is never a valid value.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

MAX_DEPTH = 20  # deepest JSON nesting accepted; a moment list needs 2, a box list 3
MAX_BOX_PROBLEMS = 50  # ParsedBoxes.problems stays bounded whatever the model wrote

ANSWER_REASONS = (
    "not_a_string",  # the completion was not a str at all
    "too_long",  # only the first max_chars characters were read
    "missing_answer_tags",  # no <answer>...</answer> pair; JSON was looked for leniently
    "too_deep",  # JSON (or one object) nested deeper than MAX_DEPTH, not loaded
    "invalid_json_object",  # a balanced {...} that is not JSON, skipped
    "no_json",  # no JSON value found
    "not_an_object",  # a JSON value where a moment object belongs, skipped
    "too_many_moments",  # more than max_moments objects: none read (no video accuracy)
    "no_valid_moment",  # nothing usable: no keyframes
)
MOMENT_REASONS = (
    "bad_start_time",
    "bad_end_time",
    "bad_description",
    "reversed",
    "beyond_duration",
)
BOX_REASONS = (
    "not_a_string",
    "too_long",
    "too_deep",
    "invalid_json_object",
    "no_json",
    "too_many_boxes",  # valid boxes after the first max_boxes, dropped
    "no_valid_box",
)
# Per item, reported as "item {index}: {code}" with the 0-based index in the JSON list.
BOX_ITEM_REASONS = ("not_an_object", "no_bbox_2d", "bad_coordinates", "degenerate", "clipped")

_KNOWN_KEYS = ("start_time", "end_time", "description")
_FORMAT = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
# ASCII digits only: str.isdigit-style Unicode digits are not part of the format
_TIME = re.compile(r"(\d{1,2}):([0-5]\d)(?:\.(\d{1,2}))?", re.ASCII)
_TOKEN = re.compile(r'[{}\[\]"\\]')  # the only characters the nesting scan cares about
# The language tag has no brackets, so "```[...]```" on one line is a fence around the list.
# An unclosed fence runs to the end of the text.
_FENCE = re.compile(r"```[A-Za-z0-9_+-]*(.*?)(?:```|\Z)", re.DOTALL)
_ANSWER_OPEN, _ANSWER_CLOSE, _THINK_CLOSE = "<answer>", "</answer>", "</think>"


@dataclass
class Moment:
    """One JSON object of System 1's answer, checked.

    `start_s`, `end_s` and `description` are None when unusable; `frames` is empty unless the
    moment is valid. Unknown keys are reported but do not make a moment invalid.
    """

    raw: dict[str, Any] | None
    start_s: float | None = None
    end_s: float | None = None
    description: str | None = None
    frames: list[int] = field(default_factory=list)
    valid: bool = False
    problems: list[str] = field(default_factory=list)
    unknown_keys: list[str] = field(default_factory=list)


@dataclass
class ParsedAnswer:
    """System 1's completion, read. `problems` holds top-level codes (ANSWER_REASONS), once each;
    per-moment codes are in `moments[i].problems`."""

    format_ok: bool = False
    answer_found: bool = False
    json_found: bool = False
    num_objects: int = 0  # JSON objects found
    num_dropped: int = 0  # objects not read (all of them when over max_moments)
    valid_moments: int = 0
    duplicate_frames: int = 0  # covered frame slots minus unique covered frames
    keyframes: list[int] = field(default_factory=list)
    keyframe_descriptions: list[str] = field(default_factory=list)
    moments: list[Moment] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (strict JSON: a raw object holding NaN becomes None)."""
        out = asdict(self)
        for moment in out["moments"]:
            moment["raw"] = _json_safe(moment["raw"])
        return out


@dataclass
class ParsedBoxes:
    """The grounder's answer, read: valid boxes clipped to the image, in answer order.

    `problems` holds top-level codes (BOX_REASONS) first, then "item {i}: {code}" entries
    (BOX_ITEM_REASONS; "clipped" is a note, the box is kept), at most MAX_BOX_PROBLEMS in all.
    """

    boxes: list[list[float]] = field(default_factory=list)  # [x0, y0, x1, y1] in pixels
    labels: list[str | None] = field(default_factory=list)
    num_items: int = 0  # items in the JSON list (any type)
    num_dropped: int = 0  # valid boxes beyond max_boxes
    problems: list[str] = field(default_factory=list)
    json_found: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- System 1 ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameTimes:
    """When each of System 1's frames was sampled and how long the clip lasts, in seconds: what
    answer times are read against (`VideoClip.frame_times`). Times are compared in hundredths of a
    second, rounded as the prompt writes them (`prompts.format_time`), so the time of a sampled
    frame as written maps back to that frame."""

    times_s: tuple[float, ...]
    duration_s: float

    def __post_init__(self) -> None:
        times = tuple(float(t) for t in self.times_s)
        object.__setattr__(self, "times_s", times)
        if not times:
            raise ValueError("FrameTimes needs at least one frame time")
        if not all(math.isfinite(t) and t >= 0 for t in times):
            raise ValueError(f"frame times must be finite and >= 0, got {times[:8]}...")
        if any(b < a for a, b in itertools.pairwise(times)):
            raise ValueError("frame times must not decrease")
        if not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise ValueError(f"duration_s must be finite and > 0, got {self.duration_s!r}")
        object.__setattr__(self, "_hundredths", [round(t * 100) for t in times])

    @classmethod
    def uniform(cls, num_frames: int, fps: float = 2.0) -> FrameTimes:
        """`num_frames` frames at `fps` from 0, the clip lasting num_frames / fps."""
        _check_count("num_frames", num_frames, 1)
        return cls(tuple(i / fps for i in range(num_frames)), num_frames / fps)

    @property
    def num_frames(self) -> int:
        return len(self.times_s)

    @property
    def duration_hundredths(self) -> int:
        return round(self.duration_s * 100)

    @property
    def rate(self) -> float:
        """Frames per second of the sampling (the processor's `fps`): 2 at System 1's 2 fps, fewer
        where the frames are spread over a long clip; a single frame counts as the whole clip."""
        span = self.times_s[-1] - self.times_s[0]
        if len(self.times_s) < 2 or span <= 0:
            return 1.0 / self.duration_s
        return (len(self.times_s) - 1) / span

    def frame_at(self, hundredths: int) -> int:
        """The last frame sampled at or before `hundredths` (frame 0 for earlier times)."""
        return max(0, bisect.bisect_right(self._hundredths, hundredths) - 1)


def parse_answer(
    text: str,
    frame_times: FrameTimes,
    *,
    max_keyframes: int = 4,
    max_moments: int = 64,
    max_chars: int = 20000,
) -> ParsedAnswer:
    """Read System 1's completion for a clip whose frames were sampled at `frame_times`. Never
    raises on `text`; raises ValueError when a limit is negative or `frame_times` is not one."""
    if not isinstance(frame_times, FrameTimes):
        raise ValueError(f"frame_times must be FrameTimes, got {type(frame_times).__name__}")
    _check_count("max_keyframes", max_keyframes, 0)
    _check_count("max_moments", max_moments, 0)
    _check_count("max_chars", max_chars, 0)
    problems: list[str] = []
    text = _prepare(text, max_chars, problems)
    result = ParsedAnswer(problems=problems)
    # format is judged on what was read: the lazy pattern could backtrack badly on huge input
    result.format_ok = _FORMAT.fullmatch(text.strip()) is not None

    body = _between(text, _ANSWER_OPEN, _ANSWER_CLOSE)
    result.answer_found = body is not None
    if body is None:
        _add(problems, "missing_answer_tags")
        body = _answer_fallback(text)

    value, result.json_found, json_problems = _extract_json(body)
    for code in json_problems:
        _add(problems, code)
    items = _as_items(value) if result.json_found else []
    objects = [item for item in items if isinstance(item, dict)]
    if len(objects) < len(items):
        _add(problems, "not_an_object")
    result.num_objects = len(objects)
    # every object counts (rewards see them all, as the released code does); `max_moments`
    # bounds the work, and an answer over it is read as no answer at all, so that writing
    # more objects can never escape the penalties the extra ones would earn
    if len(objects) > max_moments:
        result.num_dropped = len(objects)
        _add(problems, "too_many_moments")
    else:
        result.moments = [_moment(item, frame_times) for item in objects]

    valid = [m for m in result.moments if m.valid]
    result.valid_moments = len(valid)
    if not valid:
        _add(problems, "no_valid_moment")
    result.keyframes, result.keyframe_descriptions, result.duplicate_frames = _keyframes(
        valid, max_keyframes
    )
    return result


def _answer_fallback(text: str) -> str:
    """Where to look for JSON without an <answer>...</answer> pair: after an unclosed <answer>,
    else after </think>, else everywhere (reasoning text is skipped when it can be)."""
    opened = text.find(_ANSWER_OPEN)
    if opened >= 0:
        return text[opened + len(_ANSWER_OPEN) :]
    think_end = text.find(_THINK_CLOSE)
    return text[think_end + len(_THINK_CLOSE) :] if think_end >= 0 else text


def _moment(raw: dict[str, Any], frame_times: FrameTimes) -> Moment:
    moment = Moment(raw=raw, unknown_keys=[str(k) for k in raw if k not in _KNOWN_KEYS])
    start, end = _centiseconds(raw.get("start_time")), _centiseconds(raw.get("end_time"))
    if start is None:
        moment.problems.append("bad_start_time")
    else:
        moment.start_s = start / 100
    if end is None:
        moment.problems.append("bad_end_time")
    else:
        moment.end_s = end / 100
    description = raw.get("description")
    if isinstance(description, str) and description.strip() and _utf8_ok(description):
        moment.description = description.strip()
    else:
        moment.problems.append("bad_description")
    if start is not None and end is not None:
        if start > end:
            moment.problems.append("reversed")
        if end > frame_times.duration_hundredths:  # compared in exact hundredths
            moment.problems.append("beyond_duration")
    if not moment.problems and start is not None and end is not None:
        moment.valid = True
        moment.frames = list(range(frame_times.frame_at(start), frame_times.frame_at(end) + 1))
    return moment


def _centiseconds(value: Any) -> int | None:
    """A "mm:ss.ff" time in whole hundredths of a second (exact, so frame boundaries are too)."""
    if not isinstance(value, str):
        return None
    match = _TIME.fullmatch(value)
    if match is None:
        return None
    minutes, seconds, fraction = match.groups()
    return (int(minutes) * 60 + int(seconds)) * 100 + int((fraction or "").ljust(2, "0"))


def _keyframes(valid: list[Moment], k: int) -> tuple[list[int], list[str], int]:
    """The k lowest covered frames with their descriptions, and the duplicate-coverage count.

    Works on intervals, not frame sets, so the cost does not grow with the video length."""
    intervals = [(m.frames[0], m.frames[-1]) for m in valid]
    merged: list[list[int]] = []
    for lo, hi in sorted(intervals):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    slots = sum(hi - lo + 1 for lo, hi in intervals)
    unique = sum(hi - lo + 1 for lo, hi in merged)
    frames: list[int] = []
    for lo, hi in merged:
        if len(frames) >= k:
            break
        frames.extend(range(lo, min(hi + 1, lo + k - len(frames))))
    descriptions = [
        next(m.description or "" for m in valid if m.frames[0] <= f <= m.frames[-1]) for f in frames
    ]
    return frames, descriptions, slots - unique


# --- System 2 ---------------------------------------------------------------------------------


def parse_boxes(
    text: str,
    width: int,
    height: int,
    *,
    max_boxes: int = 16,
    max_chars: int = 20000,
) -> ParsedBoxes:
    """Read the grounder's boxes for an image of `width` x `height` pixels. Never raises on
    `text`; raises ValueError when the size is below 1 or a limit is negative."""
    _check_count("width", width, 1)
    _check_count("height", height, 1)
    _check_count("max_boxes", max_boxes, 0)
    _check_count("max_chars", max_chars, 0)
    top: list[str] = []
    text = _prepare(text, max_chars, top)
    result = ParsedBoxes()

    value, result.json_found, json_problems = _extract_json(_box_body(text))
    for code in json_problems:
        _add(top, code)
    if not result.json_found:
        items: list[Any] = []
    elif isinstance(value, list) and _is_bare_box(value):
        items = [value]  # one box written as a bare [x0, y0, x1, y1]
    else:
        items = _as_items(value)
    result.num_items = len(items)

    per_item: list[str] = []
    for index, item in enumerate(items):
        code, box, label = _box(item, width, height)
        if box is None:
            per_item.append(f"item {index}: {code}")
        elif len(result.boxes) < max_boxes:
            result.boxes.append(box)
            result.labels.append(label)
            if code is not None:  # "clipped": a note, the box is kept
                per_item.append(f"item {index}: {code}")
        else:
            result.num_dropped += 1
        if len(per_item) > MAX_BOX_PROBLEMS:  # bound memory too, not just the final list
            per_item.pop()
    if result.num_dropped:
        _add(top, "too_many_boxes")
    if not result.boxes:
        _add(top, "no_valid_box")
    result.problems = top + per_item[: max(0, MAX_BOX_PROBLEMS - len(top))]
    return result


def _box_body(text: str) -> str:
    """The first fenced block, else the <answer> body, else the whole text."""
    fence = _FENCE.search(text)
    if fence is not None:
        return fence.group(1)
    body = _between(text, _ANSWER_OPEN, _ANSWER_CLOSE)
    return text if body is None else body


def _is_bare_box(value: list[Any]) -> bool:
    """Four scalars: one box, even if the scalars are bad (then it reports bad_coordinates)."""
    return len(value) == 4 and not any(isinstance(v, (dict, list)) for v in value)


def _box(item: Any, width: int, height: int) -> tuple[str | None, list[float] | None, str | None]:
    """(code, box, label): box is None when the item is unusable (code says why); otherwise
    code is "clipped" or None."""
    if isinstance(item, dict):
        if "bbox_2d" not in item:
            return "no_bbox_2d", None, None
        label = item.get("label")
        coords, label = _coordinates(item["bbox_2d"]), label if isinstance(label, str) else None
    elif isinstance(item, list) and _is_bare_box(item):  # a list of bare boxes is accepted too
        coords, label = _coordinates(item), None
    else:
        return "not_an_object", None, None
    if coords is None:
        return "bad_coordinates", None, None
    x0, y0, x1, y1 = coords
    w, h = float(width), float(height)
    # max(0.0, v) rather than max(v, 0.0): ties return the first argument, so -0.0 becomes 0.0
    clipped = [
        min(max(0.0, x0), w),
        min(max(0.0, y0), h),
        min(max(0.0, x1), w),
        min(max(0.0, y1), h),
    ]
    # reversed corners are not swapped: the model said something else than a box
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        return "degenerate", None, None
    return ("clipped" if clipped != coords else None), clipped, label


def _coordinates(value: Any) -> list[float] | None:
    """Four finite numbers as floats (bools are not numbers here), else None."""
    if not isinstance(value, list) or len(value) != 4:
        return None
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return None
        try:
            f = float(v)
        except OverflowError:  # an integer beyond float range
            return None
        if not math.isfinite(f):  # cannot come from _loads; kept for any other caller
            return None
        out.append(f)
    return out


# --- shared -----------------------------------------------------------------------------------


class _NonFinite:
    """Loaded in place of NaN, Infinity and floats that overflow: never a valid value."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"<non-finite {self.text}>"


def _load_float(text: str) -> float | _NonFinite:
    value = float(text)
    return value if math.isfinite(value) else _NonFinite(text)


def _loads(text: str) -> Any:
    """json.loads without NaN/Infinity; raises ValueError or RecursionError like it."""
    return json.loads(text, parse_constant=_NonFinite, parse_float=_load_float)


def _extract_json(body: str, max_depth: int = MAX_DEPTH) -> tuple[Any, bool, list[str]]:
    """(value, found, problems): the body as one JSON document, or wrapped in [...], or else the
    list of its outermost {...} objects that load on their own."""
    problems: list[str] = []
    if not body.strip():  # "[" + "" + "]" would load as an empty list
        return None, False, ["no_json"]
    depth, spans = _scan(body)
    if depth > max_depth:
        problems.append("too_deep")
    else:
        # the wrapped form adds one level of its own
        for candidate, limit in ((body, max_depth), (f"[{body}]", max_depth + 1)):
            try:
                value = _loads(candidate)
            except (ValueError, RecursionError):
                continue
            if not _deeper_than(value, limit):
                return value, True, problems
            problems.append("too_deep")  # the scan was fooled (stray quotes); play safe
            break
    objects = []
    for start, end, span_depth in spans:
        if span_depth > max_depth:
            _add(problems, "too_deep")
            continue
        try:
            objects.append(_loads(body[start:end]))
        except (ValueError, RecursionError):
            _add(problems, "invalid_json_object")
    if objects:
        return objects, True, problems
    problems.append("no_json")
    return None, False, problems


def _scan(text: str) -> tuple[int, list[tuple[int, int, int]]]:
    """One pass: the deepest bracket nesting in `text`, and its outermost balanced {...} spans
    as (start, end, nesting depth of the span).

    Strings (with escapes) are respected inside brackets only, so quotes in surrounding prose
    cannot hide JSON. A closer that matches no open bracket is ignored; one that matches a
    bracket further down also closes the unclosed ones above it. An explicit stack, so depth
    costs memory, never recursion, and each bracket is pushed and popped at most once.
    """
    stack: list[list[Any]] = []  # [opener, start, depth of what is nested inside it]
    open_count = {"{": 0, "[": 0}
    in_string = False
    escaped = -1  # position of the character after a backslash inside a string
    deepest = 0
    spans: list[tuple[int, int, int]] = []
    for match in _TOKEN.finditer(text):
        char, pos = match.group(), match.start()
        if in_string:
            if pos == escaped:
                continue
            if char == "\\":
                escaped = pos + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = bool(stack)
        elif char in "{[":
            stack.append([char, pos, 0])
            open_count[char] += 1
            deepest = max(deepest, len(stack))
        elif char in "}]":
            opener = "{" if char == "}" else "["
            if not open_count[opener]:
                continue
            while True:
                entry = stack.pop()
                open_count[entry[0]] -= 1
                depth = entry[2] + 1
                if stack:
                    stack[-1][2] = max(stack[-1][2], depth)
                if entry[0] == opener:
                    break
            if opener == "{":
                spans.append((entry[1], pos + 1, depth))
    # spans are nested or disjoint; keep those inside no other (an unclosed outer bracket
    # leaves its complete children outermost)
    outermost: list[tuple[int, int, int]] = []
    for span in sorted(spans):
        if not outermost or span[0] >= outermost[-1][1]:
            outermost.append(span)
    return deepest, outermost


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether containers nest deeper than `limit` (a flat list is depth 1), iteratively."""
    if not isinstance(value, (dict, list)):
        return False
    stack = [(value, 1)]
    while stack:
        current, depth = stack.pop()
        if depth > limit:
            return True
        children = current.values() if isinstance(current, dict) else current
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def _as_items(value: Any) -> list[Any]:
    """A JSON list as its items; any other value as a list of one."""
    return value if isinstance(value, list) else [value]


def _between(text: str, open_tag: str, close_tag: str) -> str | None:
    """Text between the first `open_tag` and the next `close_tag`, or None."""
    start = text.find(open_tag)
    if start < 0:
        return None
    start += len(open_tag)
    end = text.find(close_tag, start)
    return None if end < 0 else text[start:end]


def _prepare(text: Any, max_chars: int, problems: list[str]) -> str:
    if not isinstance(text, str):
        problems.append("not_a_string")
        return ""
    if len(text) > max_chars:
        problems.append("too_long")
        return text[:max_chars]
    return text


def _check_count(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _add(problems: list[str], code: str) -> None:
    if code not in problems:
        problems.append(code)


def _utf8_ok(text: str) -> bool:
    """False for lone surrogates (legal in JSON strings), which break tokenizers and UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_safe(raw: Any) -> Any:
    try:
        json.dumps(raw, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return None
    return raw
