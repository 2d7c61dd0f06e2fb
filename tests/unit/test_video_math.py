import numpy as np
import pytest

from omnir1.media import sample_times, smart_resize


@pytest.mark.parametrize(
    ("h", "w"), [(180, 320), (1080, 1920), (181, 333), (28, 28), (10, 2000), (4000, 3000)]
)
def test_smart_resize_budget_and_multiples(h, w):
    budget = 128 * 28 * 28
    rh, rw = smart_resize(h, w, max_pixels=budget)
    assert rh % 28 == 0 and rw % 28 == 0
    assert 4 * 28 * 28 <= rh * rw <= budget
    assert abs(rw / rh - w / h) / (w / h) < 0.5 or min(h, w) < 56  # aspect roughly kept


def test_smart_resize_known_values():
    assert smart_resize(180, 320) == (168, 308)  # 51,744 px is within budget: rounding only
    assert smart_resize(1080, 1920) == (224, 420)
    assert smart_resize(1080, 1920, max_pixels=900 * 28 * 28) == (616, 1120)


@pytest.mark.parametrize("budget", [128 * 28 * 28, 900 * 28 * 28])
def test_smart_resize_matches_qwen_processor(budget):
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as reference

    rng = np.random.default_rng(0)
    for h, w in [(10, 2000), (20, 20), *rng.integers(8, 4000, size=(200, 2)).tolist()]:
        if max(h, w) / min(h, w) > 200:
            continue
        assert smart_resize(h, w, max_pixels=budget) == reference(h, w, 28, 4 * 28 * 28, budget), (
            h,
            w,
        )


def test_smart_resize_rejects_extreme_aspect():
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(1, 1000)


def test_sample_times():
    np.testing.assert_allclose(sample_times(10.0, 2.0), np.arange(20) / 2)
    np.testing.assert_allclose(sample_times(10.0, 2.0, max_frames=8), np.arange(8) * 1.25)
    np.testing.assert_allclose(sample_times(0.2, 2.0), [0.0])
    assert len(sample_times(9.99, 2.0)) == 20
