"""The benchmark registry: one module per benchmark, and every list of formats agrees with it."""

import typing

import pytest

from omnir1.benchmarks.registry import BENCHMARKS, get, names
from omnir1.config import DataParams, ValidateParams
from omnir1.data import FORMATS


def test_every_list_of_formats_is_the_registrys():
    assert FORMATS == names() == tuple(BENCHMARKS)
    formats = typing.get_args(typing.get_args(DataParams.model_fields["formats"].annotation)[0])
    assert formats == names()
    assert tuple(ValidateParams().splits) == names()  # each one's required splits in params
    for name, benchmark in BENCHMARKS.items():
        assert benchmark.name == name and benchmark.default_fps > 0
        key, higher = benchmark.headline_figure
        assert key and isinstance(higher, bool)


def test_an_unknown_benchmark_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown data set format 'davis'; valid formats: refavs"):
        get("davis")


def test_each_benchmark_chooses_its_evaluated_splits(tmp_path):
    assert get("refavs").eval_splits(tmp_path, ["train", "test_s", "test_n"]) == [
        "test_s",
        "test_n",
    ]
    assert get("revos").eval_splits(tmp_path, ["train", "valid", "test"]) == ["valid", "test"]
    (tmp_path / "valid_u").mkdir()
    (tmp_path / "valid_u" / "mask_dict.json").write_text("{}")
    # MeViS' online split ships without masks: never scored by default
    assert get("mevis").eval_splits(tmp_path, ["train", "valid_u", "valid"]) == ["valid_u"]
