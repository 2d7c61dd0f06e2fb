"""Real-size models without downloads (omnir1.models.presets): the Qwen2.5-Omni thinkers counted
on the meta device against the published sizes of their parts, SAM2.1 against its README."""

import json

import pytest

from omnir1.cli import main
from omnir1.models.presets import (
    PUBLISHED_AUDIO,
    PUBLISHED_VISION,
    SAM2,
    THINKERS,
    build_sam2,
    parameter_counts,
)


@pytest.mark.parametrize(
    ("thinker", "sam2"), [("qwen2.5-omni-7b", "hiera-l"), ("qwen2.5-omni-3b", "hiera-t")]
)
def test_presets_have_the_published_sizes(thinker, sam2):
    counts = parameter_counts(thinker, sam2)
    # the language model is Qwen2.5-7B / -3B (7.61 B with its own output layer; 3.09 B tied)
    lm = counts["language_model"] + counts["lm_head"]
    assert lm == pytest.approx(THINKERS[thinker].published_lm, rel=0.005)
    assert counts["vision"] == pytest.approx(PUBLISHED_VISION, rel=0.02)
    assert counts["audio"] == pytest.approx(PUBLISHED_AUDIO, rel=0.02)
    assert counts["system1"] == lm + counts["vision"] + counts["audio"]
    assert counts["sam2"] == pytest.approx(SAM2[sam2][1], rel=0.005)


@pytest.mark.parametrize("sam2", ["hiera-s", "hiera-b+"])
def test_the_other_sam2_sizes(sam2):
    count = sum(p.numel() for p in build_sam2(sam2).parameters())
    assert count == pytest.approx(SAM2[sam2][1], rel=0.005)


def test_the_cli_counts_on_the_meta_device_and_refuses_unknown_presets(capsys):
    assert (
        main(["models", "init", "--preset", "qwen2.5-omni-7b", "--sam2", "hiera-t", "--meta"]) == 0
    )
    counts = json.loads(capsys.readouterr().out)
    assert counts["system1"] > 8.9e9
    with pytest.raises(SystemExit) as exit_:
        main(["models", "init", "--preset", "qwen2.5-omni-14b", "--meta"])
    assert exit_.value.code == 2
    assert main(["models", "init", "--preset", "qwen2.5-omni-3b"]) == 2  # no --out
    assert "--out" in capsys.readouterr().err
