"""`omnir1 train`: GRPO steps from params.yaml, checkpoints, resume, the trained model folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from omnir1.cli import main
from omnir1.models.loading import load_models

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

PARAMS = """
train:
  num_generations: 2
  max_completion_length: 12
  learning_rate: 1.0e-3
  save_steps: 1
  max_steps: 2
"""


def test_train_checkpoints_resumes_and_writes_a_model_folder(
    tiny_models, synth_sets, tmp_path, monkeypatch, mlflow_server
):
    # the server's URL in the environment wins over params.yaml (a file that is never written)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    params = tmp_path / "params.yaml"
    unused = f"sqlite:///{tmp_path / 'unused.db'}"
    params.write_text(PARAMS + f"tracking:\n  uri: {unused}\n  experiment: test-train\n")
    out = tmp_path / "run"
    args = ["train", "--data", str(synth_sets["revos"]), "--format", "revos"]
    args += ["--models", str(tiny_models), "--out", str(out), "--params", str(params)]
    assert main(args) == 0
    summary = json.loads((out / "train.json").read_text())
    assert summary["steps"] == 2 and summary["resumed_from"] is None
    assert "rewards/video_accuracy/mean" in summary["last"]
    # the step time split, per step in the curve DVC plots and on average in the metrics
    split = {"generation_s", "system2_s", "reward_s", "update_s"}
    assert set(summary["step_seconds"]) == split
    curve = json.loads((out / "train_curve.json").read_text())
    assert [row["step"] for row in curve] == [1, 2]
    assert {f"time/{k}" for k in split} | {"reward", "kl"} <= curve[0].keys()
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == [
        "checkpoint-1",
        "checkpoint-2",
    ]
    model = load_models(out / "model", system2=False)
    assert model.manifest.name == "omnir1-tiny-seed0-grpo"

    assert main([*args, "--resume", "--max-steps", "3"]) == 0
    resumed = json.loads((out / "train.json").read_text())
    assert resumed["steps"] == 3 and resumed["resumed_from"] == "checkpoint-2"

    # MLflow: parameters, per-step metrics and completion tables of both runs
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("test-train").experiment_id])
    assert len(runs) == 2
    first = min(runs, key=lambda r: r.info.start_time)
    assert first.data.params["train.num_generations"] == "2"
    assert first.data.params["rewards.video_accuracy.a_g"] == "2.0"
    # TRL's names, hierarchy kept: MLflow's UI groups them by their "/" prefixes
    history = client.get_metric_history(first.info.run_id, "rewards/video_accuracy/mean")
    assert [m.step for m in history] == [1, 2]
    assert {"kl", "time/system2_s", "time/generation_s", "time/update_s"} <= (
        first.data.metrics.keys()
    )
    assert "completions/mean_length" in first.data.metrics
    # train.json names its run: `omnir1 register --training` puts the version there
    last = max(runs, key=lambda r: r.info.start_time)
    assert resumed["mlflow"]["run_id"] == last.info.run_id
    assert summary["mlflow"]["run_id"] == first.info.run_id
    tables = [a.path for a in client.list_artifacts(first.info.run_id, "completions")]
    assert tables == ["completions/step_000001.json", "completions/step_000002.json"]
    local = client.download_artifacts(first.info.run_id, tables[0], str(tmp_path))
    table = json.loads(Path(local).read_text())
    assert {"sample", "completion", "reward_format", "components"} <= set(table["columns"])
    assert not (tmp_path / "unused.db").exists()


def test_training_needs_expressions_with_a_referent(synth_sets):
    from omnir1.errors import DataError
    from omnir1.rl.train import trainable_samples

    assert all(not s.is_null for s in trainable_samples("revos", synth_sets["revos"]))
    with pytest.raises(DataError, match="no 'test' expressions with a referent"):
        trainable_samples("revos", synth_sets["revos"], split="test")
