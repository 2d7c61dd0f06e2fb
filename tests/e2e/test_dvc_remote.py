"""The DVC remote on a real S3 endpoint (a moto server on 127.0.0.1): `omnir1 data remote`
configures it, `omnir1 data push` uploads a data stage's outputs, and a fresh clone (dvc.yaml,
dvc.lock, params, .dvc/config, git-tracked metrics; no cache, no config.local) pulls files whose
md5 hashes are those dvc.lock records. Bad endpoints, buckets and credentials fail in seconds
with exit 2 and a message naming the endpoint; no credential is written to any file."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "omnir1-dvc-e2e"
# distinctive values, searched for in every file the projects hold afterwards
KEY_ID = "OMNIR1E2EKEYID4242"
SECRET = "omnir1-e2e-secret-7f3a9c1d5b"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def endpoint():
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def _env(**extra: str | None) -> dict[str, str]:
    """The caller's environment without its AWS and remote settings, test credentials only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OMNIR1_DVC_"))}
    env.update(
        PATH=f"{ROOT / '.venv/bin'}:{os.environ['PATH']}",
        AWS_ACCESS_KEY_ID=KEY_ID,
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
        AWS_CONFIG_FILE="/nonexistent",
        AWS_EC2_METADATA_DISABLED="true",
    )
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def omnir1(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "omnir1.cli", *args], cwd, env)


def dvc(cwd: Path, env: dict[str, str], *args: str) -> str:
    out = _run([sys.executable, "-m", "dvc", *args], cwd, env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout


def _params(**remote: str) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["synth"].update(videos=6, workers=1)  # every RefAVS split, in a second
    params["remote"].update({"url": f"s3://{BUCKET}/cache", "endpoint_url": "", **remote})
    return params


def _project(path: Path, params: dict) -> Path:
    path.mkdir()
    shutil.copy(ROOT / "dvc.yaml", path)
    shutil.copytree(
        ROOT / "src", path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    (path / "params.yaml").write_text(yaml.safe_dump(params))
    return path


def _md5s(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _assert_no_credentials(*projects: Path) -> None:
    for project in projects:
        for name in ("config", "config.local"):
            config = project / ".dvc" / name
            if config.exists():
                assert "access_key" not in config.read_text(), config
                assert "secret" not in config.read_text(), config
        for path in project.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert KEY_ID.encode() not in data and SECRET.encode() not in data, path


def test_push_then_pull_into_a_fresh_clone(endpoint, tmp_path):
    import boto3

    # the endpoint comes from the environment, as in a deployment (params say AWS's own)
    env = _env(AWS_ENDPOINT_URL=endpoint)
    first = _project(tmp_path / "first", _params())
    dvc(first, env, "init", "--no-scm", "-q")
    dvc(first, env, "repro", "data@refavs")

    missing = omnir1(first, env, "data", "remote")
    assert missing.returncode == 2
    assert f"s3://{BUCKET}/cache: bucket does not exist" in missing.stderr
    assert f"endpoint {endpoint} (from AWS_ENDPOINT_URL)" in missing.stderr
    assert not (first / ".dvc" / "config.local").exists()

    made = omnir1(first, env, "data", "remote", "--create-bucket")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["bucket_created"] is True
    local = (first / ".dvc" / "config.local").read_text()
    assert f"url = s3://{BUCKET}/cache" in local and f"endpointurl = {endpoint}" in local
    assert "remote = storage" in local
    again = omnir1(first, env, "data", "remote")  # idempotent: the same file again
    assert again.returncode == 0 and json.loads(again.stdout)["bucket_created"] is False
    assert (first / ".dvc" / "config.local").read_text() == local

    pushed = omnir1(first, env, "data", "push")
    assert pushed.returncode == 0, pushed.stderr
    assert "pushed" in pushed.stdout

    lock = yaml.safe_load((first / "dvc.lock").read_text())
    outs = {o["path"]: o for o in lock["stages"]["data@refavs"]["outs"]}
    out = outs["data/sets/refavs"]  # the metrics beside it stay in git (cache: false)
    assert out["md5"].endswith(".dir")
    dir_md5 = out["md5"].removesuffix(".dir")
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )
    keys = {
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="cache/")
        for o in page.get("Contents", [])
    }
    assert f"cache/files/md5/{dir_md5[:2]}/{dir_md5[2:]}.dir" in keys

    # a fresh clone: what git holds (no cache, no config.local, no data)
    clone = _project(tmp_path / "clone", _params())
    # (metrics/ holds the uncached outputs git keeps: the metrics and the sources' digests)
    for name in ("dvc.yaml", "dvc.lock", "params.yaml", ".dvc/config", "metrics"):
        if (first / name).is_dir():
            shutil.copytree(first / name, clone / name)
        else:
            (clone / name).parent.mkdir(exist_ok=True)
            shutil.copy(first / name, clone / name)
    pulled = omnir1(clone, env, "data", "pull", "data@refavs")
    assert pulled.returncode == 0, pulled.stderr

    files = _md5s(clone / "data" / "sets" / "refavs")
    assert files == _md5s(first / "data" / "sets" / "refavs")
    assert len(files) == out["nfiles"]
    size = sum(p.stat().st_size for p in (clone / out["path"]).rglob("*") if p.is_file())
    assert size == out["size"]
    # the directory's entry in the cache lists every file's md5 and hashes to dvc.lock's md5
    listing = clone / ".dvc" / "cache" / "files" / "md5" / dir_md5[:2] / f"{dir_md5[2:]}.dir"
    assert hashlib.md5(listing.read_bytes()).hexdigest() == dir_md5
    assert {e["relpath"]: e["md5"] for e in json.loads(listing.read_text())} == files
    assert "up to date" in dvc(clone, env, "status", "data@refavs")

    # stages never run (no dvc.lock entry) cannot be pulled: DVC's own error text, exit 2
    everything = omnir1(clone, env, "data", "pull")
    assert everything.returncode == 2
    assert "dvc pull failed: ERROR:" in everything.stderr and "models/base" in everything.stderr

    _assert_no_credentials(first, clone)


def test_unreachable_endpoint_fails_fast_naming_it(tmp_path):
    port = _free_port()  # closed: nothing listens there
    closed = f"http://127.0.0.1:{port}"
    project = _project(tmp_path / "project", _params(endpoint_url=closed))
    env = _env()
    dvc(project, env, "init", "--no-scm", "-q")
    for command in (["data", "remote"], ["data", "push"]):
        start = time.monotonic()
        out = omnir1(project, env, *command)
        seconds = time.monotonic() - start
        assert out.returncode == 2, out.stderr
        assert "cannot reach the S3 endpoint" in out.stderr, out.stderr
        assert f"endpoint {closed} (from params remote.endpoint_url)" in out.stderr
        assert seconds < 15, (command, seconds)  # DVC alone retries for ~15 s
    assert not (project / ".dvc" / "config.local").exists()
    _assert_no_credentials(project)


def test_missing_bucket_and_credentials_name_the_endpoint(endpoint, tmp_path):
    project = _project(tmp_path / "project", _params(endpoint_url=endpoint))
    # the URL from the environment wins over params
    env = _env(OMNIR1_DVC_REMOTE_URL="s3://no-such-bucket/dvc")
    out = omnir1(project, env, "data", "remote")
    assert out.returncode == 2
    assert "s3://no-such-bucket/dvc: bucket does not exist" in out.stderr
    assert f"endpoint {endpoint} (from params remote.endpoint_url)" in out.stderr

    env = _env(AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None)
    start = time.monotonic()
    out = omnir1(project, env, "data", "pull")
    assert out.returncode == 2
    assert f"s3://{BUCKET}/cache: no S3 credentials" in out.stderr
    assert endpoint in out.stderr
    assert time.monotonic() - start < 15
