"""The DVC remote on S3: where `dvc push` puts the pipeline's data and `dvc pull` gets it.

The remote comes from params.yaml `remote` (url, endpoint_url), each overridden by the
environment: OMNIR1_DVC_REMOTE_URL for the URL and AWS_ENDPOINT_URL (as in omnir1.s3) for the
endpoint. `omnir1 data remote` writes it into `.dvc/config.local`, which git ignores: the
endpoint belongs to a deployment, not to the repository. Credentials are never written
anywhere: DVC, like omnir1.s3, reads AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (in the cluster,
from a Kubernetes Secret), a profile or the pod's role.

Before DVC touches the remote, the bucket is checked with a few bounded requests, so that an
unreachable endpoint, a missing bucket or missing credentials fail in seconds with a message
naming the endpoint and the URL (DVC alone retries for ~15 s, then prints a raw endpoint URL).

    omnir1 data remote [--params params.yaml] [--create-bucket]
    omnir1 data push [TARGET...]      # configure, check, `dvc push -r NAME`
    omnir1 data pull [TARGET...]      # the same for `dvc pull` (a fresh clone needs nothing else)
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from omnir1.errors import ConfigError, InputError
from omnir1.s3 import ENDPOINT_ENV, S3Error, S3Url

URL_ENV = "OMNIR1_DVC_REMOTE_URL"


class DvcError(InputError):
    """A dvc command failed; the message carries DVC's own error lines."""


@dataclass(frozen=True)
class Remote:
    name: str
    url: str
    endpoint_url: str  # "" = AWS's own endpoint
    endpoint_from: str  # where the endpoint came from, for error messages

    @property
    def endpoint(self) -> str:
        if not self.endpoint_url:
            return f"endpoint: AWS default (neither {ENDPOINT_ENV} nor remote.endpoint_url set)"
        return f"endpoint {self.endpoint_url} (from {self.endpoint_from})"

    def to_dict(self) -> dict:
        return {"name": self.name, "url": self.url, "endpoint_url": self.endpoint_url}


def resolve(params, environ: Mapping[str, str] | None = None) -> Remote:
    """The remote of `params` (a config.RemoteParams), with the environment's overrides."""
    env = os.environ if environ is None else environ
    url = env.get(URL_ENV) or params.url
    if env.get(URL_ENV):
        try:
            S3Url.parse(url)
        except S3Error as exc:
            raise ConfigError(URL_ENV, f"{exc.message} (got {url!r})") from None
    if env.get(ENDPOINT_ENV):
        endpoint, source = env[ENDPOINT_ENV], ENDPOINT_ENV
        if not endpoint.startswith(("http://", "https://")):
            raise ConfigError(ENDPOINT_ENV, f"not an http(s):// URL (got {endpoint!r})")
    else:
        endpoint, source = params.endpoint_url, "params remote.endpoint_url"
    return Remote(params.name, url.rstrip("/"), endpoint.rstrip("/"), source)


def _client(remote: Remote, timeout: float):
    from omnir1 import s3

    # two attempts and short timeouts: a wrong endpoint must fail in seconds, not minutes
    return s3.client(2, endpoint_url=remote.endpoint_url, timeout_s=timeout)


def _explain(exc: Exception, remote: Remote) -> Exception:
    from botocore.exceptions import BotoCoreError

    from omnir1.s3 import explain as explain_s3

    err = explain_s3(exc, remote.url)
    if isinstance(err, InputError):  # S3Error, or ConfigError for missing credentials
        return type(err)(remote.url, f"{err.message}; {remote.endpoint}")
    if isinstance(exc, BotoCoreError):  # timeouts, proxies, TLS
        return S3Error(remote.url, f"cannot reach the S3 endpoint ({exc}); {remote.endpoint}")
    return exc


def _missing_bucket(exc: Exception) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    return exc.response.get("Error", {}).get("Code") in {"NoSuchBucket", "404"}


def check_bucket(remote: Remote, *, create: bool = False, timeout: float = 5.0) -> bool:
    """Raise an error naming the endpoint and URL unless the remote's bucket can be listed;
    with `create`, a missing bucket is created. Returns whether it was."""
    s3 = _client(remote, timeout)
    loc = S3Url.parse(remote.url)
    try:
        s3.list_objects_v2(Bucket=loc.bucket, Prefix=loc.key, MaxKeys=1)
        return False
    except Exception as exc:
        if not (create and _missing_bucket(exc)):
            raise _explain(exc, remote) from None
    region = s3.meta.region_name
    extra = {}
    if region and region != "us-east-1":  # us-east-1 refuses an explicit location
        extra["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(Bucket=loc.bucket, **extra)
    except Exception as exc:
        raise _explain(exc, remote) from None
    return True


def dvc_errors(output: str) -> str:
    """DVC's error text on one line: from its first ERROR on (an error may list targets on the
    lines below it), without warnings and the support banner."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    first = next((i for i, ln in enumerate(lines) if ln.startswith("ERROR")), None)
    if first is not None:
        lines = lines[first:]
    lines = [ln for ln in lines if not ln.startswith(("WARNING", "Having any troubles?"))]
    if first is None:
        lines = lines[-1:]
    # one failed transfer per file is noise: the first says why, a count says how many
    transfers = [ln for ln in lines if ln.startswith("ERROR: failed to transfer")]
    if len(transfers) > 1:
        at = lines.index(transfers[0])
        lines = [ln for ln in lines if ln not in transfers[1:]]
        lines.insert(at + 1, f"(and {len(transfers) - 1} more files like it)")
    return " ".join(lines) or "no output"


# botocore's default (5 attempts per request, under s3fs's own 5) keeps a push to a vanished
# endpoint retrying for many minutes; 3 standard-mode attempts still ride out a blip. The
# user's own AWS_MAX_ATTEMPTS / AWS_RETRY_MODE win.
TRANSFER_RETRIES = {"AWS_MAX_ATTEMPTS": "3", "AWS_RETRY_MODE": "standard"}


def dvc(*args: str, cwd: str | Path | None = None, about: str = "dvc") -> str:
    """Run `dvc ARGS` with this interpreter; its stdout, or a DvcError with its error text.
    Its warnings pass through to stderr."""
    out = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**TRANSFER_RETRIES, **os.environ},
    )
    if out.returncode != 0:
        text = dvc_errors(out.stderr if out.stderr.strip() else out.stdout)
        raise DvcError(about, f"dvc {args[0]} failed: {text}")
    sys.stderr.write(out.stderr)
    return out.stdout


def configure(remote: Remote, cwd: str | Path | None = None) -> None:
    """Write `remote` as the default remote into .dvc/config.local; running it again with the
    same remote leaves the same file (`--force` replaces the whole section)."""
    dvc("remote", "add", "--local", "--default", "--force", remote.name, remote.url, cwd=cwd)
    if remote.endpoint_url:
        dvc("remote", "modify", "--local", remote.name, "endpointurl", remote.endpoint_url, cwd=cwd)


def setup(remote: Remote, *, create_bucket: bool = False, cwd: str | Path | None = None) -> dict:
    """Check the bucket (creating it if asked), then configure the remote."""
    created = check_bucket(remote, create=create_bucket)
    configure(remote, cwd)
    return {**remote.to_dict(), "config": ".dvc/config.local", "bucket_created": created}


def transfer(
    command: str, remote: Remote, targets: Sequence[str] = (), cwd: str | Path | None = None
) -> str:
    """`dvc push` or `dvc pull` with `remote`, configured and checked first; DVC's output."""
    if command not in ("push", "pull"):
        raise ValueError(command)
    setup(remote, cwd=cwd)
    return dvc(command, "--remote", remote.name, *targets, cwd=cwd, about=remote.url)
