"""S3 through a real S3 endpoint: a moto server on 127.0.0.1."""

from __future__ import annotations

import socket

import pytest

from omnir1 import s3
from omnir1.errors import ConfigError
from omnir1.models.loading import Manifest, load_models


@pytest.fixture(scope="module")
def endpoint():
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws(endpoint, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("OMNIR1_CACHE", str(tmp_path / "cache"))
    return s3.client()


def test_models_load_from_s3_as_from_a_folder(aws, tiny_models, tmp_path):
    aws.create_bucket(Bucket="models")
    uploaded = s3.upload_prefix(tiny_models, "s3://models/tiny/v1")
    assert uploaded >= 5
    url = "s3://models/tiny/v1"
    models = load_models(url, system2=False)
    local = Manifest.read(tiny_models)
    assert models.manifest.name == local.name
    cached = s3.cache_dir(url)
    assert (cached / "models.json").is_file()
    # unchanged prefix: nothing is downloaded again (the cached files stay the same inodes)
    inode = (cached / "models.json").stat().st_ino
    s3.download_prefix(url, cached)
    assert (cached / "models.json").stat().st_ino == inode
    # a changed object is fetched again
    aws.put_object(Bucket="models", Key="tiny/v1/extra.txt", Body=b"new")
    s3.download_prefix(url, cached)
    assert (cached / "extra.txt").read_bytes() == b"new"


def test_s3_errors_name_the_url(aws, monkeypatch):
    with pytest.raises(s3.S3Error, match=r"s3://missing-bucket/x: bucket does not exist"):
        s3.list_objects("s3://missing-bucket/x")
    aws.create_bucket(Bucket="empty")
    with pytest.raises(s3.S3Error, match=r"s3://empty/nothing: no objects under this prefix"):
        s3.download_prefix("s3://empty/nothing", "/tmp/never-written")
    with pytest.raises(s3.S3Error, match="not an s3:// URL"):
        s3.S3Url.parse("http://x/y")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(ConfigError, match="no S3 credentials"):
        s3.list_objects("s3://empty/x")


def test_data_stage_imports_a_data_set_from_s3(aws, synth_sets, tmp_path, capsys):
    """`omnir1 data fetch` with an s3:// source: the same data set as the uploaded one, checked;
    a missing prefix is a clear error and leaves no folder behind."""
    from omnir1.cli import main

    aws.create_bucket(Bucket="datasets")
    s3.upload_prefix(synth_sets["mevis"], "s3://datasets/mevis/v1")
    params = tmp_path / "params.yaml"
    params.write_text("data:\n  sources: {mevis: s3://datasets/mevis/v1}\n")
    out, metrics = tmp_path / "sets" / "mevis", tmp_path / "data_mevis.json"
    args = ["data", "fetch", "--format", "mevis", "--params", str(params), "--quiet"]
    assert main([*args, "--out", str(out), "--metrics", str(metrics)]) == 0
    for path in synth_sets["mevis"].rglob("*"):
        if path.is_file():
            assert (out / path.relative_to(synth_sets["mevis"])).read_bytes() == path.read_bytes()
    import json

    report = json.loads(metrics.read_text())
    assert report["ok"] and report["source"] == "s3://datasets/mevis/v1"
    capsys.readouterr()
    params.write_text("data:\n  sources: {mevis: s3://datasets/mevis/v2}\n")
    assert main([*args, "--out", str(tmp_path / "none")]) == 2
    assert "s3://datasets/mevis/v2: no objects under this prefix" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_a_source_key_changes_with_what_the_prefix_holds(aws, tmp_path):
    """The DVC source stage's digest (omnir1.data.fetch.source_key): the same objects give the
    same key, a changed or added object another; nothing is downloaded."""
    from omnir1.config import Params
    from omnir1.data.fetch import source_key

    aws.create_bucket(Bucket="sets")
    aws.put_object(Bucket="sets", Key="revos/v1/meta.json", Body=b"{}")
    aws.put_object(Bucket="sets", Key="revos/v1/a.mp4", Body=b"video a")
    params = Params.model_validate({"data": {"sources": {"revos": "s3://sets/revos/v1"}}})
    first = source_key(params, "revos")
    assert first["files"] == 2 and source_key(params, "revos") == first
    aws.put_object(Bucket="sets", Key="revos/v1/a.mp4", Body=b"video a, re-encoded")
    changed = source_key(params, "revos")
    assert changed["sha256"] != first["sha256"]
    aws.put_object(Bucket="sets", Key="revos/v1/b.mp4", Body=b"video b")
    assert source_key(params, "revos")["files"] == 3
    assert not (tmp_path / "cache").exists()
