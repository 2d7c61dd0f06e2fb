"""The research scripts' own logic: the linear probe of research/scripts/vision_probe.py and the
expression filter of research/scripts/system1_frames.py (their figures: research/LOG.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "research" / "scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_probe_reads_a_separable_label_and_not_a_random_one():
    probe = _load("vision_probe")
    rng = np.random.default_rng(0)
    labels = [str(v) for v in rng.integers(0, 3, 300)]
    x = rng.normal(size=(300, 8))
    x[:, 0] += 5 * np.array([int(v) for v in labels])  # one feature says the class
    train = np.arange(300) < 200
    assert probe.probe_accuracy(x, labels, train) == pytest.approx(1.0)
    shuffled = list(rng.permutation(labels))
    assert probe.probe_accuracy(x, shuffled, train) < 0.6  # chance is 1/3


def test_prototype_clips_show_the_target_in_one_run_and_a_distractor_elsewhere():
    from omnir1.data.synth.scene import COLORS

    proto = _load("system1_prototype")
    rng = np.random.default_rng(0)
    for _ in range(50):
        clip, expression, shown = proto.prototype_clip(rng, ["red", "blue"], 28, audio=True)
        colour = expression.split()[1]
        assert colour in ("red", "blue") and clip.frames.shape == (8, 28, 28, 3)
        assert 2 <= len(shown) <= 5 and shown == list(range(shown[0], shown[-1] + 1))
        for f in range(8):
            has_target = (clip.frames[f] == COLORS[colour]).all(-1).sum() >= 81  # a 9x9 square
            assert has_target == (f in shown)
        distractors = [
            f
            for f in range(8)
            for c in COLORS
            if c != colour and (clip.frames[f] == COLORS[c]).all(-1).sum() >= 81
        ]
        assert distractors and not set(distractors) & set(shown)
        assert clip.audio.shape == (64_000,) and clip.duration_s == 4.0


def test_prototype_prompt_reordering_moves_the_task_or_the_audio_first():
    proto = _load("system1_prototype")
    user = [
        {"type": "text", "text": "00:00.00"},
        {"type": "image"},
        {"type": "audio"},
        {"type": "text", "text": "Find the red square"},
    ]
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": user}]
    query = proto.reordered(messages, "text")[1]["content"]
    assert [c.get("text", c["type"]) for c in query] == [
        "Find the red square",
        "00:00.00",
        "image",
        "audio",
    ]
    audio = proto.reordered(messages, "audio")[1]["content"]
    assert [c["type"] for c in audio] == ["audio", "text", "image", "text"]
    assert messages[1]["content"] is user  # the original is left alone


def test_prototype_native_frames_squeeze_synthetic_shapes_into_system1_frames():
    from omnir1.data.synth.scene import COLORS, SEEN_SHAPES

    proto = _load("system1_prototype")
    rng = np.random.default_rng(1)
    for _ in range(20):
        clip, expression, shown = proto.prototype_clip(rng, ["red"], 28, False, (180, 320))
        assert expression.split()[2] in SEEN_SHAPES and clip.native_size == (180, 320)
        assert clip.frames.shape == (8, 28, 28, 3) and clip.audio is None
        near_red = np.linalg.norm(clip.frames.astype(float) - COLORS["red"], axis=-1) < 40
        assert [f for f in range(8) if near_red[f].sum() >= 4] == shown
    short = [proto.prototype_clip(rng, ["red"], 28, False, run_lengths=(1, 3)) for _ in range(40)]
    assert {len(shown) for *_, shown in short} == {1, 2, 3}
