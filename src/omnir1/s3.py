"""All S3 access goes through here: URLs, one configured client, retries and clear errors.

The endpoint comes from `AWS_ENDPOINT_URL` (e.g. a MinIO or moto server; unset for AWS),
credentials from the standard AWS environment variables, a profile, or the pod's role; never
from files in this repository. Every call retries transient failures (botocore "standard"
mode), and missing buckets, keys and credentials become errors that name the URL.

Downloads of a prefix go to a staging folder that replaces the destination only when complete,
and record the objects' ETags, so a second download of an unchanged prefix is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from omnir1.errors import ConfigError, InputError
from omnir1.fsutil import atomic_dir

ENDPOINT_ENV = "AWS_ENDPOINT_URL"
STAMP = ".omnir1-s3.json"


class S3Error(InputError):
    """An S3 URL cannot be read or written."""


@dataclass(frozen=True)
class S3Url:
    bucket: str
    key: str  # object key or prefix, without a leading slash

    @classmethod
    def parse(cls, url: str) -> S3Url:
        if not url.startswith("s3://"):
            raise S3Error(url, "not an s3:// URL")
        bucket, _, key = url[5:].partition("/")
        if not bucket:
            raise S3Error(url, "no bucket in the URL")
        return cls(bucket, key.strip("/"))

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def is_s3(path: str | Path) -> bool:
    return str(path).startswith("s3://")


def client(retries: int = 5, *, endpoint_url: str | None = None, timeout_s: float | None = None):
    """A boto3 S3 client: the endpoint given, else AWS_ENDPOINT_URL, else AWS's own;
    `timeout_s` bounds connecting and reading (a wrong endpoint fails in seconds)."""
    import boto3
    from botocore.config import Config

    timeouts = {"connect_timeout": timeout_s, "read_timeout": timeout_s} if timeout_s else {}
    # a fresh session: boto3's default one caches the credentials it first found
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url or os.environ.get(ENDPOINT_ENV) or None,
        config=Config(retries={"max_attempts": retries, "mode": "standard"}, **timeouts),
    )


def explain(exc: Exception, url: str) -> Exception:
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return ConfigError(
            None, "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", url
        )
    if isinstance(exc, EndpointConnectionError):
        return S3Error(url, f"cannot reach the S3 endpoint ({exc})")
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        messages = {
            "NoSuchBucket": "bucket does not exist",
            "NoSuchKey": "object does not exist",
            "404": "object does not exist",
            "AccessDenied": "access denied",
            "InvalidAccessKeyId": "credentials rejected",
            "SignatureDoesNotMatch": "credentials rejected",
        }
        return S3Error(url, messages.get(code, f"S3 error {code}: {exc}"))
    return exc


def list_objects(url: str) -> list[dict]:
    """Objects under a prefix: [{"key", "size", "etag"}], sorted by key."""
    loc = S3Url.parse(url)
    prefix = loc.key + "/" if loc.key else ""
    s3 = client()
    out = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                out.append({"key": obj["Key"], "size": obj["Size"], "etag": obj["ETag"]})
    except Exception as exc:
        raise explain(exc, url) from None
    return sorted(out, key=lambda o: o["key"])


def _stamp(url: str) -> tuple[list[dict], dict]:
    objects = list_objects(url)
    if not objects:
        raise S3Error(url, "no objects under this prefix")
    return objects, {o["key"]: o["etag"] for o in objects}


def is_mirrored(url: str, dest: str | Path) -> bool:
    """Whether `dest` is a complete mirror of the objects now under `url`."""
    path = Path(dest) / STAMP
    try:
        return path.is_file() and json.loads(path.read_text()) == _stamp(url)[1]
    except ValueError:
        return False


def download_prefix(url: str, dest: str | Path) -> Path:
    """Mirror every object under `url` into `dest` (atomically; a no-op when unchanged)."""
    from omnir1.fsutil import inside

    loc = S3Url.parse(url)
    dest = Path(dest)
    objects, stamp = _stamp(url)
    if (dest / STAMP).is_file() and json.loads((dest / STAMP).read_text()) == stamp:
        return dest
    s3 = client()
    prefix = loc.key + "/" if loc.key else ""
    with atomic_dir(dest) as staging:
        for o in objects:
            rel = o["key"][len(prefix) :]
            target = inside(staging, *rel.split("/"), source=url, field=o["key"])
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                s3.download_file(loc.bucket, o["key"], str(target))
            except Exception as exc:
                raise explain(exc, f"s3://{loc.bucket}/{o['key']}") from None
        (staging / STAMP).write_text(json.dumps(stamp, indent=1))
    return dest


def upload_prefix(src: str | Path, url: str) -> int:
    """Upload every file under `src` to the prefix `url`; returns the number of files."""
    loc = S3Url.parse(url)
    s3 = client()
    count = 0
    for path in sorted(Path(src).rglob("*")):
        if not path.is_file() or path.name == STAMP:
            continue
        key = "/".join(filter(None, [loc.key, path.relative_to(src).as_posix()]))
        try:
            s3.upload_file(str(path), loc.bucket, key)
        except Exception as exc:
            raise explain(exc, f"s3://{loc.bucket}/{key}") from None
        count += 1
    return count


def cache_dir(url: str) -> Path:
    """Where downloads of `url` are kept (OMNIR1_CACHE, default ~/.cache/omnir1)."""
    root = Path(os.environ.get("OMNIR1_CACHE", Path.home() / ".cache" / "omnir1"))
    return root / "s3" / hashlib.sha256(url.encode()).hexdigest()[:16]
