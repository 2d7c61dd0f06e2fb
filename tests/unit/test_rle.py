import numpy as np
import pytest
from pycocotools import mask as mask_utils

from omnir1.data import rle
from omnir1.errors import DataError


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (180, 320), (33, 1)])
def test_roundtrip_matches_pycocotools(shape):
    rng = np.random.default_rng(0)
    for density in (0.0, 0.05, 0.5, 1.0):
        mask = rng.random(shape) < density
        encoded = rle.encode(mask)
        assert encoded["size"] == list(shape)
        np.testing.assert_array_equal(rle.decode(encoded), mask)
        reference = mask_utils.decode(
            {"size": encoded["size"], "counts": encoded["counts"].encode()}
        )
        np.testing.assert_array_equal(reference.astype(bool), mask)


def test_uncompressed_counts():
    # 2x3 mask, column-major runs: 1 background, 2 foreground, 3 background
    mask = rle.decode({"size": [2, 3], "counts": [1, 2, 3]})
    np.testing.assert_array_equal(mask, [[False, True, False], [True, False, False]])


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("not a dict", "must be an object"),
        ({"size": [2, 2]}, "must be an object"),
        ({"size": [2], "counts": "0"}, "size must be"),
        ({"size": [-1, 2], "counts": "0"}, "size must be"),
        ({"size": [2, 2], "counts": [1, 1]}, "sum to 2, expected 2x2=4"),
        ({"size": [2, 2], "counts": [5, -1]}, "negative"),
        ({"size": [2, 2], "counts": "\x7f\x7f"}, "outside the RLE alphabet"),
        ({"size": [2, 2], "counts": "o"}, "ends inside a run"),
        ({"size": [2, 2], "counts": 12}, "counts must be"),
    ],
)
def test_bad_rle_names_file_and_field(bad, message):
    with pytest.raises(DataError, match=message) as info:
        rle.decode(bad, source="mask_dict.json", field="17[3]")
    assert str(info.value).startswith("mask_dict.json: 17[3]: ")


def test_vectorised_string_decoding_matches_pycocotools_on_random_masks():

    rng = np.random.default_rng(4)
    for _ in range(30):
        h, w = (int(v) for v in rng.integers(1, 300, 2))
        mask = rng.random((h, w)) < rng.uniform(0, 1)
        if rng.random() < 0.5:  # long runs: multi-character values and negative deltas
            mask = np.zeros((h, w), bool)
            mask[rng.integers(0, h) :, rng.integers(0, w) :] = True
        encoded = rle.encode(mask)
        expected = mask_utils.decode({"size": [h, w], "counts": encoded["counts"].encode()})
        np.testing.assert_array_equal(rle.decode(encoded), expected.astype(bool))


def test_absurdly_long_run_is_rejected():
    with pytest.raises(DataError, match="run length too long"):
        rle.decode({"size": [2, 2], "counts": "o" * 20 + "0"})
