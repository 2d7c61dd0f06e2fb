"""What the Airflow DAGs do (dags/), kept here so the DAG files stay thin: fingerprint the
DVC-tracked data, start a pipeline run (on Kubeflow through its REST API, or locally with
`omnir1 pipeline run --local`), poll it, read the outcome, and send alerts.

Only the standard library and PyYAML: the Airflow image has neither torch nor kfp (kfp pins a
kubernetes client that Airflow's provider cannot use), so Kubeflow is spoken to over HTTP.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omnir1.errors import InputError, OmniR1Error

RUN_TAG = "kfp_run_id"  # the registry version's tag naming the pipeline run that made it
DONE_STATES = {"SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"}


class PipelineRunError(OmniR1Error):
    exit_code = 1


# ------------------------------------------------------------------------------- data change


def data_fingerprint(project: str | Path) -> str:
    """A sha256 of what says which data a run trains on: the `data` section of params.yaml
    (sources, formats, synthesis settings) and DVC's records of the tracked data (the outs of
    the data@FORMAT stages in dvc.lock, and every .dvc file under data/). Equal fingerprints:
    the same data as the run that recorded it."""
    import yaml

    project = Path(project)
    params_path = project / "params.yaml"
    try:
        params = yaml.safe_load(params_path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise InputError(params_path, "not found: is this the project folder?") from None
    record: dict[str, Any] = {"data": params.get("data", {})}
    lock = project / "dvc.lock"
    if lock.is_file():
        stages = (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages", {})
        record["dvc.lock"] = {
            name: stage.get("outs", [])
            for name, stage in sorted(stages.items())
            if name.split("@")[0] == "data"
        }
    record["dvc_files"] = (
        {
            str(p.relative_to(project)): p.read_text(encoding="utf-8")
            for p in sorted((project / "data").rglob("*.dvc"))
        }
        if (project / "data").is_dir()
        else {}
    )
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------- Kubeflow (REST)


class KubeflowRest:
    """The Kubeflow Pipelines v2beta1 REST API: create a run from a compiled package, read it.
    `token` (a Connection's password, or a service-account token) goes in a Bearer header."""

    def __init__(self, host: str, token: str | None = None, timeout_s: float = 30.0):
        if not host.startswith(("http://", "https://")):
            raise InputError(None, f"expected an http(s) URL, got {host!r}", "Kubeflow host")
        self.host, self.token, self.timeout_s = host.rstrip("/"), token, timeout_s

    def _call(self, method: str, path: str, body: Mapping | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.host + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise PipelineRunError(f"Kubeflow {method} {path}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PipelineRunError(f"Kubeflow at {self.host} unreachable ({reason})") from None

    def create_run(
        self,
        package: str | Path,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        experiment_id: str | None = None,
        service_account: str | None = None,
    ) -> str:
        """Start a run of the compiled pipeline `package` (YAML of `omnir1 pipeline compile`,
        its Kubernetes platform spec included); returns the run id."""
        import yaml

        docs = list(yaml.safe_load_all(Path(package).read_text(encoding="utf-8")))
        spec = docs[0] if len(docs) == 1 else {"pipeline_spec": docs[0], "platform_spec": docs[1]}
        body: dict[str, Any] = {
            "display_name": name,
            "pipeline_spec": spec,
            "runtime_config": {"parameters": dict(arguments or {})},
        }
        if experiment_id:
            body["experiment_id"] = experiment_id
        if service_account:  # the chart's runner, allowed to create PyTorchJobs
            body["service_account"] = service_account
        return self._call("POST", "/apis/v2beta1/runs", body)["run_id"]

    def get_run(self, run_id: str) -> dict:
        return self._call("GET", f"/apis/v2beta1/runs/{urllib.parse.quote(run_id)}")


# ------------------------------------------------------------------------------ local runs


def start_local_run(
    omnir1: str,
    project: str | Path,
    folder: str | Path,
    pipeline: str = "training",
    arguments: Mapping[str, Any] | None = None,
    params: str | None = None,
) -> dict:
    """Start `omnir1 pipeline run --local` in the background (its own process group); its
    JSON result, log and exit status land in `folder`. Returns the handle `poll` reads."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [
        omnir1,
        "pipeline",
        "run",
        "--local",
        "--pipeline",
        pipeline,
        "--project",
        str(project),
        "--pipeline-root",
        str(folder / "root"),
    ]
    if params:
        cmd += ["--params", params]
    for key, value in (arguments or {}).items():
        cmd += ["--set", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    script = (
        '"$@" > "$OUT/result.json" 2> "$OUT/log.txt"; code=$?; '
        'echo $code > "$OUT/exit.tmp" && mv "$OUT/exit.tmp" "$OUT/exit"'
    )
    proc = subprocess.Popen(
        ["/bin/sh", "-c", script, "omnir1-run", *cmd],
        cwd=project,
        env={**os.environ, "OUT": str(folder)},
        start_new_session=True,
    )
    return {"mode": "local", "pid": proc.pid, "folder": str(folder), "command": cmd}


def poll(handle: Mapping) -> dict | None:
    """None while the run is going; its outcome once it ended. A failed, canceled or vanished
    run raises PipelineRunError with what is known about why."""
    if handle["mode"] == "local":
        folder = Path(handle["folder"])
        if not (folder / "exit").is_file():
            if not _alive(handle["pid"]):
                raise PipelineRunError(f"local run (pid {handle['pid']}) ended without a status")
            return None
        code = int((folder / "exit").read_text().strip() or 1)
        if code != 0:
            log = (folder / "log.txt").read_text(errors="replace").strip().splitlines()
            why = next((ln for ln in reversed(log) if "error" in ln.lower()), "")
            raise PipelineRunError(f"local pipeline run failed (exit {code}): {why}")
        text = (folder / "result.json").read_text()
        return {"state": "SUCCEEDED", **json.loads(text[text.rindex("{\n") :])}
    run = KubeflowRest(handle["host"], handle.get("token")).get_run(handle["run_id"])
    state = run.get("state", "")
    if state not in DONE_STATES:
        return None
    if state != "SUCCEEDED":
        error = (run.get("error") or {}).get("message", "")
        raise PipelineRunError(
            f"Kubeflow run {handle['run_id']} ended {state}: {error}".rstrip(": ")
        )
    return {"state": state, "run_id": handle["run_id"]}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    # a finished child that nobody waited for is a zombie: reap it if it is ours
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def stop_local_run(handle: Mapping) -> None:
    """Stop a local run's whole process group (when the waiting task times out)."""
    if handle.get("mode") == "local":
        with contextlib.suppress(ProcessLookupError):
            os.killpg(handle["pid"], signal.SIGTERM)


# ------------------------------------------------------------------------------- outcomes


def _mlflow(uri: str, path: str, query: Mapping[str, Any], token: str | None = None) -> dict:
    url = f"{uri.rstrip('/')}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(query)}"
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")
    except (urllib.error.URLError, TimeoutError) as exc:
        raise PipelineRunError(f"MLflow at {uri} did not answer {path} ({exc})") from None


def registry_outcome(tracking_uri: str, model_name: str, run_id: str, token=None) -> dict:
    """The registry version a Kubeflow run registered (tagged kfp_run_id=RUN), whether it was
    promoted, and the metrics logged with it, read from the MLflow server's REST API."""
    query = {"filter": f"name='{model_name}' and tags.{RUN_TAG}='{run_id}'", "max_results": 5}
    versions = _mlflow(tracking_uri, "model-versions/search", query, token).get("model_versions")
    if not versions:
        raise PipelineRunError(f"no version of {model_name} is tagged {RUN_TAG}={run_id}")
    version = max(versions, key=lambda v: int(v["version"]))
    tags = {t["key"]: t["value"] for t in version.get("tags", [])}
    run = _mlflow(tracking_uri, "runs/get", {"run_id": version["run_id"]}, token)["run"]
    metrics = {m["key"]: m["value"] for m in run.get("data", {}).get("metrics", [])}
    return {
        "version": version["version"],
        "promoted": tags.get("gate") == "passed",
        "metrics": metrics,
    }


def local_outcome(result: Mapping) -> dict:
    """The decision and headline figures of a local run (its result JSON's files)."""
    out: dict[str, Any] = {"run": result.get("run"), "report": result.get("report")}
    if result.get("decision"):
        decision = json.loads(Path(result["decision"]).read_text())
        out |= {
            "version": decision["version"],
            "promoted": decision["promoted"],
            "summary": decision["summary"],
        }
    if result.get("evaluation"):
        evaluation = json.loads(Path(result["evaluation"]).read_text())
        out["evaluation"] = {k: evaluation[k] for k in ("trained", "delta") if k in evaluation}
    return out


# ---------------------------------------------------------------------------------- alerts


def alert(message: str, webhook: str | None = None) -> None:
    """Print the alert (task logs keep it) and POST it as JSON {"text": ...} to `webhook`
    (Slack, Teams and most chat tools take that shape) when one is configured."""
    print(f"ALERT: {message}", file=sys.stderr)
    if not webhook:
        return
    request = urllib.request.Request(
        webhook,
        data=json.dumps({"text": message}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    for attempt in range(3):  # an alert should not be lost to one dropped connection
        try:
            with urllib.request.urlopen(request, timeout=10):
                return
        except (urllib.error.URLError, TimeoutError) as exc:
            print(f"alert webhook failed ({exc}); attempt {attempt + 1} of 3", file=sys.stderr)
            time.sleep(2**attempt)
