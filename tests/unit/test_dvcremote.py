"""The DVC remote's settings: params.yaml `remote`, overridden by the environment; credentials
have no place in the file; DVC's error text is reduced to one line."""

from pathlib import Path

import pytest
import yaml

from omnir1.config import RemoteParams, load_params
from omnir1.dvcremote import URL_ENV, dvc_errors, resolve
from omnir1.errors import ConfigError
from omnir1.s3 import ENDPOINT_ENV

ROOT = Path(__file__).resolve().parents[2]


def test_repo_params_name_a_default_remote_on_aws():
    remote = resolve(load_params(ROOT / "params.yaml").remote, environ={})
    assert (remote.name, remote.url) == ("storage", "s3://omnir1-dvc/cache")
    assert remote.endpoint_url == ""
    assert "AWS default" in remote.endpoint


def test_environment_overrides_params():
    params = RemoteParams(url="s3://from-params/cache", endpoint_url="http://params:9000")
    remote = resolve(params, environ={URL_ENV: "s3://from-env/dvc/", ENDPOINT_ENV: "http://env:1/"})
    assert (remote.url, remote.endpoint_url) == ("s3://from-env/dvc", "http://env:1")
    assert remote.endpoint == "endpoint http://env:1 (from AWS_ENDPOINT_URL)"
    # unset or empty variables leave the params' values
    for env in ({}, {URL_ENV: "", ENDPOINT_ENV: ""}):
        remote = resolve(params, environ=env)
        assert (remote.url, remote.endpoint_url) == ("s3://from-params/cache", "http://params:9000")
        assert "params remote.endpoint_url" in remote.endpoint


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({URL_ENV: "http://bucket/x"}, "OMNIR1_DVC_REMOTE_URL: not an s3:// URL"),
        ({URL_ENV: "s3:///x"}, "OMNIR1_DVC_REMOTE_URL: no bucket"),
        ({ENDPOINT_ENV: "minio:9000"}, "AWS_ENDPOINT_URL: not an http"),
    ],
)
def test_bad_environment_values_name_the_variable(env, match):
    with pytest.raises(ConfigError, match=match):
        resolve(RemoteParams(), environ=env)


@pytest.mark.parametrize(
    ("remote", "field"),
    [
        ({"url": "omnir1-dvc/cache"}, "remote.url"),
        ({"endpoint_url": "minio:9000"}, "remote.endpoint_url"),
        ({"secret_access_key": "x"}, "remote.secret_access_key"),  # no key for credentials
        ({"access_key_id": "x"}, "remote.access_key_id"),
    ],
)
def test_params_reject_bad_values_and_credentials(tmp_path, remote, field):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["remote"].update(remote)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=rf"params.yaml: {field}"):
        load_params(path)


def test_dvc_errors_keep_the_error_and_its_list_only():
    output = """WARNING: No file hash info found for '/p/models/tiny'. It won't be created.
ERROR: failed to pull data from the cloud - Checkout failed for following targets:
models/tiny
runs/train
Is your cache up to date?

Having any troubles? Hit us up at https://dvc.org/support, we are always happy to help!
"""
    assert dvc_errors(output) == (
        "ERROR: failed to pull data from the cloud - Checkout failed for following targets: "
        "models/tiny runs/train Is your cache up to date?"
    )
    assert dvc_errors("something odd\nlast line\n") == "last line"
    assert dvc_errors("") == "no output"
