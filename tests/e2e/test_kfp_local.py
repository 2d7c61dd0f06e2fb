"""`omnir1 pipeline run --local`: the training pipeline end to end with kfp.local on the
embedded default (smaller sets and shorter runs, as the DVC end-to-end test), every component
the code the cluster runs; submitted again with the same inputs, every task but the uncached
ones served from Kubeflow's cache (kfp.local keys it as the cluster does); then the evaluation
pipeline on the model it registered, fetched back from the registry as models:/NAME@champion,
reusing the data stages; and a failing task fails the run clearly."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import end_to_end_params, kill_when

ROOT = Path(__file__).resolve().parents[2]
OMNIR1 = str(Path(sys.executable).parent / "omnir1")
ENV = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}


def small_params(folder: Path, **changes) -> Path:
    params = end_to_end_params()
    params["data"]["synth"]["workers"] = 1
    params["preprocess"]["workers"] = 1
    params["tracking"]["uri"] = f"sqlite:///{folder / 'mlruns.db'}"
    for key, value in changes.items():
        section, name = key.split("__")
        params[section][name] = value
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def pipeline_command(work: Path, params: Path, *args: str) -> list[str]:
    return [
        OMNIR1,
        "pipeline",
        "run",
        "--local",
        "--project",
        str(ROOT),
        "--params",
        str(params),
        "--pipeline-root",
        str(work / "root"),
        "--set",
        "parts=2",
        *args,
    ]


def executed(run: Path) -> set[str]:
    """The tasks a kfp.local run ran (one folder each; a cached task has none)."""
    folders = [p for p in run.iterdir() if p.is_dir() and not p.name.startswith("for-loop-")]
    folders += [p for loop in run.glob("for-loop-*") for p in loop.iterdir() if p.is_dir()]
    return {p.name.rsplit("-", 1)[0] if p.name[-1].isdigit() else p.name for p in folders}


def run_pipeline(work: Path, params: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        pipeline_command(work, params, *args),
        cwd=work,
        env=ENV,
        capture_output=True,
        text=True,
    )


@pytest.mark.slow
@pytest.mark.timeout(1800)  # two whole pipelines, each task a fresh process (~7 min on 1 core)
def test_training_then_evaluation_pipelines_run_locally(tmp_path):
    params = small_params(tmp_path)
    out = run_pipeline(tmp_path, params, "--cache")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads(out.stdout[out.stdout.rindex("{\n") :])
    run = Path(result["run"])
    assert "train" in executed(run) and "predict-part" in executed(run)
    decision = json.loads(Path(result["decision"]).read_text())
    assert decision["version"] == "1" and decision["promoted"]  # the first model: champion
    evaluation = json.loads(Path(result["evaluation"]).read_text())
    for label in ("untrained", "trained"):
        assert set(evaluation[label]) == {"refavs", "revos", "mevis"}
    page = Path(result["report"]).read_text()
    assert "Hallucination probes" in page and "data:image/png;base64," in page
    # the fan-out: two parts of every data set, merged into every video once
    (merged,) = run.glob("merge-shards/shards")
    for fmt in ("refavs", "revos", "mevis"):
        index = json.loads((merged / fmt / "index.json").read_text())
        assert len(index["shards"]) == 6, fmt
    parts = sorted(run.glob("for-loop-*-iteration-*/preprocess-part/shards"))
    assert len(parts) == 2
    assert len(list(run.glob("for-loop-*-iteration-*/predict-part*/predictions"))) == 2
    train = json.loads(next(run.glob("train/run/train.json")).read_text())
    assert train["steps"] == 2

    # the same inputs again: only what must run every time runs (a second version is made)
    out = run_pipeline(tmp_path, params, "--cache")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    second = json.loads(out.stdout[out.stdout.rindex("{\n") :])
    assert executed(Path(second["run"])) == {"resolve-params", "register", "report"}
    assert json.loads(Path(second["decision"]).read_text())["version"] == "2"

    # the evaluation-only pipeline on the registered champion, against the warm start: the
    # data stages read the same values from the same data, so they come from the cache
    warm = next(run.glob("warm-start/warm"))
    out = run_pipeline(
        tmp_path,
        params,
        "--cache",
        "--pipeline",
        "evaluation",
        "--set",
        "model_uri=models:/omnir1-system1@champion",
        "--set",
        f"baseline_uri={warm}",
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads(out.stdout[out.stdout.rindex("{\n") :])
    ran = executed(Path(result["run"]))
    assert {"resolve-params", "fetch-model", "predict-part", "score", "probe", "report"} <= ran
    assert not {"fetch-data", "validate-data", "preprocess-part", "merge-shards"} & ran
    assert result["decision"] is None  # nothing is registered
    again = json.loads(Path(result["evaluation"]).read_text())
    assert again["trained"] == evaluation["trained"]  # the same model, the same figures
    assert again["untrained"] == evaluation["untrained"]


@pytest.mark.slow
def test_a_failing_task_fails_the_run_and_names_it(tmp_path):
    params = small_params(tmp_path, data__source=str(tmp_path / "no-such-folder"))
    out = run_pipeline(tmp_path, params)
    assert out.returncode == 1
    # the first step keys the source: a folder that is not there fails it, naming the folder
    assert "pipeline training failed" in out.stderr and "resolve-params" in out.stderr
    assert "no-such-folder: data.sources.refavs: data set folder not found" in out.stdout


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_killed_local_run_resumes_training_when_run_again(tmp_path):
    """The whole `pipeline run --local` killed while GRPO runs: run again, the train task
    finds the checkpoints of a run of the same inputs (PIPELINE_ROOT-checkpoints/FINGERPRINT)
    and ends with the weights of an uninterrupted `omnir1 train` on the same artifacts."""
    import safetensors.torch
    import torch

    from omnir1.data.synth import SynthConfig, synthesize
    from omnir1.rl.checkpoints import CHECKPOINT_DONE

    # a data set folder (fetch copies it byte for byte): synthesising again may encode the
    # same frames into other mp4 bytes, and other data is another run
    source = tmp_path / "revos"
    synthesize(SynthConfig(format="revos", videos=6, workers=1), source, progress=False)
    changes = dict(train__max_steps=4, train__save_steps=1, train__learning_rate=1.0e-3)
    params = small_params(tmp_path, data__formats=["revos"], data__source=str(source), **changes)
    kill_when(  # the whole local run, right after the train task's checkpoint 2
        pipeline_command(tmp_path, params),
        cwd=tmp_path,
        env=ENV,
        log=tmp_path / "killed.log",
        appears=tmp_path / "root-checkpoints",
        pattern=f"*/checkpoint-2/{CHECKPOINT_DONE}",
    )

    out = run_pipeline(tmp_path, params)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run = Path(json.loads(out.stdout[out.stdout.rindex("{\n") :])["run"])
    train = json.loads(next(run.glob("train/run/train.json")).read_text())
    assert train["steps"] == 4 and train["resumed_from"] in ("checkpoint-2", "checkpoint-3")

    data = next(run.glob("fetch-data*/datasets")) / "revos"
    shards = next(run.glob("merge-shards/shards")) / "revos"
    whole = tmp_path / "whole"
    warm = next(run.glob("warm-start/warm"))
    command = [OMNIR1, "train", "--data", data, "--format", "revos", "--shards", shards]
    command += ["--models", warm, "--out", whole, "--params", params]
    subprocess.run(list(map(str, command)), cwd=tmp_path, env=ENV, check=True, capture_output=True)

    def weights(model: Path) -> dict:
        return safetensors.torch.load_file(model / "system1" / "model.safetensors")

    resumed, uninterrupted = weights(next(run.glob("train/model"))), weights(whole / "model")
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)
