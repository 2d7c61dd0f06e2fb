"""omnir1.orchestration without Airflow (the main venv has kfp-server-api too): the Kubeflow
client against the local stand-in of the v2beta1 API (one experiment, one run per name, which
errors are worth a retry, terminating only what still runs) and local runs (a failure's
message, a timeout and a stop end the whole process group)."""

import json
import signal
import sys
import time
from pathlib import Path

import pytest
from test_dags import KubeflowStandIn

from omnir1.orchestration import (
    Kubeflow,
    LocalRun,
    PipelineRunError,
    load_package,
    local_command,
    run_failure,
)

PACKAGE = """# PIPELINE DEFINITION
pipelineInfo:
  name: omnir1-training
root: {}
---
platforms:
  kubernetes: {deploymentSpec: {}}
"""


@pytest.fixture
def api():
    server = KubeflowStandIn(["RUNNING", "FAILED"], error="task train: pod OOMKilled")
    yield server
    server.shutdown()


def test_a_run_is_submitted_once_per_name(api, tmp_path):
    package = tmp_path / "training.yaml"
    package.write_text(PACKAGE)
    client = Kubeflow(api.url, "kfp-token", namespace="team-a")
    first = client.submit(package, "omnir1-training-x-try1", {"parts": 8}, service_account="sa")
    again = client.submit(package, "omnir1-training-x-try1", {"parts": 8}, service_account="sa")
    other = client.submit(package, "omnir1-training-x-try4", {"parts": 8})
    assert (first["run_id"], first["reused"], first["state"]) == ("run-1", False, "PENDING")
    assert (again["run_id"], again["reused"]) == ("run-1", True)
    assert (other["run_id"], other["reused"]) == ("run-2", False)
    (experiment,) = api.calls("POST", "/apis/v2beta1/experiments")  # created once, then found
    assert experiment["body"] == {"display_name": "omnir1", "namespace": "team-a"}
    body = api.created()[0]["body"]
    assert body["pipeline_spec"] == load_package(package)
    assert body["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]
    assert body["runtime_config"] == {"parameters": {"parts": 8}}
    assert body["service_account"] == "sa" and api.created()[0]["auth"] == "Bearer kfp-token"
    assert client.get_run("run-1")["state"] == "RUNNING"
    ended = client.get_run("run-1")
    assert run_failure(ended) == "Kubeflow run run-1 ended FAILED: task train: pod OOMKilled"
    assert run_failure({**ended, "state": "SUCCEEDED"}) is None
    assert run_failure({**ended, "state": "RUNNING"}) is None


def test_only_runs_still_going_are_terminated(api, tmp_path):
    package = tmp_path / "training.yaml"
    package.write_text(PACKAGE)
    client = Kubeflow(api.url)
    for name in ("omnir1-training-run_a-try1", "omnir1-training-run_a-try3", "other-run_a-try1"):
        client.submit(package, name)
    api.runs["run-2"]["state"] = api.left["run-2"][0] = "SUCCEEDED"
    assert client.stop_runs("omnir1-training-run_a-try") == ["run-1"]  # run-2 ended, run-3 other
    assert api.runs["run-1"]["state"] == "CANCELING"
    assert not client.terminate("run-1") and not client.terminate("run-2")
    assert client.terminate("run-3")
    assert len(api.calls("POST", r"/apis/v2beta1/runs/.*:terminate")) == 2
    assert Kubeflow(api.url, namespace="elsewhere").stop_runs("omnir1-") == []  # no experiment


def test_which_kubeflow_errors_are_worth_a_retry(api, tmp_path):
    client = Kubeflow(api.url)
    with pytest.raises(PipelineRunError, match="get run nope: HTTP 404") as refused:
        client.get_run("nope")
    assert not refused.value.transient
    api.lose_first_create = True
    package = tmp_path / "training.yaml"
    package.write_text(PACKAGE)
    with pytest.raises(PipelineRunError, match="create run: HTTP 503") as lost:
        client.submit(package, "omnir1-training-x-try1")
    assert lost.value.transient
    assert client.submit(package, "omnir1-training-x-try1")["reused"]  # the run it made
    api.shutdown()
    api.server_close()
    with pytest.raises(PipelineRunError, match="unreachable") as down:
        Kubeflow(api.url, timeout_s=2).get_run("run-1")
    assert down.value.transient


def test_a_local_run_reports_its_failure_and_is_stopped_whole(tmp_path):
    fail = LocalRun(
        [sys.executable, "-c", "import sys; sys.exit('Error: no data')"], tmp_path, tmp_path / "a"
    )
    with pytest.raises(PipelineRunError, match=r"failed \(exit 1\): Error: no data"):
        fail.wait(30)
    # a run whose child process would outlive it: stopping the run ends both
    script = (
        "import subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
        "print(child.pid, flush=True); time.sleep(300)"
    )
    run = LocalRun([sys.executable, "-c", script], tmp_path, tmp_path / "b")
    out = tmp_path / "b" / "result.json"
    while not out.read_text().strip():
        time.sleep(0.1)
    child = int(out.read_text())
    with pytest.raises(PipelineRunError, match="did not end within 1 s: stopped"):
        run.wait(1)
    deadline = time.monotonic() + 10  # the signal reaches the group's other member too
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(child)
    assert run.process.returncode == -signal.SIGTERM


def alive(pid: int) -> bool:
    """Whether the process exists and is no zombie (nobody may reap it in a container)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_local_command_passes_arguments_as_values():
    cmd = local_command("omnir1", "/p", "/runs/x", "evaluation", {"parts": 8, "model_uri": "m:/1"})
    assert cmd[:6] == ["omnir1", "pipeline", "run", "--local", "--pipeline", "evaluation"]
    assert cmd[cmd.index("--pipeline-root") + 1] == str(Path("/runs/x/root"))
    assert ["--set", "parts=8", "--set", "model_uri=m:/1"] == cmd[-4:]
    assert json.loads(cmd[-3].split("=", 1)[1]) == 8
