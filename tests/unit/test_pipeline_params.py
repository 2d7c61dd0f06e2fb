"""params.yaml <-> Kubeflow pipeline parameters (omnir1.kube.params) and --part I/N."""

from pathlib import Path

import pytest
import yaml

from omnir1.config import load_params
from omnir1.errors import ConfigError
from omnir1.kube.params import nest, pipeline_parameters, render_params
from omnir1.parts import parse_part, take_part

ROOT = Path(__file__).resolve().parents[2]


def _leaves(tree: dict, prefix=()) -> dict:
    """Dotted leaves of params.yaml as written, mappings of data keys kept whole."""
    whole = {"sources", "frames_per_video", "splits", "tolerances", "closer_to"}
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key not in whole:
            out.update(_leaves(value, (*prefix, key)))
        else:
            out["__".join((*prefix, key))] = value
    return out


def test_every_params_yaml_key_is_a_parameter_with_its_default():
    written = _leaves(yaml.safe_load((ROOT / "params.yaml").read_text()))
    params = {p.name: p for p in pipeline_parameters(ROOT / "params.yaml")}
    assert set(written) <= set(params)  # keys the file leaves to the model's default come too
    for name, value in written.items():
        assert params[name].default == value, name
        kind = params[name].annotation
        assert isinstance(value, kind) or (kind is float and isinstance(value, int)), name
    assert params["train__learning_rate"].annotation is float
    assert params["data__formats"].annotation is list and params["data__sources"].annotation is dict


def test_rendering_the_defaults_gives_back_params_yaml(tmp_path):
    values = {p.name: p.default for p in pipeline_parameters(ROOT / "params.yaml")}
    render_params(values, tmp_path / "params.yaml")
    assert load_params(tmp_path / "params.yaml") == load_params(ROOT / "params.yaml")
    # Kubeflow hands integers in lists and dicts back as floats: still the same params
    values["validate__frames_per_video"] = {"refavs": 10.0}
    values["train__max_steps"] = 2
    render_params(values, tmp_path / "changed.yaml")
    changed = load_params(tmp_path / "changed.yaml")
    assert changed.validation.frames_per_video == {"refavs": 10} and changed.train.max_steps == 2


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("train__learning_rate", -1.0, "greater than 0"),
        ("rewards__names", ["format", "nope"], "unknown reward"),
        ("data__formats", ["revos", "kinetics"], "Input should be"),
    ],
)
def test_a_bad_value_is_an_error_naming_its_parameter(tmp_path, name, value, message):
    values = {p.name: p.default for p in pipeline_parameters(ROOT / "params.yaml")}
    with pytest.raises(ConfigError, match=message) as err:
        render_params({**values, name: value}, tmp_path / "params.yaml")
    assert err.value.field.startswith(name)
    assert not (tmp_path / "params.yaml").exists()  # nothing half-written


def test_an_unknown_parameter_is_an_error():
    with pytest.raises(ConfigError, match="unknown pipeline parameter 'train__lr'"):
        nest({"train__lr": 1e-4})


def test_parts_cover_every_item_exactly_once():
    items = list(range(11))
    parts = [take_part(items, (i, 3)) for i in range(3)]
    assert sorted(x for p in parts for x in p) == items
    assert parts[0] == [0, 3, 6, 9] and take_part(items, None) == items
    assert parse_part("1/4") == (1, 4) and parse_part(None) is None


@pytest.mark.parametrize("bad", ["4/4", "-1/2", "1", "a/b", "0/0"])
def test_a_malformed_part_is_an_error(bad):
    with pytest.raises(ConfigError, match="expected I/N"):
        parse_part(bad)


def test_the_release_recipe_with_its_nulls_round_trips(tmp_path):
    release = ROOT / "configs" / "params" / "release.yaml"
    params = pipeline_parameters(release)
    nulls = [p.name for p in params if p.default is None]
    assert "evaluate__videos_per_split" in nulls  # whole splits in production
    render_params({p.name: p.default for p in params}, tmp_path / "params.yaml")
    assert load_params(tmp_path / "params.yaml") == load_params(release)
