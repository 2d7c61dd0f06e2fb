"""The research benches' own logic: the linear probe of bench/vision_probe.py and the expression
filter of bench/system1_frames.py (their figures are in docs/training.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


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


@pytest.mark.parametrize(
    ("expression", "appearance"),
    [
        ("the small red circle", True),
        ("the red shape", True),
        ("the triangle", True),
        ("the object making the drum beat", False),
        ("the shape that appears last", False),
        ("all the red shapes", False),
        ("the red circle and the blue square", False),
    ],
)
def test_appearance_filter(expression, appearance):
    assert _load("system1_frames").names_appearance(expression) is appearance
