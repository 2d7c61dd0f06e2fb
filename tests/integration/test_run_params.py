"""resolve-params against real sources: an S3 prefix keyed by its listing (a moto server on
127.0.0.1) and a registry alias pinned to the version it names (MLflow on SQLite)."""

import json
import socket
from pathlib import Path

import pytest

from omnir1 import s3
from omnir1.kube.params import PARAMS_ENV, PROJECT_ENV, resolve_run
from omnir1.registry import TrackingError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def project(monkeypatch):
    monkeypatch.setenv(PROJECT_ENV, str(ROOT))
    monkeypatch.delenv(PARAMS_ENV, raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def bucket(monkeypatch, tmp_path):
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    client = s3.client()
    client.create_bucket(Bucket="datasets")
    yield client
    server.stop()


def test_an_s3_source_is_keyed_by_its_objects(bucket):
    for key in ("revos/v3/meta.json", "revos/v3/videos/a.mp4"):
        bucket.put_object(Bucket="datasets", Key=key, Body=b"one")
    form = dict(data_source="s3://datasets/revos/v3", overrides='{"data.formats": ["revos"]}')
    first = resolve_run("training", **form)
    assert resolve_run("training", **form).data_key == first.data_key  # unchanged: reused
    bucket.put_object(Bucket="datasets", Key="revos/v3/videos/a.mp4", Body=b"two")  # new ETag
    assert resolve_run("training", **form).data_key != first.data_key
    # the params the fetch step reads did not change: only the key tells it to fetch again
    assert resolve_run("training", **form).data == first.data


def test_a_registry_alias_is_pinned_to_the_version_it_names(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("omnir1-system1")
    for _ in range(2):
        client.create_model_version("omnir1-system1", source=str(tmp_path / "model"))
    client.set_registered_model_alias("omnir1-system1", "champion", "1")
    form = dict(
        model_uri="models:/omnir1-system1@champion",
        overrides=json.dumps({"tracking.uri": uri}),
    )
    first = resolve_run("evaluation", **form)
    assert first.model_uri == "models:/omnir1-system1/1"  # what fetch-model downloads
    assert resolve_run("evaluation", **form).model_key == first.model_key
    client.set_registered_model_alias("omnir1-system1", "champion", "2")
    moved = resolve_run("evaluation", **form)
    assert moved.model_uri == "models:/omnir1-system1/2" and moved.model_key != first.model_key
    form["model_uri"] = "models:/omnir1-system1@nobody"
    with pytest.raises(TrackingError, match="models:/omnir1-system1@nobody"):
        resolve_run("evaluation", **form)
