"""`omnir1 train --resume` after a SIGKILL: the same next steps and final weights as an
uninterrupted run; checkpoints that were not written to the end are never resumed from."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from omnir1.rl.checkpoints import CHECKPOINT_DONE, latest_checkpoint

# 4 prompts of one video, 2 per step: 2 steps per epoch, so the resumed process starts epoch 1;
# 3 steps: the finished run ends inside an epoch (where transformers would run a step more)
PARAMS = """
train:
  num_generations: 2
  prompts_per_step: 2
  max_completion_length: 12
  learning_rate: 1.0e-3
  save_steps: 1
  max_steps: 3
"""


@pytest.fixture(scope="module")
def four_prompts(tmp_path_factory) -> Path:
    from omnir1.data.synth import SynthConfig, synthesize
    from omnir1.rl.train import trainable_samples

    folder = tmp_path_factory.mktemp("resume") / "revos"
    synthesize(SynthConfig(format="revos", videos=1, seed=3), folder, progress=False)
    assert len(trainable_samples("revos", folder)) == 4
    return folder


def _train(args: list[str], log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    with log.open("ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "omnir1.cli", "train", *args],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
        )


def _finish(proc: subprocess.Popen, log: Path) -> None:
    assert proc.wait(timeout=500) == 0, log.read_text()[-3000:]


def _steps(out: Path) -> dict[int, dict]:
    """Per-step logs of the final checkpoint, without wall-clock times."""
    state = json.loads((out / "checkpoints" / "checkpoint-3" / "trainer_state.json").read_text())
    return {
        e["step"]: {k: v for k, v in e.items() if "time" not in k}
        for e in state["log_history"]
        if "loss" in e
    }


@pytest.mark.slow
def test_resume_after_sigkill_gives_the_uninterrupted_steps(tiny_models, four_prompts, tmp_path):
    import mlflow
    import safetensors.torch

    params = tmp_path / "params.yaml"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params.write_text(PARAMS + f"tracking:\n  uri: {tracking}\n  experiment: resume\n")
    base = ["--data", str(four_prompts), "--format", "revos", "--models", str(tiny_models)]
    base += ["--params", str(params)]
    a, b, log = tmp_path / "a", tmp_path / "b", tmp_path / "train.log"

    _finish(_train([*base, "--out", str(a)], log), log)

    # B: killed while step 3 runs, right after checkpoint-2 is complete
    proc = _train([*base, "--out", str(b)], log)
    done = b / "checkpoints" / "checkpoint-2" / CHECKPOINT_DONE
    while not done.is_file():
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert latest_checkpoint(b / "checkpoints").name == "checkpoint-2"

    # a checkpoint-3 left half-written (trainer state, no weights, not marked complete)
    partial = b / "checkpoints" / "checkpoint-3"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(b / "checkpoints" / "checkpoint-2", partial)
    (partial / "model.safetensors").unlink()
    (partial / CHECKPOINT_DONE).unlink()

    _finish(_train([*base, "--out", str(b), "--resume"], log), log)
    summary = json.loads((b / "train.json").read_text())
    assert summary["resumed_from"] == "checkpoint-2" and summary["steps"] == 3
    assert not summary["reused_finished_run"]

    # step 3: same data, completions, rewards, KL, loss, gradients; then the same weights
    steps_a, steps_b = _steps(a), _steps(b)
    assert sorted(steps_a) == sorted(steps_b) == [1, 2, 3]
    assert steps_a == steps_b
    client = mlflow.MlflowClient(tracking_uri=tracking)
    runs = client.search_runs([client.get_experiment_by_name("resume").experiment_id])
    run_a = next(r for r in runs if r.info.run_name == "a")
    run_b = max((r for r in runs if r.info.run_name == "b"), key=lambda r: r.info.start_time)

    def table(run, step: int) -> dict:
        path = client.download_artifacts(
            run.info.run_id, f"completions/step_{step:06d}.json", str(tmp_path / run.info.run_id)
        )
        return json.loads(Path(path).read_text())

    assert table(run_a, 3) == table(run_b, 3)

    weights_a = safetensors.torch.load_file(a / "model" / "system1" / "model.safetensors")
    weights_b = safetensors.torch.load_file(b / "model" / "system1" / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    # and training did move them
    base_weights = safetensors.torch.load_file(tiny_models / "system1" / "model.safetensors")
    assert any(not torch.equal(base_weights[k], weights_a[k]) for k in weights_a)

    # the finished run resumed (what `dvc repro -f` does): no further step, the same model
    c = tmp_path / "c"
    resume_a = ["--checkpoints", str(a / "checkpoints"), "--resume"]
    _finish(_train([*base, "--out", str(c), *resume_a], log), log)
    summary = json.loads((c / "train.json").read_text())
    assert summary["steps"] == 3 and summary["resumed_from"] == "checkpoint-3"
    assert summary["reused_finished_run"]
    assert latest_checkpoint(a / "checkpoints").name == "checkpoint-3"  # no checkpoint-4
    assert [row["step"] for row in json.loads((c / "train_curve.json").read_text())] == [1, 2, 3]
    weights_c = safetensors.torch.load_file(c / "model" / "system1" / "model.safetensors")
    assert all(torch.equal(weights_a[k], weights_c[k]) for k in weights_a)
    assert "no step trained" in log.read_text()


def test_only_checkpoints_written_to_the_end_are_resumed(tmp_path):
    def checkpoint(name: str, *, done: bool) -> None:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "trainer_state.json").write_text("{}")
        if done:
            (folder / CHECKPOINT_DONE).write_text("{}")

    assert latest_checkpoint(tmp_path) is None
    checkpoint("checkpoint-2", done=True)
    checkpoint("checkpoint-10", done=True)
    checkpoint("checkpoint-11", done=False)  # killed while saving
    checkpoint("checkpoint-12.tmp", done=True)
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-10"


def test_each_epoch_has_its_own_order_whatever_the_process_saw_before():
    """A process resumed in epoch 1 draws epoch 1's order, not epoch 0's again."""
    from trl.trainer.utils import RepeatSampler

    from omnir1.rl.trainer import EpochSampler

    def sampler(cls):
        return cls(list(range(8)), mini_repeat_count=2, batch_size=2, seed=5)

    uninterrupted = sampler(EpochSampler)
    epochs = []
    for epoch in range(3):
        uninterrupted.set_epoch(epoch)
        epochs.append(list(uninterrupted))
    assert epochs[0] == list(sampler(RepeatSampler))  # epoch 0 as TRL orders it
    assert epochs[0] != epochs[1] != epochs[2]
    for epoch in (1, 2):
        resumed = sampler(EpochSampler)
        resumed.set_epoch(epoch)
        assert list(resumed) == epochs[epoch]


def test_auto_resume_continues_only_a_run_of_the_same_inputs(tmp_path):
    from omnir1.config import load_params
    from omnir1.rl.checkpoints import FINGERPRINT_FILE, claim_checkpoints, run_fingerprint

    data, models, checkpoints = tmp_path / "data", tmp_path / "models", tmp_path / "checkpoints"
    (data / "Videos").mkdir(parents=True)
    (data / "meta_expressions.json").write_text('{"videos": {}}')
    (data / "Videos" / "a.mp4").write_bytes(b"\0" * 100)
    models.mkdir()
    (models / "model.safetensors").write_bytes(b"weights")
    params = load_params(Path(__file__).resolve().parents[2] / "params.yaml")

    def fingerprint(p=params):
        return run_fingerprint(p, data=data, fmt="revos", models_dir=models)

    first = fingerprint()
    assert claim_checkpoints(checkpoints, first) is None  # nothing yet: the folder is claimed
    assert json.loads((checkpoints / FINGERPRINT_FILE).read_text()) == first
    for step in (1, 2):
        (checkpoints / f"checkpoint-{step}").mkdir()
        (checkpoints / f"checkpoint-{step}" / CHECKPOINT_DONE).write_text("{}")
    assert claim_checkpoints(checkpoints, fingerprint()) == checkpoints / "checkpoint-2"

    # media count by size (a re-encode of another size changes the run); the rest by content
    (data / "Videos" / "a.mp4").write_bytes(b"\1" * 100)
    assert fingerprint() == first
    (models / "model.safetensors").write_bytes(b"weightz")
    assert fingerprint()["models"] != first["models"]
    (models / "model.safetensors").write_bytes(b"weights")
    other = params.model_copy(deep=True)
    other.train.learning_rate *= 2
    changed = fingerprint(other)
    assert changed["params"] != first["params"] and changed["data"] == first["data"]
    tracking_only = params.model_copy(deep=True)
    tracking_only.tracking.experiment = "elsewhere"  # not training inputs
    tracking_only.preprocess.workers += 1
    assert fingerprint(tracking_only) == first

    assert claim_checkpoints(checkpoints, changed) is None  # another run's: cleared
    assert not list(checkpoints.glob("checkpoint-*"))
    assert json.loads((checkpoints / FINGERPRINT_FILE).read_text()) == changed
