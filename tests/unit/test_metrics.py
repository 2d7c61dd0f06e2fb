"""J and F against hand-computed cases and against the straightforward DAVIS-style reference."""

import numpy as np
import pytest

from omnir1.eval.metrics import boundary_f, boundary_radius, jaccard, seg2bmap
from omnir1.eval.reference import boundary_f_reference, boundary_f_toolkit, jaccard_reference


def mask(shape, *pixels):
    m = np.zeros(shape, bool)
    for y, x in pixels:
        m[y, x] = True
    return m


def test_jaccard_hand_cases():
    empty = np.zeros((3, 4), bool)
    assert jaccard(empty, empty) == 1.0
    assert jaccard(mask((3, 4), (0, 0)), empty) == 0.0
    assert jaccard(empty, mask((3, 4), (0, 0))) == 0.0
    assert jaccard(mask((3, 4), (0, 0), (0, 1)), mask((3, 4), (0, 1), (2, 3))) == pytest.approx(
        1 / 3
    )
    assert jaccard(np.ones((1, 7), bool), np.ones((1, 7), bool)) == 1.0


def test_jaccard_video_returns_one_value_per_frame():
    pred = np.stack([np.zeros((5, 5), bool), np.ones((5, 5), bool), mask((5, 5), (1, 1))])
    gt = np.stack([np.zeros((5, 5), bool), mask((5, 5), (0, 0)), mask((5, 5), (1, 1))])
    np.testing.assert_allclose(jaccard(pred, gt), [1.0, 1 / 25, 1.0], atol=1e-12)


def test_seg2bmap_single_pixel_and_edges():
    b = seg2bmap(mask((5, 5), (2, 2)))
    # the pixel, and the background pixels left of, above and above-left of it
    np.testing.assert_array_equal(np.argwhere(b), [[1, 1], [1, 2], [2, 1], [2, 2]])
    assert not seg2bmap(np.ones((4, 6), bool)).any()  # the image border is not a boundary
    # last row: only the right neighbour counts; last column: only the lower one
    np.testing.assert_array_equal(
        seg2bmap(mask((2, 3), (1, 0))), [[True, False, False], [True, False, False]]
    )


def test_boundary_radius():
    assert boundary_radius((480, 854)) == 8  # ceil(0.008 * 979.7)
    assert boundary_radius((1080, 1920)) == 18
    assert boundary_radius((5, 5)) == 1
    assert boundary_radius((100, 100), bound_th=3) == 3


def test_f_hand_cases():
    empty = np.zeros((5, 5), bool)
    dot = mask((5, 5), (2, 2))
    assert boundary_f(empty, empty) == 1.0
    assert boundary_f(dot, empty) == 0.0
    assert boundary_f(empty, dot) == 0.0
    assert boundary_f(dot, dot) == 1.0
    # boundaries {(0,0),(0,1),(1,0),(1,1)} vs {(0,2),(0,3),(1,2),(1,3)}, tolerance 1 px:
    # half of each side lies within 1 px of the other -> P = R = 0.5
    assert boundary_f(mask((5, 5), (1, 3)), mask((5, 5), (1, 1))) == pytest.approx(0.5)
    # DAVIS quirk kept on purpose: a full-frame mask has no boundary, so against a partial mask
    # F is 0 even though J is 0.5
    full, half = np.ones((4, 4), bool), np.zeros((4, 4), bool)
    half[:, :2] = True
    assert boundary_f(full, full) == 1.0
    assert boundary_f(half, full) == 0.0 and jaccard(half, full) == 0.5


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(
        ValueError, match=r"prediction shape \(4, 5\) does not match ground-truth shape \(5, 4\)"
    ):
        jaccard(np.zeros((4, 5)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="does not match"):
        boundary_f(np.zeros((2, 4, 5)), np.zeros((2, 4, 6)))
    with pytest.raises(ValueError, match=r"\(H, W\) or \(T, H, W\)"):
        jaccard(np.zeros(5), np.zeros(5))


def random_blobs(rng, h, w):
    yy, xx = np.mgrid[:h, :w]
    m = np.zeros((h, w), bool)
    for _ in range(int(rng.integers(0, 4))):
        cy, cx = rng.integers(-2, h + 2), rng.integers(-2, w + 2)  # may touch or cross the edges
        r = rng.integers(1, max(2, min(h, w) // 2))
        m |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    if rng.random() < 0.3:
        m |= rng.random((h, w)) < 0.02  # speckle: many tiny boundaries
    return m


@pytest.mark.parametrize("seed", range(4))
def test_identical_to_reference_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(1, 90, 2))
        pred, gt = random_blobs(rng, h, w), random_blobs(rng, h, w)
        if rng.random() < 0.2:
            gt = pred.copy()
        assert abs(boundary_f(pred, gt) - boundary_f_reference(pred, gt)) <= 1e-9, (h, w)
        assert abs(jaccard(pred, gt) - jaccard_reference(pred, gt)) <= 1e-9


def test_identical_to_reference_at_480p_video():
    rng = np.random.default_rng(7)
    pred = np.stack([random_blobs(rng, 480, 854) for _ in range(3)])
    gt = np.stack([random_blobs(rng, 480, 854) for _ in range(3)])
    expected = [boundary_f_reference(p, g) for p, g in zip(pred, gt, strict=True)]
    np.testing.assert_allclose(boundary_f(pred, gt), expected, atol=1e-9, rtol=0)


@pytest.mark.parametrize("bound_th", [1, 2, 0.05])
def test_identical_to_reference_for_any_tolerance(bound_th):
    rng = np.random.default_rng(11)
    for _ in range(12):
        h, w = (int(v) for v in rng.integers(1, 200, 2))
        pred, gt = random_blobs(rng, h, w), random_blobs(rng, h, w)
        got, expected = boundary_f(pred, gt, bound_th), boundary_f_reference(pred, gt, bound_th)
        assert abs(got - expected) <= 1e-9, (h, w)


def test_identical_to_reference_for_a_radius_wider_than_a_word():
    # The packed dilation works 64 pixels per word: runs wider than a word carry across words.
    for h, w in ((40, 300), (70, 257)):
        pred = np.zeros((h, w), bool)
        pred[5:9, 3:6] = True
        gt = np.roll(pred, 60, axis=1)  # 60 px away: within the radius
        pred[30:35, w - 50 : w - 2] = True  # beyond the radius of anything in gt
        got, expected = boundary_f(pred, gt, 66), boundary_f_reference(pred, gt, 66)
        assert 0 < expected < 1
        assert abs(got - expected) <= 1e-9, (h, w)


def test_toolkit_method_agrees():
    rng = np.random.default_rng(2)
    for _ in range(20):
        h, w = (int(v) for v in rng.integers(1, 120, 2))
        pred, gt = random_blobs(rng, h, w), random_blobs(rng, h, w)
        assert abs(boundary_f(pred, gt) - boundary_f_toolkit(pred, gt)) <= 1e-9, (h, w)


def test_identical_to_reference_at_every_radius_near_the_edges():
    # A run cut by the array's (or the dilated box's) left edge is shorter than its half-width
    # suggests; widening it too fast left gaps (from radius 10 up: 1080p's 18 included). Lone
    # pixels on the left and right edges, ground truth dense around them.
    rng = np.random.default_rng(5)
    for radius in range(1, 41):
        h, w = 2 * radius + 12, int(rng.integers(2 * radius + 2, 3 * radius + 70))
        pred = np.zeros((h, w), bool)
        pred[h // 2, 0] = pred[h // 3, w - 1] = True
        gt = rng.random((h, w)) < 0.05
        got, expected = boundary_f(pred, gt, radius), boundary_f_toolkit(pred, gt, radius)
        assert abs(got - expected) <= 1e-9, radius


@pytest.mark.parametrize("stray", ["prediction", "ground truth", "both"])
def test_identical_to_reference_with_scattered_false_positives(stray):
    # The dilated box is the smaller of the two boundaries' boxes: stray pixels all over one
    # mask must not change the result, whichever mask has them.
    rng = np.random.default_rng(3)
    for _ in range(6):
        h, w = (int(v) for v in rng.integers(60, 300, 2))
        pred, gt = random_blobs(rng, h, w), random_blobs(rng, h, w)
        if stray in ("prediction", "both"):
            pred |= rng.random((h, w)) < 0.001
        if stray in ("ground truth", "both"):
            gt |= rng.random((h, w)) < 0.001
        for bound_th in (0.008, 0.05, 70):  # 70 px: wider than a packed word
            got = boundary_f(pred, gt, bound_th)  # the toolkit's OpenCV method: fast at 70 px
            assert abs(got - boundary_f_toolkit(pred, gt, bound_th)) <= 1e-9, (h, w)


def test_full_frame_against_empty_is_one_as_in_the_toolkit():
    # Neither has a boundary pixel: the toolkit's precision and recall are both 1.
    full, empty = np.ones((6, 9), bool), np.zeros((6, 9), bool)
    assert boundary_f(full, empty) == boundary_f_reference(full, empty) == 1.0
