from pathlib import Path

import pytest

from omnir1.config import GrounderParams, System1Params, VideoAccuracyParams, load_params
from omnir1.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_release_params_are_the_library_defaults_and_the_papers_recipe():
    params = load_params(ROOT / "configs" / "params" / "release.yaml")
    # where the library's default runs anywhere and the release assumes its 8-GPU node: one
    # process per GPU under ZeRO-2. Attention is sdpa in both: the GPU image has no flash-attn
    # unless built with a prebuilt wheel (docker/README.md)
    assert params.system1.attn_implementation == System1Params().attn_implementation == "sdpa"
    launch = {"gpus_per_node": 8, "accelerate_config": "configs/accelerate/zero2.yaml"}
    assert params.train.model_dump(include=set(launch)) == launch
    params.train = params.train.model_copy(
        update={"gpus_per_node": 1, "accelerate_config": type(params.train)().accelerate_config}
    )
    assert params.system1 == System1Params()
    assert params.grounder == GrounderParams()
    assert params.rewards.video_accuracy == VideoAccuracyParams()
    assert params.rewards.video_accuracy.a_g == 2.0 and params.rewards.video_accuracy.a_a == 1.0
    assert params.rewards.reward_weights() == [1.0, 1.0]
    assert params.rewards.names == ["format", "video_accuracy"]
    assert params.train == type(params.train)()
    assert params.warm_start.system1.steps == 0 and params.warm_start.grounder.steps == 0


def test_sam2_every_needs_an_unweighted_sam2(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("rewards:\n  sam2_every: 4\n  video_accuracy: {a_g: 2.0}\n")
    with pytest.raises(ConfigError, match=r"sam2_every 4 needs video_accuracy\.a_g 0"):
        load_params(path)


def test_embedded_params_differ_from_the_release_only_where_they_say_so():
    embedded = load_params(ROOT / "params.yaml").model_dump()
    release = load_params(ROOT / "configs" / "params" / "release.yaml").model_dump()
    lines, section = {}, None
    for line in (ROOT / "params.yaml").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            section = line.split(":")[0]
        elif line.startswith("  ") and not line.startswith("   "):
            lines[(section, line.strip().split(":")[0])] = line
    for section in ("system1", "grounder", "train"):
        for key, value in embedded[section].items():
            if value != release[section][key]:  # every difference carries its release value
                assert "release:" in lines[(section, key)], (section, key)
    assert embedded["rewards"]["video_accuracy"]["a_g"] == 0.0  # random SAM2: logged, not weighed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("system1:\n  max_frame: 3\n", r"params\.yaml: system1\.max_frame: Extra inputs"),
        ("system1:\n  fps: fast\n", r"params\.yaml: system1\.fps: Input should be a valid number"),
        ("models:\n  tiny:\n    sam2_size: 100\n", r"models\.tiny\.sam2_size: .*multiple of 16"),
        ("data: [\n", r"params\.yaml: invalid YAML"),
    ],
)
def test_bad_params_name_the_field(tmp_path, text, message):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_params(path)


@pytest.mark.parametrize(
    "text",
    [
        "tracking:\n  uri: http://bob:hunter2@mlflow:5000\n",
        "tracking:\n  uri: postgresql://mlflow:hunter2@db/mlflow\n",
        "remote:\n  endpoint_url: https://key:hunter2@minio:9000\n",
    ],
)
def test_credentials_in_params_are_refused_without_being_echoed(tmp_path, text):
    """params.yaml is committed and any key can be a Kubeflow run's override: a password
    in a URL would be published; it is refused, and the message does not repeat it."""
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="credentials do not belong in params files") as err:
        load_params(path)
    assert "hunter2" not in str(err.value)
    path.write_text("tracking:\n  uri: http://mlflow.ml.svc:5000\n")  # no userinfo: fine
    assert load_params(path).tracking.uri == "http://mlflow.ml.svc:5000"


def test_train_params_map_to_the_papers_grpo_recipe(tmp_path):
    train = load_params(ROOT / "configs" / "params" / "release.yaml").train
    cfg = train.grpo_config(tmp_path, use_cpu=True, suppress_tokens=[5])
    assert cfg.loss_type == "grpo" and cfg.scale_rewards == "group"
    assert (cfg.num_generations, cfg.beta, cfg.learning_rate) == (8, 0.04, 1e-6)
    assert cfg.per_device_train_batch_size == 8 and cfg.steps_per_generation == 1
    assert cfg.lr_scheduler_type == "cosine" and cfg.weight_decay == 0.01
    assert (cfg.temperature, cfg.top_p, cfg.max_completion_length) == (1.0, 0.95, 800)
    assert not cfg.bf16  # on CPU
    assert cfg.generation_kwargs == {"suppress_tokens": [5]}
    assert cfg.optim == "adamw_torch"
    other = train.model_copy(update={"scale_rewards": "none", "optim": "sgd"})
    cfg = other.grpo_config(tmp_path, use_cpu=True)
    assert (cfg.scale_rewards, cfg.optim) == ("none", "sgd")


@pytest.mark.parametrize(
    "text",
    [
        "system1: {frames: images}\n",
        "train: {kinds: [appearance]}\n",
        "warm_start: {system1_stages: []}\n",
        "models: {tiny: {digit_tokens: true}}\n",
    ],
)
def test_research_knobs_are_not_product_params(tmp_path, text):
    """omnir1.experimental.params adds them for `omnir1 study`; the product refuses them."""
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="Extra inputs are not permitted"):
        load_params(path)


def _yaml_leaves(mapping: dict, leaves: set[tuple], prefix: tuple = ()) -> set[tuple]:
    """The key paths of a params file, a mapping that is one parameter (`leaves`) counted whole."""
    out = set()
    for key, value in mapping.items():
        path = (*prefix, key)
        if isinstance(value, dict) and path not in leaves:
            out |= _yaml_leaves(value, leaves, path)
        else:
            out.add(path)
    return out


def test_params_yaml_the_params_models_and_the_release_recipe_agree_on_every_key():
    """One home per setting: params.yaml names every key of the params models (each is also a
    Kubeflow pipeline parameter), and the release recipe names only keys they have."""
    import yaml

    from omnir1.kube.params import _leaves

    model = {path for path, _ in _leaves()}
    embedded = _yaml_leaves(yaml.safe_load((ROOT / "params.yaml").read_text()), model)
    assert embedded == model, (sorted(model - embedded), sorted(embedded - model))
    release_file = ROOT / "configs/params/release.yaml"
    release = _yaml_leaves(yaml.safe_load(release_file.read_text()), model)
    assert release <= model, sorted(release - model)
    load_params(ROOT / "configs" / "params" / "release.yaml")  # and its values validate


def test_each_reward_carries_its_weight_to_trl(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("rewards:\n  names: [format, video_accuracy]\n  weights: {format: 0.5}\n")
    rewards = load_params(path).rewards
    assert rewards.reward_weights() == [0.5, 1.0]  # in names' order; unlisted weighs 1
    cfg = load_params(path).train.grpo_config(
        tmp_path, use_cpu=True, reward_weights=rewards.reward_weights()
    )
    assert cfg.reward_weights == [0.5, 1.0]
    path.write_text("rewards:\n  names: [format]\n  weights: {video_accuracy: 2.0}\n")
    with pytest.raises(ConfigError, match=r"rewards: .*weights of rewards not in names"):
        load_params(path)


def test_the_release_recipe_also_works_as_an_overlay_of_params_yaml():
    """README: recipes are merged by --recipe; the release one must hold over the embedded
    default too (its a_g 2.0 needs SAM2 on every group, where params.yaml skips groups)."""
    merged = load_params(ROOT / "params.yaml", [ROOT / "configs" / "params" / "release.yaml"])
    alone = load_params(ROOT / "configs" / "params" / "release.yaml")
    assert merged.rewards == alone.rewards and merged.rewards.sam2_every == 1
    assert merged.system1 == alone.system1 and merged.grounder == alone.grounder
