"""The Airflow DAGs (dags/), run with `airflow dags test` in .venv-airflow: the nightly DAG on
changed data (submits the training pipeline to Kubeflow, waits, reads what the run registered
from a real MLflow server, remembers the data), on unchanged data (skips), on a failing
pipeline (Kubeflow reports FAILED; a local run whose first task fails): retried, then an alert
reaches a webhook; and the on-demand evaluation DAG. No Kubeflow API server can run here: a
local HTTP server answers the v2beta1 runs API as Kubeflow does."""

import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from test_registry import model_folder

from omnir1.orchestration import data_fingerprint

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = ROOT / ".venv-airflow" / "bin" / "airflow"
OMNIR1 = str(Path(sys.executable).parent / "omnir1")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not AIRFLOW.exists(), reason="needs .venv-airflow (make setup)"),
]


class Recorder(ThreadingHTTPServer):
    """A local HTTP server that records every request and answers from `reply`."""

    def __init__(self, reply):
        self.requests: list[dict] = []
        self.reply = reply
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def handle_any(self):
                size = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(size) or b"null")
                request = {
                    "method": self.command,
                    "path": self.path,
                    "body": body,
                    "auth": self.headers.get("Authorization"),
                }
                recorder.requests.append(request)
                status, payload = recorder.reply(request)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self.handle_any()

            do_POST = do_GET  # noqa: N815

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def kubeflow(states: list[str], error: str = "") -> Recorder:
    """Kubeflow's runs API: a created run goes through `states`, the last one repeating."""
    left = list(states)

    def reply(request):
        if request["method"] == "POST" and request["path"] == "/apis/v2beta1/runs":
            return 200, {
                "run_id": "run-42",
                "display_name": request["body"]["display_name"],
                "state": "PENDING",
            }
        if request["method"] == "GET" and request["path"] == "/apis/v2beta1/runs/run-42":
            state = left.pop(0) if len(left) > 1 else left[0]
            run = {"run_id": "run-42", "state": state}
            if state == "FAILED":
                run["error"] = {"code": 9, "message": error}
            return 200, run
        return 404, {"error": "not found", "code": 5}

    return Recorder(reply)


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    """An Airflow home with a migrated SQLite database; returns a `dags test` runner."""
    home = tmp_path_factory.mktemp("airflow")
    base = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW_"))},
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONPATH": str(ROOT / "src"),
    }
    out = subprocess.run([str(AIRFLOW), "db", "migrate"], env=base, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]

    def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(AIRFLOW), *args], env={**base, **(env or {})}, capture_output=True, text=True
        )

    run.database = home / "airflow.db"
    return run


def xcom(airflow, dag_id: str, task_id: str):
    """The return value a task pushed in the DAG's latest run (read from Airflow's database)."""
    import sqlite3

    with sqlite3.connect(airflow.database) as db:
        row = db.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = 'return_value' "
            "ORDER BY timestamp DESC LIMIT 1",
            (dag_id, task_id),
        ).fetchone()
    return json.loads(row[0])


def dag_test(airflow, dag_id: str, env: dict, conf: dict | None = None) -> tuple[str, dict]:
    """`airflow dags test`: the run's final state and each task's state."""
    args = ["dags", "test", dag_id] + (["-c", json.dumps(conf)] if conf else [])
    out = airflow(*args, env=env)
    text = out.stdout + out.stderr
    state = re.search(r"DagRun Finished: .*?, state=(\w+)", text)[1]
    run_id = re.search(r"run_id=(manual__[0-9T:.+-]+)", text)[1]
    states = airflow("tasks", "states-for-dag-run", dag_id, run_id, "-o", "json", env=env)
    assert states.returncode == 0, states.stderr[-2000:]
    tasks = {t["task_id"]: t["state"] for t in json.loads(states.stdout)}
    return state, tasks | {"_log": text}


def conn(url: str, token: str | None = None) -> str:
    return json.dumps({"conn_type": "http", "host": url, "password": token})


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("compiled")
    run = subprocess.run(
        [OMNIR1, "pipeline", "compile", "--out", str(out)], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return out


def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    return folder


def settings(project_dir: Path, packages: Path, **extra: str) -> dict:
    env = {
        "AIRFLOW_VAR_OMNIR1_PROJECT": str(project_dir),
        "AIRFLOW_VAR_OMNIR1_PACKAGES": str(packages),
        "AIRFLOW_VAR_OMNIR1_POKE_INTERVAL_S": "1",
        "AIRFLOW_VAR_OMNIR1_RETRY_DELAY_S": "1",
        "AIRFLOW_VAR_OMNIR1_RETRIES": "1",
        "AIRFLOW_VAR_OMNIR1_PIPELINE_ARGS": json.dumps({"train__max_steps": 200, "parts": 8}),
    }
    return env | {f"AIRFLOW_VAR_OMNIR1_{k.upper()}": v for k, v in extra.items()}


def test_the_dags_are_configured_for_nightly_production():
    script = (
        "from airflow.models.dagbag import DagBag\n"
        "import json\n"
        "bag = DagBag()\n"
        "assert not bag.import_errors, bag.import_errors\n"
        "out = {}\n"
        "for dag_id, dag in bag.dags.items():\n"
        "    wait = dag.get_task('wait')\n"
        "    out[dag_id] = dict(schedule=str(dag.schedule), catchup=dag.catchup,\n"
        "        max_active_runs=dag.max_active_runs, tasks=sorted(dag.task_ids),\n"
        "        retries=wait.retries, callback=bool(wait.on_failure_callback),\n"
        "        mode=wait.mode, timeout=wait.timeout)\n"
        "print(json.dumps(out))\n"
    )
    python = str(AIRFLOW.parent / "python")
    run = subprocess.run(
        [python, "-c", script],
        capture_output=True,
        text=True,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "PYTHONPATH": f"{ROOT / 'src'}:{ROOT / 'dags'}",
        },
    )
    assert run.returncode == 0, run.stderr[-3000:]
    dags = json.loads(run.stdout.strip().splitlines()[-1])
    nightly, evaluate = dags["omnir1_nightly_retraining"], dags["omnir1_evaluate"]
    assert nightly["schedule"] == "0 2 * * *" and nightly["catchup"] is False
    assert nightly["max_active_runs"] == 1
    assert nightly["tasks"] == [
        "data_changed",
        "fingerprint",
        "read_outcome",
        "remember",
        "start_run",
        "wait",
    ]
    assert nightly["retries"] == 2 and nightly["callback"] and nightly["mode"] == "reschedule"
    assert nightly["timeout"] == 12 * 3600
    assert evaluate["schedule"] == "None"


def test_nightly_trains_on_changed_data_and_skips_unchanged(
    airflow, packages, mlflow_server, tmp_path
):
    folder = project(tmp_path)
    # what the Kubeflow run registers: a version tagged with its run id
    metrics = tmp_path / "eval.json"
    metrics.write_text(json.dumps({"trained": {"revos": {"JF": 0.4}}}))
    register = subprocess.run(
        [
            OMNIR1,
            "register",
            "--model",
            str(model_folder(tmp_path / "model")),
            "--metrics",
            f"eval={metrics}",
            "--out",
            str(tmp_path / "register.json"),
            "--params",
            str(ROOT / "params.yaml"),
            "--tag",
            "kfp_run_id=run-42",
        ],
        env={**os.environ, "MLFLOW_TRACKING_URI": mlflow_server},
        capture_output=True,
        text=True,
    )
    assert register.returncode == 0, register.stderr[-2000:]
    api = kubeflow(["RUNNING", "RUNNING", "SUCCEEDED"])
    env = settings(folder, packages, mode="kubeflow") | {
        "AIRFLOW_CONN_KUBEFLOW_DEFAULT": conn(api.url, "kfp-token"),
        "AIRFLOW_CONN_MLFLOW_DEFAULT": conn(mlflow_server),
    }
    try:
        state, tasks = dag_test(airflow, "omnir1_nightly_retraining", env)
        assert state == "success", tasks["_log"][-4000:]
        assert tasks["start_run"] == tasks["wait"] == tasks["remember"] == "success"
        (created,) = [r for r in api.requests if r["method"] == "POST"]
        assert created["auth"] == "Bearer kfp-token"
        assert created["body"]["service_account"] == "omnir1-pipeline-runner"
        spec = created["body"]["pipeline_spec"]
        assert spec["pipeline_spec"]["pipelineInfo"]["name"] == "omnir1-training"
        assert "kubernetes" in spec["platform_spec"]["platforms"]
        assert created["body"]["runtime_config"]["parameters"] == {
            "train__max_steps": 200,
            "parts": 8,
        }
        assert sum(r["method"] == "GET" for r in api.requests) >= 3  # waited for it
        outcome = xcom(airflow, "omnir1_nightly_retraining", "read_outcome")
        decision = json.loads((tmp_path / "register.json").read_text())
        assert outcome["version"] == decision["version"]
        assert outcome["promoted"] == decision["promoted"]
        assert outcome["metrics"]["eval.trained.revos.JF"] == 0.4
        remembered = airflow("variables", "get", "omnir1_last_data_fingerprint", env=env)
        assert remembered.stdout.strip() == data_fingerprint(folder)

        # the same data the next night: nothing is submitted
        state, tasks = dag_test(airflow, "omnir1_nightly_retraining", env)
        assert state == "success"
        assert tasks["data_changed"] == "success" and tasks["start_run"] == "skipped"
        assert sum(r["method"] == "POST" for r in api.requests) == 1

        # new data (a DVC-tracked data set changed): trained again
        (folder / "data").mkdir()
        (folder / "data" / "revos.dvc").write_text("outs:\n- md5: 0f3e.dir\n  path: revos\n")
        state, tasks = dag_test(airflow, "omnir1_nightly_retraining", env)
        assert state == "success" and tasks["start_run"] == "success"
        assert sum(r["method"] == "POST" for r in api.requests) == 2
    finally:
        api.shutdown()
        airflow("variables", "delete", "omnir1_last_data_fingerprint", env=env)


def test_a_failing_kubeflow_run_is_retried_then_alerts(airflow, packages, tmp_path):
    api = kubeflow(["RUNNING", "FAILED"], error="task train: pod OOMKilled")
    hook = Recorder(lambda request: (200, {"ok": True}))
    env = settings(project(tmp_path), packages, mode="kubeflow") | {
        "AIRFLOW_CONN_KUBEFLOW_DEFAULT": conn(api.url),
        "AIRFLOW_CONN_OMNIR1_ALERTS": conn(hook.url + "/hooks/omnir1"),
    }
    try:
        state, tasks = dag_test(airflow, "omnir1_nightly_retraining", env)
        assert state == "failed" and tasks["wait"] == "failed"
        assert tasks["remember"] in ("upstream_failed", "skipped")
        log = tasks["_log"]
        assert log.count("ended FAILED: task train: pod OOMKilled") >= 2  # tried, retried
        (alert,) = hook.requests
        assert alert["path"] == "/hooks/omnir1"
        assert "omnir1_nightly_retraining.wait failed" in alert["body"]["text"]
        assert "pod OOMKilled" in alert["body"]["text"]
        got = airflow("variables", "get", "omnir1_last_data_fingerprint", env=env)
        assert got.returncode != 0  # a failed night does not move the mark
    finally:
        api.shutdown()
        hook.shutdown()


def test_a_local_pipeline_whose_task_fails_fails_the_dag_with_its_name(airflow, packages, tmp_path):
    folder = ROOT  # a local run needs the project's pipelines/
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["source"] = str(tmp_path / "no-such-data")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    hook = Recorder(lambda request: (200, {"ok": True}))
    env = settings(
        folder,
        packages,
        mode="local",
        cli=OMNIR1,
        params=str(tmp_path / "params.yaml"),
        runs_dir=str(tmp_path / "runs"),
    )
    env |= {"AIRFLOW_CONN_OMNIR1_ALERTS": conn(hook.url), "AIRFLOW_VAR_OMNIR1_RETRIES": "0"}
    env["AIRFLOW_VAR_OMNIR1_PIPELINE_ARGS"] = "{}"
    try:
        state, tasks = dag_test(airflow, "omnir1_nightly_retraining", env)
        assert state == "failed" and tasks["wait"] == "failed", tasks["_log"][-3000:]
        (alert,) = hook.requests
        assert "local pipeline run failed" in alert["body"]["text"]
        assert "fetch-data" in alert["body"]["text"]
    finally:
        hook.shutdown()


def test_the_evaluation_dag_runs_the_evaluation_pipeline_on_demand(airflow, packages, tmp_path):
    api = kubeflow(["RUNNING", "SUCCEEDED"])
    env = settings(project(tmp_path), packages, mode="kubeflow", pipeline_args="{}") | {
        "AIRFLOW_CONN_KUBEFLOW_DEFAULT": conn(api.url),
    }
    try:
        conf = {"model_uri": "models:/omnir1-system1/3", "baseline_uri": ""}
        state, tasks = dag_test(airflow, "omnir1_evaluate", env, conf)
        assert state == "success", tasks["_log"][-4000:]
        (created,) = [r for r in api.requests if r["method"] == "POST"]
        assert created["body"]["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == (
            "omnir1-evaluation"
        )
        assert created["body"]["runtime_config"]["parameters"] == conf
    finally:
        api.shutdown()
