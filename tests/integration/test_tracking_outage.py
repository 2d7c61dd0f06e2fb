"""MLflow going away during training (params.yaml tracking.on_unavailable): with "buffer"
training goes on, the steps logged while the server was down reach it, in order and with their
own step numbers, once it answers again, and what never got there is written to a file; with
"fail" the run stops with an error naming the server. A real MLflow server on 127.0.0.1 is
stopped and started again on the same port and database."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import free_port, running_server
from omnir1.cli import main
from omnir1.registry import TrackingError
from omnir1.rl.tracking import MLflowTracking

pytestmark = pytest.mark.slow


class Server:
    """An MLflow server that can be stopped and started again on the same port and store."""

    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        mlflow = Path(sys.executable).parent / "mlflow"
        self.cmd = [
            str(mlflow),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--serve-artifacts",
            "--artifacts-destination",
            str(root / "artifacts"),
        ]

    def up(self):
        return running_server(self.cmd, self.url, self.root / "server.log", cwd=self.root)


def step(tracker: MLflowTracking, n: int) -> None:
    state = SimpleNamespace(global_step=n, is_world_process_zero=True)
    tracker.on_log(None, state, None, logs={"reward": float(n), "kl": 0.1 * n, "note": "x"})


def tracker(uri: str, tmp_path: Path, mode: str = "buffer") -> MLflowTracking:
    rewards = SimpleNamespace(last_table=[{"sample": 0, "completion": "<answer>[]</answer>"}])
    return MLflowTracking(
        uri,
        "outage",
        {"train": {"max_steps": 4}},
        rewards,
        "run",
        on_unavailable=mode,
        pending_file=tmp_path / "pending.jsonl",
    )


def test_steps_logged_during_an_outage_arrive_when_the_server_returns(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    server = Server(tmp_path)
    begin = SimpleNamespace(is_world_process_zero=True, global_step=0)
    with server.up():
        t = tracker(server.url, tmp_path)
        t.on_train_begin(None, begin, None)
        step(t, 1)
    step(t, 2)  # the server is down: kept, training goes on
    step(t, 3)
    assert [p["step"] for p in t.pending] == [2, 3]
    with server.up():
        step(t, 4)  # back: 2, 3 and 4 go out in order
        assert t.pending == []
        t.on_train_end(None, begin, None)
        client = mlflow.MlflowClient(tracking_uri=server.url)
        history = client.get_metric_history(t.run_id, "reward")
        assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]
        tables = [a.path for a in client.list_artifacts(t.run_id, "completions")]
        assert len(tables) == 4
        run = client.get_run(t.run_id)
        assert run.info.status == "FINISHED" and run.data.params["train.max_steps"] == "4"
    assert not (tmp_path / "pending.jsonl").exists()


def test_what_never_reached_the_server_is_written_to_a_file(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    t = tracker(f"http://127.0.0.1:{free_port()}", tmp_path)  # nothing listens there
    state = SimpleNamespace(is_world_process_zero=True, global_step=0)
    t.on_train_begin(None, state, None)
    step(t, 1)
    step(t, 2)
    t.on_train_end(None, state, None)
    rows = [json.loads(line) for line in (tmp_path / "pending.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and rows[1]["metrics"]["reward"] == 2.0


def test_fail_mode_stops_naming_the_server(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"http://127.0.0.1:{free_port()}"
    t = tracker(uri, tmp_path, mode="fail")
    with pytest.raises(TrackingError, match=f"{uri}.*MLflow unavailable, training stopped"):
        t.on_train_begin(None, SimpleNamespace(is_world_process_zero=True), None)


PARAMS = """
train:
  num_generations: 2
  max_completion_length: 12
  save_steps: 1
  max_steps: 2
tracking:
  experiment: outage
  on_unavailable: {mode}
"""


@pytest.mark.parametrize("mode", ["buffer", "fail"])
def test_training_with_the_server_down(tiny_models, synth_sets, tmp_path, monkeypatch, mode):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS.format(mode=mode))
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--data",
            str(synth_sets["revos"]),
            "--format",
            "revos",
            "--models",
            str(tiny_models),
            "--out",
            str(out),
            "--params",
            str(params),
        ]
    )
    if mode == "buffer":  # trained to the end; the metrics wait in a file
        assert code == 0 and json.loads((out / "train.json").read_text())["steps"] == 2
        rows = [json.loads(r) for r in (out / "mlflow_pending.jsonl").read_text().splitlines()]
        steps = [r for r in rows if "reward" in r["metrics"]]  # then the Trainer's summary
        assert [r["step"] for r in steps] == [1, 2] and "train_runtime" in rows[-1]["metrics"]
    else:
        assert code == 2 and not (out / "model").exists()
