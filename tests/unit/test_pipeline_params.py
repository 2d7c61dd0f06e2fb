"""A Kubeflow run's params (omnir1.kube.params): the run form resolved into each stage's values
and the data and models keys, as resolve-params outputs them; and --part I/N."""

import json
from pathlib import Path

import pytest
import yaml

from omnir1.config import load_params
from omnir1.errors import ConfigError, InputError
from omnir1.kube.params import (
    PARAMS_ENV,
    PROJECT_ENV,
    fold_overrides,
    key_kind,
    params_stages,
    pinned_model,
    resolve_run,
    stage_keys,
    stage_params_file,
)
from omnir1.parts import parse_part, take_part
from omnir1.stages import STAGES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def project(monkeypatch):
    """The project as the image's /app: its params.yaml and configs/params."""
    monkeypatch.setenv(PROJECT_ENV, str(ROOT))
    monkeypatch.delenv(PARAMS_ENV, raising=False)


def values(resolved) -> dict[str, dict]:
    return {s.name: json.loads(getattr(resolved, s.name)) for s in params_stages()}


def value_at(tree: dict, key: str):
    for part in key.split("."):
        tree = tree[part]
    return tree


def test_each_stage_gets_the_values_of_the_keys_it_reads():
    resolved = resolve_run("training")
    written = load_params(ROOT / "params.yaml").model_dump(by_alias=True, mode="json")
    # every stage with a Kubeflow step but the report (DVC's `source` stage is the data key)
    assert {s.name for s in params_stages()} == {s.name for s in STAGES} - {"report", "source"}
    for name, given in values(resolved).items():
        stage = next(s for s in STAGES if s.name == name)
        if name == "register":  # it records every value (the params hash, the file)
            assert given == written
            continue
        assert set(given) == set(stage_keys(stage)) >= set(stage.params), name
        for key, value in given.items():
            assert value == value_at(written, key), (name, key)
        if stage.per_format:  # DVC runs it per format; the step loops over data.formats
            assert given["data.formats"] == ["refavs", "revos", "mevis"]
    assert resolved.gpus_per_node == 1 and resolved.model_key == resolved.baseline_key == ""


def test_every_stage_key_is_a_params_key():
    for stage in params_stages():
        for key in stage_keys(stage):
            if key != "*":
                assert key_kind(key)[0] in ("section", "field"), (stage.name, key)


@pytest.mark.parametrize(
    ("overrides", "changed"),
    [
        ({"train.learning_rate": 1e-3}, {"train", "register"}),
        ({"evaluate.videos_per_split": 5}, {"evaluate", "register"}),
        ({"evaluate.system1_batch_size": 4}, {"evaluate", "probe", "register"}),
        (
            {"system1.max_frames": 12},
            {"preprocess", "warm_start", "train", "evaluate", "probe", "register"},
        ),
        ({"data.synth.seed": 3}, {"data", "register"}),
    ],
)
def test_a_changed_value_changes_only_the_stages_that_read_it(overrides, changed):
    """What makes Kubeflow rerun only the affected stages: their input values change."""
    before = values(resolve_run("training"))
    after = values(resolve_run("training", overrides=json.dumps(overrides)))
    assert {name for name in before if before[name] != after[name]} == changed


def test_a_recipe_and_the_settings_set_their_keys():
    resolved = resolve_run(
        "training",
        recipe="refavs",
        data_source="synth",
        gpus_per_node=8,
        base_models="models/tiny",
    )
    given = values(resolved)
    assert given["train"]["data.train_format"] == "refavs"  # configs/params/refavs.yaml
    assert given["train"]["rewards"]["names"] == ["format", "refavs_box"]
    assert given["train"]["train"]["gpus_per_node"] == 8 and resolved.gpus_per_node == 8
    assert given["data"]["data.source"] == "synth"
    # the embedded models stay so, keyed by what builds them
    assert given["models"]["models"]["dir"] == "models/tiny"
    tiny = resolve_run("training", overrides='{"models.tiny.seed": 1}')
    assert tiny.models_key != resolved.models_key


def test_overrides_set_mapping_entries_and_sections_key_by_key():
    resolved = resolve_run(
        "training",
        overrides=json.dumps(
            {
                "register.tolerances.eval.trained.revos.JF": 0.05,  # a metric name, dots and all
                "data.sources.revos": "s3://datasets/revos/v3",
                "train": {"max_steps": 5},  # a section: the keys given, the others kept
            }
        ),
        data_version="v3",  # no listing of that bucket here
    )
    given = values(resolved)
    assert given["register"]["register"]["tolerances"] == {"eval.trained.revos.JF": 0.05}
    assert given["data"]["data.sources"] == {"revos": "s3://datasets/revos/v3"}
    assert given["train"]["train"]["max_steps"] == 5
    assert given["train"]["train"]["learning_rate"] == 1e-4  # params.yaml's


@pytest.mark.parametrize(
    ("form", "field", "message"),
    [
        ({"overrides": '{"train.lr": 1}'}, "overrides: train.lr", "train has: num_generations"),
        ({"overrides": '{"trian.lr": 1}'}, "overrides: trian.lr", "params.yaml has: data"),
        (
            {"overrides": '{"train.learning_rate": -1}'},
            "overrides: train.learning_rate",
            "> 0|greater than 0",
        ),
        ({"overrides": '{"train.max_steps": "many"}'}, "overrides: train.max_steps", "integer"),
        (
            {"overrides": '{"rewards.names": ["nope"]}'},
            "overrides: rewards.names",
            "unknown reward",
        ),
        (
            {"overrides": '{"data.formats": ["kinetics"]}'},
            "overrides: data.formats",
            "Input should be",
        ),
        ({"overrides": '{"train.seed.x": 1}'}, "overrides: train.seed.x", "not a mapping"),
        ({"overrides": '{"train": 3}'}, "overrides: train", "JSON object of its keys"),
        ({"overrides": "[1]"}, "overrides", "JSON object of params keys"),
        ({"overrides": "{train.max_steps: 1}"}, "overrides", "not JSON"),
        ({"gpus_per_node": -2}, "gpus_per_node", "greater than or equal to 1"),
        (
            {"data_source": "synth", "overrides": '{"data.source": "synth"}'},
            "overrides: data.source",
            "also set by the run's data_source",
        ),
        ({"recipe": "nope"}, "recipe", r"unknown recipe 'nope'; valid: \['refavs', 'release'\]"),
    ],
)
def test_a_wrong_run_form_is_an_error_naming_what_is_wrong(form, field, message):
    with pytest.raises(ConfigError, match=message) as err:
        resolve_run("training", **form)
    assert err.value.field == field


def test_the_data_key_follows_the_sources_content_or_the_version_named(tmp_path):
    synth = resolve_run("training")
    assert resolve_run("training").data_key == synth.data_key  # the same run form, the same key
    assert resolve_run("training", overrides='{"data.synth.videos": 6}').data_key != synth.data_key
    folder = tmp_path / "revos"
    (folder / "videos").mkdir(parents=True)
    (folder / "videos" / "a.mp4").write_bytes(b"x" * 10)
    form = dict(data_source=str(folder), overrides='{"data.formats": ["revos"]}')
    first = resolve_run("training", **form).data_key
    assert resolve_run("training", **form).data_key == first
    (folder / "videos" / "b.mp4").write_bytes(b"y")
    second = resolve_run("training", **form).data_key
    assert second != first  # a new file: fetched again
    (folder / "videos" / "b.mp4").write_bytes(b"yy")
    assert resolve_run("training", **form).data_key != second  # a changed one too
    # a version named by the user keys the data instead of the listing
    named = resolve_run("training", data_version="v3", **form).data_key
    (folder / "videos" / "c.mp4").write_bytes(b"z")
    assert resolve_run("training", data_version="v3", **form).data_key == named
    assert resolve_run("training", data_version="v4", **form).data_key != named


def test_model_keys_follow_the_models_folder(tmp_path):
    params = load_params(ROOT / "params.yaml")
    assert pinned_model(params, "") == ("", "")
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "models.json").write_text("{}")
    uri, key = pinned_model(params, str(folder))
    assert uri == str(folder)
    (folder / "weights.safetensors").write_bytes(b"w")
    assert pinned_model(params, str(folder))[1] != key
    evaluation = resolve_run("evaluation", model_uri=str(folder), baseline_uri="")
    assert evaluation.model_uri == str(folder) and evaluation.model_key
    assert evaluation.baseline_uri == evaluation.baseline_key == evaluation.models_key == ""
    with pytest.raises(InputError, match="no such model folder") as err:  # before any fetch
        resolve_run("evaluation", model_uri=str(folder), baseline_uri=str(tmp_path / "none"))
    assert err.value.field == "baseline_uri"


def test_a_step_reads_its_values_over_the_images_params(tmp_path):
    """A mapping or section given is replaced whole (an entry removed stays removed), a key
    given alone replaces that key; what the stage does not read stays the image's."""
    base = tmp_path / "params.yaml"
    written = yaml.safe_load((ROOT / "params.yaml").read_text())
    written["register"]["tolerances"] = {"eval.trained.revos.JF": 0.2}
    written["tracking"]["experiment"] = "from-the-image"
    base.write_text(yaml.safe_dump(written))
    given = {
        "register": {**written["register"], "tolerances": {}},
        "data.formats": ["revos"],
        "train.seed": 7,
    }
    with stage_params_file(json.dumps(given), base) as path:
        params = load_params(path)
    assert not Path(path).exists()  # removed once the step is done
    assert params.registry.tolerances == {}
    assert params.data.formats == ["revos"] and params.train.seed == 7
    assert params.data.source == "synth" and params.tracking.experiment == "from-the-image"
    assert params.train.learning_rate == written["train"]["learning_rate"]


def test_params_keys_among_run_arguments_join_the_overrides():
    parameters = {"parts": None, "recipe": None, "overrides": None}
    given = {"parts": 2, "train.max_steps": 3, "train__seed": 1, "overrides": '{"probe.seed": 2}'}
    out = fold_overrides(given, parameters)
    assert out["parts"] == 2
    assert json.loads(out["overrides"]) == {"probe.seed": 2, "train.max_steps": 3, "train.seed": 1}
    assert fold_overrides({"parts": 2}, parameters) == {"parts": 2}  # nothing to fold
    with pytest.raises(ConfigError, match=r"neither a pipeline parameter \(overrides, parts"):
        fold_overrides({"nodes": 2}, parameters)
    with pytest.raises(ConfigError, match="train has"):
        fold_overrides({"train.steps": 2}, parameters)


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
