"""`omnir1 pipeline submit`: the kfp client's calls to a Kubeflow Pipelines endpoint (a local
HTTP stand-in of its v2beta1 API: no Kubeflow runs here), and a clear error when the endpoint
cannot be reached."""

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
OMNIR1 = str(Path(sys.executable).parent / "omnir1")


def kubeflow_api():
    calls: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            size = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(size) or b"null")
            calls.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "body": body,
                    "auth": self.headers.get("Authorization"),
                }
            )
            if self.path.startswith("/apis/v2beta1/experiments") and self.command == "GET":
                out = {"experiments": [], "total_size": 0}
            elif self.path.startswith("/apis/v2beta1/experiments"):
                out = {"experiment_id": "exp-1", "display_name": body["display_name"]}
            elif self.path.startswith("/apis/v2beta1/runs"):
                out = {"run_id": "run-7", "display_name": body["display_name"], "state": "PENDING"}
            else:
                out = {}
            data = json.dumps(out).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_POST = do_GET  # noqa: N815

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, calls


def test_submit_creates_an_experiment_and_a_run_with_the_arguments():
    server, calls = kubeflow_api()
    host = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        out = subprocess.run(
            [
                OMNIR1,
                "pipeline",
                "submit",
                "--host",
                host,
                "--set",
                "train.max_steps=3",  # a params key: it joins the overrides
                "--set",
                "parts=8",
                "--run-name",
                "nightly-test",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "KF_PIPELINES_TOKEN": "secret-token"},
        )
    finally:
        server.shutdown()
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout[out.stdout.rindex("{\n") :])["run_id"] == "run-7"
    (run,) = [c for c in calls if c["method"] == "POST" and c["path"] == "/apis/v2beta1/runs"]
    assert run["auth"] == "Bearer secret-token"
    body = run["body"]
    assert body["display_name"] == "nightly-test" and body["experiment_id"] == "exp-1"
    assert body["service_account"] == "omnir1-pipeline-runner"
    assert body["runtime_config"]["parameters"] == {
        "overrides": '{"train.max_steps": 3}',
        "parts": 8,
    }
    spec = body["pipeline_spec"]
    assert spec["pipeline_spec"]["pipelineInfo"]["name"] == "omnir1-training"
    assert "kubernetes" in spec["platform_spec"]["platforms"]  # GPU pool, Secrets, PVC


def test_the_service_account_given_reaches_the_run():
    server, calls = kubeflow_api()
    host = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        out = subprocess.run(
            [OMNIR1, "pipeline", "submit", "--host", host, "--service-account", "team-runner"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    finally:
        server.shutdown()
    assert out.returncode == 0, out.stderr[-3000:]
    (run,) = [c for c in calls if c["method"] == "POST" and c["path"] == "/apis/v2beta1/runs"]
    assert run["body"]["service_account"] == "team-runner"


def test_an_unreachable_endpoint_is_a_clear_error():
    host = f"http://127.0.0.1:{free_port()}"
    out = subprocess.run(
        [OMNIR1, "pipeline", "submit", "--host", host], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 1
    assert f"Kubeflow Pipelines at {host}" in out.stderr and "Traceback" not in out.stderr


def test_a_wrong_argument_is_refused_before_any_call():
    out = subprocess.run(
        [OMNIR1, "pipeline", "submit", "--host", "http://127.0.0.1:9", "--set", "train.lr=1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "train.lr: no such key; train has:" in out.stderr
