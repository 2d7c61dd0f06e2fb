"""The Airflow DAGs (dags/), run with `airflow dags test` in .venv-airflow: parsing reads no
Variable and opens no connection; the nightly DAG on changed data (submits the training
pipeline to Kubeflow, waits in a trigger, reads what the run registered from a real MLflow
server, remembers the data) and on unchanged data (skips); a Kubeflow run that ends FAILED
fails the task at once and alerts, without retries; a retried submission whose first answer
was lost finds the run it started; a run past its timeout is terminated; clearing or killing
the waiting task terminates the run; a local run whose first task fails; the evaluation DAG.
No Kubeflow API server can run here: `KubeflowStandIn` answers the v2beta1 experiments and runs
API as Kubeflow does, for the client the DAGs use (kfp-server-api)."""

import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from test_registry import model_folder

from omnir1.orchestration import data_fingerprint

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = ROOT / ".venv-airflow" / "bin" / "airflow"
AIRFLOW_PYTHON = AIRFLOW.parent / "python"
OMNIR1 = str(Path(sys.executable).parent / "omnir1")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not AIRFLOW.exists(), reason="needs .venv-airflow (make setup)"),
]


class Recorder(ThreadingHTTPServer):
    """A local HTTP server that records every request and answers from `reply(request)`:
    (status, payload) or None to drop the connection unanswered."""

    def __init__(self, reply):
        self.requests: list[dict] = []
        self.reply = reply
        self.lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def handle_any(self):
                size = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(size) or b"null")
                url = urlsplit(self.path)
                request = {
                    "method": self.command,
                    "path": url.path,
                    "query": {k: v[0] for k, v in parse_qs(url.query).items()},
                    "body": body,
                    "auth": self.headers.get("Authorization"),
                }
                with recorder.lock:
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

    def calls(self, method: str, pattern: str) -> list[dict]:
        return [
            r for r in self.requests if r["method"] == method and re.fullmatch(pattern, r["path"])
        ]


class KubeflowStandIn(Recorder):
    """Kubeflow Pipelines' v2beta1 API, as much of it as the DAGs use: experiments (listed by
    display name, created), runs (created, listed by experiment and display name newest first,
    read, terminated). Each run goes through `states` as it is read (the last one repeating);
    a FAILED run carries `error`; a terminated one is CANCELING, then CANCELED.
    `lose_first_create`: the first run is created, but the answer is a gateway's 503 (the
    submission's answer lost on the way back)."""

    def __init__(self, states: list[str], error: str = "", lose_first_create: bool = False):
        self.experiments: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.left: dict[str, list[str]] = {}
        self.states, self.error, self.lose_first_create = states, error, lose_first_create
        super().__init__(self.answer)

    @staticmethod
    def named(query: dict):
        """The filter's test of a display name (EQUALS or IS_SUBSTRING, as Kubeflow has them)."""
        (p,) = json.loads(query.get("filter", "{}")).get("predicates", [{}]) or [{}]
        if not p:
            return lambda name: True
        value = p.get("string_value", p.get("stringValue"))
        assert p["key"] == "display_name", p
        if p["operation"] in ("IS_SUBSTRING", 9):
            return lambda name: value in name
        assert p["operation"] in ("EQUALS", 1), p
        return lambda name: name == value

    def answer(self, request):
        method, path, query, body = (request[k] for k in ("method", "path", "query", "body"))
        api = "/apis/v2beta1"
        if (method, path) == ("GET", f"{api}/experiments"):
            named = self.named(query)
            found = [e for e in self.experiments.values() if named(e["display_name"])]
            return 200, {"experiments": found, "total_size": len(found)} if found else {}
        if (method, path) == ("POST", f"{api}/experiments"):
            experiment = {**body, "experiment_id": f"exp-{len(self.experiments) + 1}"}
            self.experiments[experiment["experiment_id"]] = experiment
            return 200, experiment
        if (method, path) == ("GET", f"{api}/runs"):
            named = self.named(query)
            found = [
                r
                for r in self.runs.values()
                if r["experiment_id"] == query.get("experiment_id") and named(r["display_name"])
            ]
            assert query.get("sort_by") == "created_at desc"
            found.sort(key=lambda r: r["created_at"], reverse=True)
            start, size = int(query.get("page_token") or 0), int(query.get("page_size", 10))
            page = {"runs": found[start : start + size]} if found[start:] else {}
            if found[start + size :]:
                page["next_page_token"] = str(start + size)
            return 200, page
        if (method, path) == ("POST", f"{api}/runs"):
            run_id = f"run-{len(self.runs) + 1}"
            now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            self.runs[run_id] = {
                **body,
                "run_id": run_id,
                "state": "PENDING",
                "created_at": now,
            }
            self.left[run_id] = list(self.states)
            if self.lose_first_create and len(self.runs) == 1:
                return 503, {"error": "upstream request timeout", "code": 14}
            return 200, self.runs[run_id]
        match = re.fullmatch(rf"{api}/runs/([\w-]+)(:terminate)?", path)
        if match and match[1] in self.runs:
            run, left = self.runs[match[1]], self.left[match[1]]
            if method == "POST" and match[2]:
                run["state"] = "CANCELING"
                left[:] = ["CANCELED"]
                return 200, {}
            if method == "GET" and not match[2]:
                run["state"] = left.pop(0) if len(left) > 1 else left[0]
                if run["state"] == "FAILED":
                    run["error"] = {"code": 9, "message": self.error}
                return 200, run
        return 404, {"error": "not found", "code": 5}

    def created(self) -> list[dict]:
        return self.calls("POST", "/apis/v2beta1/runs")

    def polls(self, run_id: str = "run-1") -> int:
        return len(self.calls("GET", f"/apis/v2beta1/runs/{run_id}"))


def clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW_"))}


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    """An Airflow home with a migrated SQLite database; returns a `dags test` runner."""
    home = tmp_path_factory.mktemp("airflow")
    base = clean_env() | {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONPATH": str(ROOT / "src"),
        "OMNIR1_DAG_RETRY_DELAY_S": "1",  # parse-time settings: from the environment
    }
    out = subprocess.run([str(AIRFLOW), "db", "migrate"], env=base, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]

    def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(AIRFLOW), *args], env={**base, **(env or {})}, capture_output=True, text=True
        )

    run.database = home / "airflow.db"
    run.env = base
    return run


def query(airflow, sql: str, *args):
    with sqlite3.connect(airflow.database) as db:
        return db.execute(sql, args).fetchone()


def xcom(airflow, dag_id: str, task_id: str, key: str = "return_value"):
    """A value a task pushed in the DAG's latest run (read from Airflow's database)."""
    (value,) = query(
        airflow,
        "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = ? "
        "ORDER BY timestamp DESC LIMIT 1",
        dag_id,
        task_id,
        key,
    )
    return json.loads(value)


def dag_test(airflow, dag_id: str, env: dict, conf: dict | None = None) -> tuple[str, dict]:
    """`airflow dags test`: the run's final state, each task's state, and each task's number
    of tries under "_tries"."""
    args = ["dags", "test", dag_id] + (["-c", json.dumps(conf)] if conf else [])
    out = airflow(*args, env=env)
    text = out.stdout + out.stderr
    finished = re.search(r"DagRun Finished: .*?, state=(\w+)", text)
    assert finished, text[-4000:]
    state = finished[1]
    run_id = re.search(r"run_id=(manual__[0-9T:.+-]+)", text)[1]
    states = airflow("tasks", "states-for-dag-run", dag_id, run_id, "-o", "json", env=env)
    assert states.returncode == 0, states.stderr[-2000:]
    tasks = {t["task_id"]: t["state"] for t in json.loads(states.stdout)}
    with sqlite3.connect(airflow.database) as db:
        tries = dict(
            db.execute(
                "SELECT task_id, try_number FROM task_instance WHERE dag_id = ? AND run_id = ?",
                (dag_id, run_id),
            ).fetchall()
        )
    return state, tasks | {"_log": text, "_tries": tries, "_run_id": run_id}


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
        "AIRFLOW_VAR_OMNIR1_POLL_INTERVAL_S": "1",
        "AIRFLOW_VAR_OMNIR1_PIPELINE_ARGS": json.dumps({"train__max_steps": 200, "parts": 8}),
    }
    return env | {f"AIRFLOW_VAR_OMNIR1_{k.upper()}": v for k, v in extra.items()}


def kubeflow_env(api: KubeflowStandIn, project_dir: Path, packages: Path, **extra) -> dict:
    return settings(project_dir, packages, **extra) | {
        "AIRFLOW_CONN_KUBEFLOW_DEFAULT": conn(api.url, "kfp-token")
    }


PARSE_WITHOUT_LOOKUPS = """
import json, socket, sys
def refuse(*args, **kwargs):
    raise AssertionError(f"looked up at parse time: {args[:2]}")
for name in ("connect", "connect_ex"):
    setattr(socket.socket, name, refuse)
socket.create_connection = socket.getaddrinfo = refuse
from airflow.sdk import BaseHook, Variable
from airflow.models.variable import Variable as CoreVariable
Variable.get = CoreVariable.get = BaseHook.get_connection = classmethod(refuse)
from airflow.dag_processing.dagbag import DagBag
bag = DagBag()
assert not bag.import_errors, bag.import_errors
out = {"heavy": sorted({m.split(".")[0] for m in sys.modules} & {"kfp_server_api", "mlflow"})}
for dag_id, dag in bag.dags.items():
    run = dag.get_task("run_pipeline")
    out[dag_id] = dict(
        schedule=str(dag.schedule), catchup=dag.catchup, max_active_runs=dag.max_active_runs,
        timeout=dag.dagrun_timeout.total_seconds(), tasks=sorted(dag.task_ids),
        operator=type(run).__name__, retries=run.retries, callback=bool(run.on_failure_callback),
        dag_callback=bool(dag.on_failure_callback), deferrable=hasattr(run, "execute_complete"),
    )
print(json.dumps(out))
"""


def test_parsing_the_dags_reads_no_variable_and_opens_no_connection():
    run = subprocess.run(
        [str(AIRFLOW_PYTHON), "-c", PARSE_WITHOUT_LOOKUPS],
        capture_output=True,
        text=True,
        env=clean_env()
        | {
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "PYTHONPATH": str(ROOT / "src"),
        },
    )
    assert run.returncode == 0, run.stderr[-3000:]
    dags = json.loads(run.stdout.strip().splitlines()[-1])
    assert dags.pop("heavy") == []  # the clients are imported by the tasks that use them
    nightly, evaluate = dags["omnir1_nightly_retraining"], dags["omnir1_evaluate"]
    assert nightly["schedule"] == "0 2 * * *" and nightly["catchup"] is False
    assert nightly["max_active_runs"] == 1 and nightly["timeout"] == 24 * 3600
    assert nightly["tasks"] == [
        "data_changed",
        "fingerprint",
        "read_outcome",
        "remember",
        "run_pipeline",
    ]
    for dag in (nightly, evaluate):
        assert dag["operator"] == "PipelineRunOperator" and dag["deferrable"]
        assert dag["retries"] == 2 and dag["callback"] and dag["dag_callback"]
    assert evaluate["schedule"] == "None" and evaluate["tasks"] == ["read_outcome", "run_pipeline"]


def test_the_dags_pass_ruffs_airflow_rules():
    """AIR003 (Variable.get outside a task) among them; preview rules included."""
    ruff = ROOT / ".venv" / "bin" / "ruff"
    targets = ["dags", "src/omnir1/airflow_tasks.py"]
    out = subprocess.run(
        [str(ruff), "check", "--preview", "--select", "AIR", *targets],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout[-3000:]


def register_version(tmp_path: Path, mlflow_server: str, run_id: str) -> dict:
    """What a Kubeflow training run registers: a version tagged with its run id."""
    tmp_path.mkdir(exist_ok=True)
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
            f"kfp_run_id={run_id}",
        ],
        env={**os.environ, "MLFLOW_TRACKING_URI": mlflow_server},
        capture_output=True,
        text=True,
    )
    assert register.returncode == 0, register.stderr[-2000:]
    return json.loads((tmp_path / "register.json").read_text())


def test_nightly_trains_on_changed_data_and_skips_unchanged(
    airflow, packages, mlflow_server, tmp_path
):
    folder = project(tmp_path)
    decision = register_version(tmp_path, mlflow_server, "run-1")
    api = KubeflowStandIn(["RUNNING", "RUNNING", "SUCCEEDED"])
    env = kubeflow_env(api, folder, packages) | {"AIRFLOW_CONN_MLFLOW_DEFAULT": conn(mlflow_server)}
    dag_id = "omnir1_nightly_retraining"
    try:
        state, tasks = dag_test(airflow, dag_id, env)
        assert state == "success", tasks["_log"][-4000:]
        assert tasks["run_pipeline"] == tasks["remember"] == "success"
        assert tasks["_tries"]["run_pipeline"] == 1
        (experiment,) = api.calls("POST", "/apis/v2beta1/experiments")
        assert experiment["body"]["display_name"] == "omnir1"
        (created,) = api.created()
        assert created["auth"] == "Bearer kfp-token"
        body = created["body"]
        assert body["experiment_id"] == "exp-1"
        assert body["display_name"] == f"omnir1-training-{tasks['_run_id']}-try1"
        assert body["service_account"] == "omnir1-pipeline-runner"
        assert body["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "omnir1-training"
        assert "kubernetes" in body["pipeline_spec"]["platform_spec"]["platforms"]
        # a params key joins the run form's `overrides` (what Kubeflow's API accepts)
        assert body["runtime_config"]["parameters"] == {
            "parts": 8,
            "overrides": '{"train.max_steps": 200}',
        }
        assert api.polls() >= 3  # waited for it, in the trigger
        assert "[DAG TEST] running trigger in line" in tasks["_log"]
        outcome = xcom(airflow, dag_id, "read_outcome")
        assert outcome["version"] == decision["version"]
        assert outcome["promoted"] == decision["promoted"]
        assert [v for k, v in outcome["metrics"].items() if re.search(r"revos\W+JF$", k)] == [0.4]
        remembered = airflow("variables", "get", "omnir1_last_data_fingerprint", env=env)
        assert remembered.stdout.strip() == data_fingerprint(folder)

        # the same data the next night: nothing is submitted
        state, tasks = dag_test(airflow, dag_id, env)
        assert state == "success"
        assert tasks["data_changed"] == "success" and tasks["run_pipeline"] == "skipped"
        assert len(api.created()) == 1

        # new data (a DVC-tracked data set changed): trained again
        (folder / "data").mkdir()
        (folder / "data" / "revos.dvc").write_text("outs:\n- md5: 0f3e.dir\n  path: revos\n")
        register_version(tmp_path / "again", mlflow_server, "run-2")
        state, tasks = dag_test(airflow, dag_id, env)
        assert state == "success" and tasks["run_pipeline"] == "success"
        assert len(api.created()) == 2
        assert not api.calls("POST", r"/apis/v2beta1/runs/.*:terminate")
    finally:
        api.shutdown()
        airflow("variables", "delete", "omnir1_last_data_fingerprint", env=env)


def test_a_failed_kubeflow_run_fails_at_once_without_retries_and_alerts(
    airflow, packages, tmp_path
):
    api = KubeflowStandIn(["RUNNING", "FAILED"], error="task train: pod OOMKilled")
    hook = Recorder(lambda request: (200, {"ok": True}))
    env = kubeflow_env(api, project(tmp_path), packages) | {
        "AIRFLOW_CONN_OMNIR1_ALERTS": conn(hook.url + "/hooks/omnir1"),
    }
    try:
        started = time.monotonic()
        state, tasks = dag_test(airflow, "omnir1_nightly_retraining", env)
        assert state == "failed" and tasks["run_pipeline"] == "failed"
        assert tasks["_tries"]["run_pipeline"] == 1  # 2 retries allowed, none taken
        assert tasks["remember"] in ("upstream_failed", "skipped")
        assert api.polls() == 2 and len(api.created()) == 1  # not read again after FAILED
        (alert,) = hook.requests  # the task's alert; the DAG's callback adds none
        assert alert["path"] == "/hooks/omnir1"
        text = alert["body"]["text"]
        assert "omnir1_nightly_retraining.run_pipeline failed" in text and "try 1" in text
        assert "run-1 ended FAILED: task train: pod OOMKilled" in text
        assert not api.calls("POST", r"/apis/v2beta1/runs/.*:terminate")  # it had ended
        assert time.monotonic() - started < 120
        got = airflow("variables", "get", "omnir1_last_data_fingerprint", env=env)
        assert got.returncode != 0  # a failed night does not move the mark
    finally:
        api.shutdown()
        hook.shutdown()


def test_a_retried_submission_finds_the_run_it_started(airflow, packages, tmp_path):
    api = KubeflowStandIn(["RUNNING", "SUCCEEDED"], lose_first_create=True)
    env = kubeflow_env(api, project(tmp_path), packages, pipeline_args="{}") | {
        "AIRFLOW_CONN_MLFLOW_DEFAULT": conn("http://127.0.0.1:9"),
    }
    try:
        conf = {"model_uri": "models:/omnir1-system1/3", "baseline_uri": ""}
        state, tasks = dag_test(airflow, "omnir1_evaluate", env, conf)
        assert state == "success", tasks["_log"][-4000:]
        assert tasks["_tries"]["run_pipeline"] == 2  # the first try saw the 503
        assert "HTTP 503" in tasks["_log"]
        assert len(api.created()) == 1 and list(api.runs) == ["run-1"]  # no second run
        assert "found the run an earlier try started: run-1" in tasks["_log"]
        assert xcom(airflow, "omnir1_evaluate", "read_outcome") == {
            "run_id": "run-1",
            "state": "SUCCEEDED",
        }
    finally:
        api.shutdown()


def test_a_run_past_its_timeout_is_terminated_and_alerts(airflow, packages, tmp_path):
    api = KubeflowStandIn(["RUNNING"])
    hook = Recorder(lambda request: (200, {"ok": True}))
    env = kubeflow_env(api, project(tmp_path), packages, timeout_s="3") | {
        "AIRFLOW_CONN_OMNIR1_ALERTS": conn(hook.url),
    }
    try:
        state, tasks = dag_test(airflow, "omnir1_nightly_retraining", env)
        assert state == "failed" and tasks["run_pipeline"] == "failed"
        assert tasks["_tries"]["run_pipeline"] == 1
        (terminate,) = api.calls("POST", r"/apis/v2beta1/runs/run-1:terminate")
        assert terminate["auth"] == "Bearer kfp-token"
        assert api.runs["run-1"]["state"] == "CANCELING"
        (alert,) = hook.requests
        assert "did not end within 3 s of its creation: terminated" in alert["body"]["text"]
    finally:
        api.shutdown()
        hook.shutdown()


STOP_ON_KILL = """
import asyncio, json, sys
from omnir1.airflow_tasks import KubeflowRunTrigger, PipelineRunOperator, stop_pipeline_runs
what = sys.argv[1]
handle = {"run_id": "run-1", "namespace": None}
if what == "trigger":  # the waiting task cleared or marked: the triggerer calls on_kill
    asyncio.run(KubeflowRunTrigger(handle, poll_interval_s=1).on_kill())
elif what == "operator":  # killed on a worker (execution timeout, clear) before it deferred
    task = PipelineRunOperator(task_id="run_pipeline", pipeline="training")
    task._started = handle
    task.on_kill()
else:  # the DAG run timed out: the DAG's failure callback, with no task's XCom to read
    class Dag:
        dag_id = "omnir1_nightly_retraining"
    context = {"dag": Dag(), "run_id": "scheduled__x", "reason": "timed_out"}
    stop_pipeline_runs("training")(context)
"""


@pytest.mark.parametrize("killed", ["trigger", "operator", "dag"])
def test_a_killed_or_timed_out_wait_terminates_the_run(airflow, packages, tmp_path, killed):
    """What Airflow calls when a user clears or marks the task (the trigger's on_kill in the
    triggerer, the operator's on_kill on a worker) or the DAG run times out (the DAG's
    on_failure_callback): each terminates the Kubeflow run; a run that ended is left alone."""
    api = KubeflowStandIn(["RUNNING"])
    hook = Recorder(lambda request: (200, {"ok": True}))
    api.experiments["exp-1"] = {"experiment_id": "exp-1", "display_name": "omnir1"}
    for run_id, name in [("run-0", "omnir1-evaluation-scheduled__x-try1"), ("run-1", "")]:
        api.runs[run_id] = {"run_id": run_id, "experiment_id": "exp-1", "state": "RUNNING"}
        api.runs[run_id] |= {"created_at": "2026-01-01T02:00:00Z", "display_name": name}
        api.left[run_id] = ["RUNNING"]
    api.runs["run-1"]["display_name"] = "omnir1-training-scheduled__x-try1"
    env = airflow.env | {
        "AIRFLOW_CONN_KUBEFLOW_DEFAULT": conn(api.url, "kfp-token"),
        "AIRFLOW_CONN_OMNIR1_ALERTS": conn(hook.url),
    }
    try:
        for _ in range(2):  # the second time the run has ended: nothing to terminate
            out = subprocess.run(
                [str(AIRFLOW_PYTHON), "-c", STOP_ON_KILL, killed],
                env=env,
                capture_output=True,
                text=True,
            )
            assert out.returncode == 0, out.stderr[-3000:]
            api.runs["run-1"]["state"] = api.left["run-1"][0] = "CANCELED"
        (terminate,) = api.calls("POST", r"/apis/v2beta1/runs/run-1:terminate")
        assert terminate["auth"] == "Bearer kfp-token"
        if killed == "dag":  # a DAG run that timed out alerts from its callback
            assert len(hook.requests) == 2
            assert (
                "omnir1_nightly_retraining run scheduled__x failed (timed_out)"
                in (hook.requests[0]["body"]["text"])
            )
        else:
            assert not hook.requests
    finally:
        api.shutdown()
        hook.shutdown()


def test_a_local_pipeline_whose_task_fails_fails_the_dag_at_once_with_its_name(
    airflow, packages, tmp_path
):
    """Local mode runs the whole pipeline inside the task (nothing crosses tasks or hosts)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["source"] = str(tmp_path / "no-such-data")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    hook = Recorder(lambda request: (200, {"ok": True}))
    env = settings(
        ROOT,  # a local run needs the project's pipelines/
        packages,
        mode="local",
        cli=OMNIR1,
        params=str(tmp_path / "params.yaml"),
        runs_dir=str(tmp_path / "runs"),
        pipeline_args="{}",
    )
    env |= {"AIRFLOW_CONN_OMNIR1_ALERTS": conn(hook.url)}
    try:
        state, tasks = dag_test(airflow, "omnir1_nightly_retraining", env)
        assert state == "failed" and tasks["run_pipeline"] == "failed", tasks["_log"][-3000:]
        assert tasks["_tries"]["run_pipeline"] == 1
        (alert,) = hook.requests
        assert "local pipeline run failed" in alert["body"]["text"]
        # the run form's first step finds the missing data folder and names the task
        assert "resolve-params" in alert["body"]["text"]
        (folder,) = (tmp_path / "runs").iterdir()
        assert folder.name.startswith("training-manual__") and (folder / "log.txt").is_file()
    finally:
        hook.shutdown()


def test_the_evaluation_dag_runs_the_evaluation_pipeline_on_demand(airflow, packages, tmp_path):
    api = KubeflowStandIn(["RUNNING", "SUCCEEDED"])
    env = kubeflow_env(api, project(tmp_path), packages, pipeline_args="{}", namespace="team-a")
    try:
        conf = {"model_uri": "models:/omnir1-system1/3", "baseline_uri": ""}
        state, tasks = dag_test(airflow, "omnir1_evaluate", env, conf)
        assert state == "success", tasks["_log"][-4000:]
        (listed, *_) = api.calls("GET", "/apis/v2beta1/experiments")
        assert listed["query"]["namespace"] == "team-a"
        (experiment,) = api.calls("POST", "/apis/v2beta1/experiments")
        assert experiment["body"]["namespace"] == "team-a"
        (created,) = api.created()
        assert created["body"]["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == (
            "omnir1-evaluation"
        )
        assert created["body"]["runtime_config"]["parameters"] == conf
    finally:
        api.shutdown()
