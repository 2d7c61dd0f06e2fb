"""What the Airflow DAGs (dags/) do, apart from Airflow itself (omnir1.airflow_tasks): fingerprint
the DVC-tracked data, run a pipeline on Kubeflow (through Kubeflow's own generated client,
kfp-server-api) or locally (`omnir1 pipeline run --local`, to its end), read what a Kubeflow run
registered (MlflowClient), and send alerts.

Importing this module needs the standard library only; PyYAML, kfp_server_api and mlflow are
imported by the functions that use them. The Airflow venv has kfp-server-api and mlflow-skinny
but not kfp (kfp pins a kubernetes client older than the one Airflow's provider needs).
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
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from omnir1.errors import InputError, OmniR1Error

RUN_TAG = "kfp_run_id"  # the registry version's tag naming the pipeline run that made it
DONE_STATES = {"SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"}


class PipelineRunError(OmniR1Error):
    """A pipeline run failed, or its orchestrator refused or did not answer a call.
    `transient`: worth asking again (unreachable, HTTP 5xx, 408, 429)."""

    exit_code = 1

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


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


# ---------------------------------------------------------------------------------- Kubeflow


def load_package(path: str | Path) -> dict:
    """A compiled pipeline package (`omnir1 pipeline compile` YAML) as the run's pipeline_spec:
    the pipeline spec, with its Kubernetes platform spec when the package has one (kfp.Client's
    shape for a run created from a package)."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, "no compiled pipeline here (omnir1 pipeline compile)") from None
    docs = [d for d in yaml.safe_load_all(text) if d]
    if len(docs) == 1:
        return docs[0]
    platform: dict = {}
    for doc in docs[1:]:
        platform.update(doc)
    return {"pipeline_spec": docs[0], "platform_spec": platform}


def _name_filter(name: str, operation: str = "EQUALS") -> str:
    predicate = {"key": "display_name", "operation": operation, "string_value": name}
    return json.dumps({"predicates": [predicate]})


class Kubeflow:
    """Kubeflow Pipelines' v2beta1 API through kfp-server-api (the client kfp.Client wraps):
    experiments, runs created from a compiled package, their state, terminating them.
    `token` (a Connection's password, or a service-account token) goes in a Bearer header;
    `namespace` is the Kubeflow profile's (multi-user installs)."""

    def __init__(
        self,
        host: str,
        token: str | None = None,
        namespace: str | None = None,
        timeout_s: float = 30.0,
    ):
        import kfp_server_api

        if not host.startswith(("http://", "https://")):
            raise InputError(None, f"expected an http(s) URL, got {host!r}", "Kubeflow host")
        config = kfp_server_api.Configuration(host=host.rstrip("/"))
        if token:
            config.api_key["authorization"] = token
            config.api_key_prefix["authorization"] = "Bearer"
        client = kfp_server_api.ApiClient(config)
        self.host, self.namespace, self.timeout_s = host.rstrip("/"), namespace, timeout_s
        self._runs = kfp_server_api.RunServiceApi(client)
        self._experiments = kfp_server_api.ExperimentServiceApi(client)

    def _call(self, what: str, method, *args, **kwargs):
        from kfp_server_api.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return method(*args, _request_timeout=self.timeout_s, **kwargs)
        except ApiException as exc:
            status = exc.status or 0
            detail = (exc.body or exc.reason or "").strip().replace("\n", " ")[:300]
            raise PipelineRunError(
                f"Kubeflow {what}: HTTP {status}: {detail}".rstrip(": "),
                transient=status >= 500 or status in (0, 408, 429),
            ) from None
        except HTTPError as exc:  # refused, reset, timed out (urllib3 wraps them)
            reason = getattr(exc, "reason", None) or exc
            raise PipelineRunError(
                f"Kubeflow at {self.host} unreachable ({reason})", transient=True
            ) from None

    def experiment(self, name: str, create: bool = True) -> str | None:
        """The id of the experiment `name` (in the namespace); created if there is none and
        `create`, else None."""
        import kfp_server_api

        where = {"namespace": self.namespace} if self.namespace else {}
        found = self._call(
            "list experiments",
            self._experiments.experiment_service_list_experiments,
            filter=_name_filter(name),
            page_size=2,
            **where,
        )
        if found.experiments:
            return found.experiments[0].experiment_id
        if not create:
            return None
        body = kfp_server_api.V2beta1Experiment(display_name=name, namespace=self.namespace)
        created = self._call(
            "create experiment", self._experiments.experiment_service_create_experiment, body
        )
        return created.experiment_id

    def find_runs(self, experiment_id: str, name: str, containing: bool = False) -> list[dict]:
        """Runs of the experiment called `name` (or whose name contains it), newest first."""
        runs, token = [], ""
        while True:
            page = self._call(
                "list runs",
                self._runs.run_service_list_runs,
                experiment_id=experiment_id,
                filter=_name_filter(name, "IS_SUBSTRING" if containing else "EQUALS"),
                sort_by="created_at desc",
                page_size=50,
                page_token=token,
            )
            runs += [_run_dict(r) for r in page.runs or []]
            token = page.next_page_token
            if not token:
                return runs

    def submit(
        self,
        package: str | Path,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        experiment: str = "omnir1",
        service_account: str | None = None,
    ) -> dict:
        """Start a run of the compiled pipeline `package` called `name`, once: when the
        experiment already has a run of that name (a retried submission whose first answer
        was lost), that run is returned, whatever its state, instead of a second one. The run
        as a dict, with `reused` saying which."""
        import kfp_server_api

        from omnir1.kube.params import fold_overrides

        spec = load_package(package)
        pipeline = spec.get("pipeline_spec", spec)
        # params keys (train.max_steps, or train__max_steps) go into the run form's `overrides`
        parameters = pipeline["root"].get("inputDefinitions", {}).get("parameters", {})
        arguments = dict(arguments or {})
        if "overrides" in parameters:  # the run form of pipelines/ (omnir1 pipeline compile)
            arguments = fold_overrides(arguments, parameters)
        experiment_id = self.experiment(experiment)
        existing = self.find_runs(experiment_id, name)
        if existing:
            return {**existing[0], "reused": True}
        body = kfp_server_api.V2beta1Run(
            experiment_id=experiment_id,
            display_name=name,
            pipeline_spec=spec,
            runtime_config=kfp_server_api.V2beta1RuntimeConfig(parameters=arguments),
            service_account=service_account,  # the chart's runner, allowed to create PyTorchJobs
        )
        created = self._call("create run", self._runs.run_service_create_run, body)
        return {**_run_dict(created), "reused": False}

    def get_run(self, run_id: str) -> dict:
        return _run_dict(self._call(f"get run {run_id}", self._runs.run_service_get_run, run_id))

    def terminate(self, run_id: str) -> bool:
        """Stop the run unless it already ended; whether a terminate call was made."""
        if self.get_run(run_id)["state"] in DONE_STATES | {"CANCELING"}:
            return False
        self._call(f"terminate run {run_id}", self._runs.run_service_terminate_run, run_id)
        return True

    def stop_runs(self, containing: str, experiment: str = "omnir1") -> list[str]:
        """Terminate every run of the experiment still going whose name contains
        `containing`; their ids."""
        experiment_id = self.experiment(experiment, create=False)
        runs = self.find_runs(experiment_id, containing, containing=True) if experiment_id else []
        live = [r for r in runs if r["state"] not in DONE_STATES | {"CANCELING"}]
        for run in live:
            self._call(
                f"terminate run {run['run_id']}",
                self._runs.run_service_terminate_run,
                run["run_id"],
            )
        return [r["run_id"] for r in live]


def _run_dict(run) -> dict:
    error = getattr(run.error, "message", None) if run.error else None
    created = run.created_at
    return {
        "run_id": run.run_id,
        "name": run.display_name,
        "state": run.state or "PENDING",
        "error": error or "",
        "created_at": created.timestamp() if created else None,
    }


def run_failure(run: Mapping) -> str | None:
    """Why an ended run did not succeed (None while it runs, or when it succeeded)."""
    if run["state"] not in DONE_STATES or run["state"] == "SUCCEEDED":
        return None
    return f"Kubeflow run {run['run_id']} ended {run['state']}: {run.get('error', '')}".rstrip(": ")


# ------------------------------------------------------------------------------ local runs


def local_command(
    omnir1: str,
    project: str | Path,
    folder: str | Path,
    pipeline: str = "training",
    arguments: Mapping[str, Any] | None = None,
    params: str | None = None,
) -> list[str]:
    cmd = [omnir1, "pipeline", "run", "--local", "--pipeline", pipeline]
    cmd += ["--project", str(project), "--pipeline-root", str(Path(folder) / "root")]
    if params:
        cmd += ["--params", params]
    for key, value in (arguments or {}).items():
        cmd += ["--set", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    return cmd


class LocalRun:
    """`omnir1 pipeline run --local` on this machine, from start to end inside one caller (an
    Airflow task): its own process group, so `stop` (the task's on_kill) or any exception in
    `wait` (a timeout, the task being killed) ends every process the run started. Its JSON
    result goes to FOLDER/result.json, its log to FOLDER/log.txt."""

    def __init__(self, command: list[str], project: str | Path, folder: str | Path):
        self.command, self.folder = command, Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        with (
            (self.folder / "result.json").open("wb") as out,
            (self.folder / "log.txt").open("wb") as log,
        ):
            self.process = subprocess.Popen(
                command, cwd=project, stdout=out, stderr=log, start_new_session=True
            )

    def wait(self, timeout_s: float | None = None) -> dict:
        """The run's result (its JSON) once it ended; PipelineRunError if it failed or did
        not end within `timeout_s` (then it is stopped)."""
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            raise PipelineRunError(
                f"local pipeline run did not end within {timeout_s:g} s: stopped"
            ) from None
        except BaseException:
            self.stop()
            raise
        if code != 0:
            log = (self.folder / "log.txt").read_text(errors="replace").strip().splitlines()
            why = next((ln for ln in reversed(log) if "error" in ln.lower()), "")
            raise PipelineRunError(f"local pipeline run failed (exit {code}): {why}")
        text = (self.folder / "result.json").read_text()
        return json.loads(text[text.rindex("{\n") :])

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM to the run's process group, SIGKILL after `grace_s`."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


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


# ------------------------------------------------------------------------------- outcomes


@contextlib.contextmanager
def _mlflow_auth(token: str | None, username: str | None) -> Iterator[None]:
    """MLflow's client reads credentials from the environment only: set them for the call
    (a bearer token, or basic auth when there is a user name), then restore."""
    if username:
        wanted = {"MLFLOW_TRACKING_USERNAME": username, "MLFLOW_TRACKING_PASSWORD": token}
    else:
        wanted = {"MLFLOW_TRACKING_TOKEN": token}
    wanted = {k: v for k, v in wanted.items() if v}
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def registry_outcome(
    tracking_uri: str,
    model_name: str,
    run_id: str,
    token: str | None = None,
    username: str | None = None,
) -> dict:
    """The registry version a Kubeflow run registered (tagged kfp_run_id=RUN), whether it was
    promoted, and the metrics of the run it belongs to (MlflowClient)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    with _mlflow_auth(token, username):
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        try:
            versions = client.search_model_versions(
                f"name='{model_name}' and tags.{RUN_TAG}='{run_id}'"
            )
            if not versions:
                raise PipelineRunError(f"no version of {model_name} is tagged {RUN_TAG}={run_id}")
            version = max(versions, key=lambda v: int(v.version))
            metrics = client.get_run(version.run_id).data.metrics
        except MlflowException as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PipelineRunError(f"MLflow at {tracking_uri}: {first}", transient=True) from None
    return {
        "version": version.version,
        "promoted": version.tags.get("gate") == "passed",
        "metrics": dict(metrics),
    }


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
