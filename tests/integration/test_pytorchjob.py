"""Multi-node GRPO as a PyTorchJob (omnir1.kube.pytorchjob): the manifest the training
component submits, checked against the PyTorchJob API's shape and every pod template against
Kubernetes' own schema; and the client logic (create, watch, follow the log, fail clearly,
always delete) driven through the real kubernetes client against a local HTTP server that
answers with the API responses of tests/fixtures/pytorchjob."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from omnir1.kube.pytorchjob import (
    JobFailed,
    JobSpec,
    PyTorchJobRunner,
    job_manifest,
    job_name,
    job_state,
)

ROOT = Path(__file__).resolve().parents[2]
RESPONSES = json.loads((ROOT / "tests/fixtures/pytorchjob/responses.json").read_text())
NAME, NS = "omnir1-grpo-run-1", "kubeflow-user"


def spec(**kw) -> JobSpec:
    return JobSpec(
        name=NAME,
        namespace=NS,
        image="registry.example/omnir1-gpu:0.1.0",
        train_args=["--data", "/mnt/data/runs/1/inputs/data", "--format", "revos"],
        secret_env={"MLFLOW_TRACKING_URI": ("omnir1-mlflow", "MLFLOW_TRACKING_URI")},
        **kw,
    )


def test_the_manifest_has_the_pytorchjob_shape():
    job = job_manifest(spec(nodes=4, gpus_per_node=8))
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "PyTorchJob"
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert set(replicas) == {"Master", "Worker"}
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 3
    assert set(job["spec"]["runPolicy"]) <= {
        "cleanPodPolicy",
        "backoffLimit",
        "ttlSecondsAfterFinished",
        "activeDeadlineSeconds",
        "schedulingPolicy",
        "suspend",
        "managedBy",
    }
    assert job["spec"]["runPolicy"]["cleanPodPolicy"] in ("None", "Running", "All")
    for replica in replicas.values():
        assert replica["restartPolicy"] in ("Always", "OnFailure", "Never", "ExitCode")
        pod = replica["template"]["spec"]
        (container,) = pod["containers"]
        assert container["name"] == "pytorch"  # how the operator finds the trainer
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
        assert pod["nodeSelector"] == {"omnir1.io/pool": "gpu"}
        assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in pod[
            "volumes"
        ]
        env = {e["name"]: e for e in container["env"]}
        assert env["NCCL_DEBUG"]["value"] and "value" not in env["MLFLOW_TRACKING_URI"]
        assert env["MLFLOW_TRACKING_URI"]["valueFrom"]["secretKeyRef"]["name"] == "omnir1-mlflow"
        command = container["command"][-1]
        assert "accelerate launch --config_file configs/accelerate/zero3_offload.yaml" in command
        assert "--num_processes $(( WORLD_SIZE * 8 ))" in command
        assert "--machine_rank $RANK" in command and "-m omnir1.cli train --data" in command
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert pod["automountServiceAccountToken"] is False
    assert "Worker" not in job_manifest(spec(nodes=1))["spec"]["pytorchReplicaSpecs"]
    with pytest.raises(ValueError, match="nodes"):
        job_manifest(spec(nodes=0))


def test_every_pod_template_passes_kubernetes_validation(tmp_path):
    """kubernetes-validate --strict knows the core API: each replica's template as a
    PodTemplate object."""
    import subprocess
    import sys

    job = job_manifest(spec(nodes=3))
    docs = [
        {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": f"{NAME}-{role.lower()}", "namespace": NS},
            "template": replica["template"],
        }
        for role, replica in job["spec"]["pytorchReplicaSpecs"].items()
    ]
    path = tmp_path / "templates.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    exe = Path(sys.executable).parent / "kubernetes-validate"
    out = subprocess.run(
        [str(exe), "--strict", "--kubernetes-version", "1.30", str(path)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_job_names_are_valid_kubernetes_names():
    name = job_name("Omnir1-Training-2026-11-25_02:00:41.123456/UUID")
    assert name.startswith("omnir1-grpo-") and len(name) <= 52
    assert all(c.isalnum() or c == "-" for c in name) and name == name.lower()


class FakeApi:
    """Answers the kubernetes client's calls with the fixture responses, in order."""

    def __init__(self, gets: list[str], watches: list[list[str]], logs: list[str]):
        self.gets, self.watches, self.logs = gets, watches, logs
        self.calls: list[tuple[str, str]] = []
        self.created: dict | None = None

    def answer(self, method: str, url: str, body: bytes):
        path, query = urlsplit(url).path, parse_qs(urlsplit(url).query)
        self.calls.append((method, path))
        jobs = f"/apis/kubeflow.org/v1/namespaces/{NS}/pytorchjobs"
        if method == "POST" and path == jobs:
            self.created = json.loads(body)
            return 201, RESPONSES["created"]
        if method == "GET" and path == jobs and query.get("watch", [""])[0].lower() == "true":
            assert query["fieldSelector"] == [f"metadata.name={NAME}"]
            events = self.watches.pop(0) if self.watches else []
            lines = [json.dumps({"type": "MODIFIED", "object": RESPONSES[e]}) for e in events]
            return 200, "\n".join(lines) + "\n"
        if method == "GET" and path == f"{jobs}/{NAME}":
            return 200, RESPONSES[self.gets.pop(0) if len(self.gets) > 1 else self.gets[0]]
        if method == "DELETE" and path == f"{jobs}/{NAME}":
            return 200, RESPONSES["deleted"]
        if method == "GET" and path == f"/api/v1/namespaces/{NS}/pods":
            assert query["labelSelector"] == [f"training.kubeflow.org/job-name={NAME}"]
            return 200, RESPONSES["pods_failed"]
        if method == "GET" and path.endswith("/log"):
            assert query["container"] == ["pytorch"]
            text = self.logs.pop(0) if len(self.logs) > 1 else self.logs[0]
            if "tailLines" in query:
                text = "\n".join(text.splitlines()[-int(query["tailLines"][0]) :])
            return 200, text
        return 404, RESPONSES["not_found"]


@pytest.fixture
def api_server():
    servers = []

    def start(api: FakeApi):
        class Handler(BaseHTTPRequestHandler):
            def _reply(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, payload = api.answer(self.command, self.path, body)
                data = payload if isinstance(payload, str) else json.dumps(payload)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data.encode())))
                self.end_headers()
                self.wfile.write(data.encode())

            def do_GET(self):
                self._reply()

            do_POST = do_DELETE = do_GET  # noqa: N815

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        from kubernetes import client

        config = client.Configuration()
        config.host = f"http://127.0.0.1:{server.server_address[1]}"
        return client.ApiClient(config)

    yield start
    for server in servers:
        server.shutdown()


def test_a_job_is_created_followed_to_success_and_deleted(api_server):
    api = FakeApi(
        gets=["running"],
        watches=[["running"], ["running", "succeeded"]],
        logs=["step 1/4 reward 0.71", "step 1/4 reward 0.71\nstep 2/4 reward 0.93\ndone"],
    )
    shown: list[str] = []
    runner = PyTorchJobRunner(api_server(api), NS, poll_s=1, echo=shown.append)
    manifest = job_manifest(spec(nodes=2))
    job = runner.run(manifest, timeout_s=60)
    assert job_state(job) == "Succeeded" and api.created == manifest
    # each log line shown once, as the log grew
    assert shown == [
        f"[{NAME}-master-0] {line}"
        for line in ("step 1/4 reward 0.71", "step 2/4 reward 0.93", "done")
    ]
    methods = [m for m, _ in api.calls]
    assert methods[0] == "POST" and methods[-1] == "DELETE"


def test_a_failed_worker_fails_the_run_naming_the_pod_and_its_last_lines(api_server):
    api = FakeApi(
        gets=["running"],
        watches=[["failed"]],
        logs=["loading shards\nRuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"],
    )
    runner = PyTorchJobRunner(api_server(api), NS, poll_s=1, echo=lambda _: None)
    with pytest.raises(JobFailed) as err:
        runner.run(job_manifest(spec(nodes=2)), timeout_s=60)
    message = str(err.value)
    assert "1 Worker replica(s) failed" in message
    assert f"pod {NAME}-worker-0 exited with code 1 (Error)" in message
    assert "CUDA out of memory" in message
    assert api.calls[-1] == ("DELETE", f"/apis/kubeflow.org/v1/namespaces/{NS}/pytorchjobs/{NAME}")


def test_a_job_that_never_finishes_times_out_and_is_deleted(api_server):
    api = FakeApi(gets=["running"], watches=[], logs=[""])
    runner = PyTorchJobRunner(api_server(api), NS, poll_s=1, echo=lambda _: None)
    with pytest.raises(JobFailed, match="not done after 2 s"):
        runner.run(job_manifest(spec(nodes=2)), timeout_s=2)
    assert api.calls[-1][0] == "DELETE"
