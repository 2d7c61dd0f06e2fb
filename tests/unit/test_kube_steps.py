"""omnir1.kube.steps: how a component's step calls the library and reports."""

import pytest

from omnir1.errors import DataError
from omnir1.kube.steps import flat_metrics, validate


def test_bad_input_fails_the_step_naming_the_file(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("data: {formats: [revos]}\n")
    with pytest.raises(DataError, match=r"revos"):
        validate(str(params), str(tmp_path / "none"), str(tmp_path / "reports"))


def test_metrics_are_flattened_to_numbers():
    nested = {"trained": {"revos": {"JF": 0.5, "n": 3}}, "name": "x", "ok": True}
    assert flat_metrics(nested) == {"trained.revos.JF": 0.5, "trained.revos.n": 3.0}
