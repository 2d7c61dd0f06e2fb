from pathlib import Path

import pytest

from omnir1.config import load_params
from omnir1.errors import ConfigError
from omnir1.rl.rewards import RewardWeights
from omnir1.systems.grounding import GrounderConfig
from omnir1.systems.reasoning import System1Config

ROOT = Path(__file__).resolve().parents[2]


def test_project_params_load_and_match_the_library_defaults():
    params = load_params(ROOT / "params.yaml")
    # params.yaml holds the release values, which are also the library's defaults
    assert params.system1.to_config() == System1Config()
    assert params.grounder.to_config() == GrounderConfig()
    assert params.rewards.weights.to_weights() == RewardWeights()
    assert params.rewards.names == ["format", "video_accuracy"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("system1:\n  max_frame: 3\n", r"params\.yaml: system1\.max_frame: Extra inputs"),
        ("system1:\n  fps: fast\n", r"params\.yaml: system1\.fps: Input should be a valid number"),
        ("rewards:\n  names: [format, nope]\n", r"rewards\.names: unknown reward\(s\) \['nope'\]"),
        ("models:\n  tiny:\n    sam2_size: 100\n", r"models\.tiny\.sam2_size: .*multiple of 16"),
        ("data: [\n", r"params\.yaml: invalid YAML"),
    ],
)
def test_bad_params_name_the_field(tmp_path, text, message):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_params(path)
