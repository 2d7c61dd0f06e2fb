"""`make demo`'s job (scripts/demo.sh = `dvc repro` of dvc.yaml) on a copy of the project with
smaller params: every stage runs and writes what the next one reads, the run ends with the
headline table, the stage times and the report; a second run reruns nothing, and a changed
reward weight makes only training and what follows stale."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import end_to_end_params, kill_when

ROOT = Path(__file__).resolve().parents[2]


def project(tmp_path: Path, params: dict):
    """A copy of the project (dvc.yaml, src/) with these params, `dvc init`-ed; returns its
    folder, the environment its commands run in and a runner that checks they succeed."""
    work = tmp_path / "project"
    work.mkdir()
    shutil.copy(ROOT / "dvc.yaml", work)
    shutil.copytree(
        ROOT / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    params["tracking"]["enabled"] = False
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
        "PATH": f"{ROOT / '.venv/bin'}:{os.environ['PATH']}",
        "OMNIR1_PROJECT": str(work),
    }

    def run(*args: str) -> str:
        out = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        return out.stdout

    run("dvc", "init", "--no-scm", "-q")
    return work, env, run


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline(tmp_path):
    params = end_to_end_params()  # every split of every format, smaller and shorter
    work, _, run = project(tmp_path, params)
    demo = run("bash", str(ROOT / "scripts" / "demo.sh"))
    for fmt in params["data"]["formats"]:
        assert (work / "data" / "sets" / fmt / "synth_objects.json").exists()
        report = json.loads((work / "reports/validation" / fmt / "report.json").read_text())
        assert report["ok"] and not report["failed"], fmt
        assert (work / "data" / "shards" / fmt / "index.json").is_file()
    train = json.loads((work / "metrics" / "train.json").read_text())
    assert train["steps"] == 2 and set(train["step_seconds"]) >= {"generation_s", "update_s"}
    assert "reward" in json.loads((work / "metrics" / "train_curve.json").read_text())[0]
    evaluation = json.loads((work / "metrics" / "evaluate.json").read_text())
    assert list(evaluation["models"]) == ["untrained", "trained"]
    for label in ("untrained", "trained"):
        assert set(evaluation[label]) == {"refavs", "revos", "mevis"}
    probe = json.loads((work / "metrics" / "probe.json").read_text())
    assert probe["trained"]["avh"]["n"] > 0 and probe["trained"]["cmm"]["n"] > 0
    decision = json.loads((work / "reports" / "register.json").read_text())
    assert decision["version"] == "1" and decision["previous_champion"] is None
    # no champion yet, but the challenger is also gated against the model it started from
    against = {r["against"] for r in decision["reasons"]}
    assert against == {"champion", "start"}
    assert decision["promoted"] == all(r["result"] != "fail" for r in decision["reasons"])
    assert f"registry: {decision['summary']}" in demo and "| gate | against |" in demo
    page = (work / "reports" / "index.html").read_text()
    assert "Hallucination probes" in page and "data:image/png;base64," in page
    # the end of the demo: the headline table, the wall time per stage, where the report is
    assert "| revos JF |" in demo and "| probe avh.accuracy |" in demo
    assert "wall time per stage" in demo and "| train (revos) |" in demo and "| benchmark |" in demo
    assert "| data fetch (mevis) |" in demo
    assert f"report: {work / 'reports' / 'index.html'}" in demo
    shown = run("dvc", "metrics", "show", "--json")
    assert "metrics/evaluate.json" in shown and "metrics/probe.json" in shown

    again = run("bash", str(ROOT / "scripts" / "demo.sh"))
    assert "nothing to do" in again and "| revos JF |" in again

    a_k, seed = params["rewards"]["video_accuracy"]["a_k"], params["data"]["synth"]["seed"]
    params["rewards"]["video_accuracy"]["a_k"] = 0.5  # a reward weight: training and what follows
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    # stale now: train; evaluate, probe, register and report rerun once its outputs change
    # (the source stages are always "changed": they list the data sources on every repro)
    stale = {s for s in json.loads(run("dvc", "status", "--json")) if not s.startswith("source@")}
    assert stale == {"train"}
    params["data"]["synth"]["seed"] = 1
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    assert "data@revos" in run("dvc", "status")

    # back to the run's own params: the train stage forced alone reuses the finished run of the
    # same inputs (no step, the same model, and says so); a forced demo clears it and retrains
    params["rewards"]["video_accuracy"]["a_k"], params["data"]["synth"]["seed"] = a_k, seed
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    weights = (work / "runs/train/model/system1/model.safetensors").read_bytes()
    run("dvc", "repro", "-f", "-s", "train")
    train = json.loads((work / "metrics" / "train.json").read_text())
    assert train["reused_finished_run"] and train["steps"] == 2
    assert train["resumed_from"] == "checkpoint-2"
    assert (work / "runs/train/model/system1/model.safetensors").read_bytes() == weights
    run("bash", str(ROOT / "scripts" / "demo.sh"), "-f", "-s", "train")
    train = json.loads((work / "metrics" / "train.json").read_text())
    assert not train["reused_finished_run"] and train["resumed_from"] is None
    assert train["steps"] == 2


@pytest.mark.slow
def test_a_killed_train_stage_resumes_on_the_next_repro(tmp_path):
    """`dvc repro` killed while GRPO runs: the next `dvc repro` continues from the last
    checkpoint (runs/train_checkpoints persists) and ends with the weights of an
    uninterrupted run."""
    import safetensors.torch
    import torch

    from omnir1.rl.checkpoints import CHECKPOINT_DONE

    params = end_to_end_params()
    params["data"]["formats"] = ["revos"]
    params["train"].update(max_steps=4, save_steps=1, learning_rate=1.0e-3)
    work, env, run = project(tmp_path, params)

    kill_when(  # right after checkpoint 2 is complete, while step 3 runs
        ["dvc", "repro", "train"],
        cwd=work,
        env=env,
        log=tmp_path / "repro.log",
        appears=work / "runs" / "train_checkpoints",
        pattern=f"checkpoint-2/{CHECKPOINT_DONE}",
    )
    assert not (work / "metrics" / "train.json").exists()

    again = run("dvc", "repro", "train")
    assert "Running stage 'train'" in again and "Running stage 'warm_start'" not in again
    summary = json.loads((work / "metrics" / "train.json").read_text())
    assert summary["steps"] == 4 and summary["resumed_from"] in ("checkpoint-2", "checkpoint-3")

    run(  # the same stage's command, never interrupted
        "omnir1",
        "train",
        "--data",
        "data/sets/revos",
        "--format",
        "revos",
        "--shards",
        "data/shards/revos",
        "--models",
        "models/warm",
        "--out",
        "runs/whole",
    )

    def weights(run_dir: str) -> dict:
        return safetensors.torch.load_file(work / run_dir / "model/system1/model.safetensors")

    resumed, whole = weights("runs/train"), weights("runs/whole")
    assert resumed.keys() == whole.keys()
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)
    assert "train" not in json.loads(run("dvc", "status", "--json"))


@pytest.mark.slow
def test_the_pipeline_runs_on_minute_long_clips(tmp_path):
    """`data synth --duration 60`: clips five times longer than System 1's 24 frames at 2 fps
    cover, through warm start, 2 GRPO steps, predict, evaluate and probe. System 1's frames are
    spread over the whole minute and its answers are read against those times."""
    params = end_to_end_params()
    params["data"]["synth"]["duration_s"] = 60.0
    params["data"]["formats"] = ["revos", "mevis"]  # RefAVS clips are 10 frames by definition
    work, _, run = project(tmp_path, params)
    run("bash", str(ROOT / "scripts" / "demo.sh"))
    for fmt in ("revos", "mevis"):
        index = json.loads((work / "data" / "shards" / fmt / "index.json").read_text())
        some = index["shards"][0]["video_id"]
        meta = json.loads((work / "data" / "shards" / fmt / some / "meta.json").read_text())
        assert meta["duration_s"] == pytest.approx(60.0, abs=0.2)
        times = meta["times"]
        assert len(times) == 24 and times[-1] == pytest.approx(57.5)  # one frame per 2.5 s
    train = json.loads((work / "metrics" / "train.json").read_text())
    assert train["steps"] == 2
    evaluation = json.loads((work / "metrics" / "evaluate.json").read_text())
    assert set(evaluation["trained"]) == {"revos", "mevis"}
    probe = json.loads((work / "metrics" / "probe.json").read_text())
    assert probe["trained"]["avh"]["n"] > 0
