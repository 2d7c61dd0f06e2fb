"""The System-2 service: `omnir1 serve-system2 --models DIR --host 127.0.0.1 --port P`.

    GET  /health        liveness (no token needed, says nothing about the models)
    POST /v1/segment    one video, many requests (a GRPO group); masks as COCO RLE per frame
    POST /v1/batch      several videos, each as /v1/segment

Every POST needs `Authorization: Bearer <token>`, the token coming from the environment
(`OMNIR1_SYSTEM2_TOKEN`) or a Kubernetes Secret mounted as that variable; the service refuses
to start without one. Limits: request body size, requests and keyframes per call (schema), frame
count of a video, and a processing timeout. One System-2 job runs at a time (the models hold
the accelerator); others wait their turn within the timeout. JSON only: nothing is pickled.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# FastAPI reads the endpoint annotations at run time: these names must be module globals
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from omnir1.service import TOKEN_ENV
from omnir1.service.schema import BatchIn, SegmentIn


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 64 * 1024 * 1024
    max_frames: int = 3000  # frames of one video
    timeout_s: float = 600.0  # processing time of one call, waiting included


class BodyLimit:
    """ASGI middleware: refuse bodies over `limit` bytes (413) before they are buffered."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _too_large(send, self.limit)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLargeError
            return message

        try:
            await self.app(scope, limited, send)
        except _BodyTooLargeError:
            await _too_large(send, self.limit)


class _BodyTooLargeError(Exception):
    pass


async def _too_large(send, limit: int) -> None:
    import json

    body = json.dumps({"detail": f"request body over {limit} bytes"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(models, *, data_root: str | Path, token: str, limits: Limits | None = None):
    """The FastAPI app around loaded `models` (omnir1.models.loading.Models)."""
    from omnir1.errors import OmniR1Error
    from omnir1.fsutil import inside
    from omnir1.media import inspect
    from omnir1.systems.system2 import collect_rle, run_system2

    if not token:
        raise ValueError(f"a token is required (set {TOKEN_ENV})")
    limits = limits or Limits()
    data_root = Path(data_root)
    job_lock = threading.Lock()
    app = FastAPI(title="omnir1 System 2", docs_url=None, redoc_url=None, openapi_url=None)

    def authorised(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong bearer token")

    def run_one(item: SegmentIn) -> dict:
        with tempfile.TemporaryDirectory(prefix="omnir1-system2-") as tmp:
            if item.video_b64 is not None:
                try:
                    data = base64.b64decode(item.video_b64, validate=True)
                except (binascii.Error, ValueError):
                    raise HTTPException(422, "video_b64 is not base64") from None
                video = Path(tmp) / f"upload{item.video_suffix}"
                video.write_bytes(data)
            elif item.video is not None:
                try:
                    video = inside(data_root, *item.video.split("/"), field="video")
                except OmniR1Error:  # say why without naming the server's folders
                    raise HTTPException(422, "video must be a path inside the data root") from None
                if not video.exists():
                    raise HTTPException(404, f"video {item.video!r} not found under the data root")
            else:
                raise HTTPException(422, "give video (a path under the data root) or video_b64")
            info = inspect(video, folder_fps=item.fps)
            if info.num_frames > limits.max_frames:
                raise HTTPException(
                    413, f"video has {info.num_frames} frames; the limit is {limits.max_frames}"
                )
            sink, masks = collect_rle()
            timings: dict[str, float] = {}
            results = run_system2(
                models,
                video,
                [r.to_request() for r in item.requests],
                sink,
                folder_fps=item.fps,
                timings=timings,
            )
        return {
            "results": [
                {
                    "id": r.id,
                    "keyframes": [asdict(k) for k in r.keyframes],
                    "masks": [masks[r.id][t] for t in range(len(masks[r.id]))],
                }
                for r in results
            ],
            "video": {"height": info.height, "width": info.width, "frames": info.num_frames},
            "timings_s": timings,
        }

    def run_locked(items: list[SegmentIn], deadline: float) -> list[dict]:
        if not job_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise HTTPException(503, "System 2 is busy; retry later")
        try:
            return [run_one(item) for item in items]
        except OmniR1Error as err:
            raise HTTPException(422, str(err)) from None
        except ValueError as err:
            raise HTTPException(422, str(err)) from None
        finally:
            job_lock.release()

    async def run_items(items: list[SegmentIn]) -> list[dict]:
        deadline = time.monotonic() + limits.timeout_s
        try:
            return await asyncio.wait_for(
                run_in_threadpool(run_locked, items, deadline), timeout=limits.timeout_s
            )
        except TimeoutError:
            raise HTTPException(504, f"System 2 took longer than {limits.timeout_s} s") from None

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.post("/v1/segment", dependencies=[Depends(authorised)])
    async def segment_one(body: SegmentIn) -> dict:
        return (await run_items([body]))[0]

    @app.post("/v1/batch", dependencies=[Depends(authorised)])
    async def segment_batch(body: BatchIn) -> dict:
        return {"items": await run_items(body.items)}

    return BodyLimit(app, limits.max_body_bytes)


def serve(
    models_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    data_root: str | Path = ".",
    device: str = "cpu",
    limits: Limits | None = None,
) -> None:
    import uvicorn

    from omnir1.errors import ConfigError
    from omnir1.models.loading import load_models

    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        raise ConfigError(None, f"set {TOKEN_ENV} to the bearer token clients must send", TOKEN_ENV)
    app = create_app(
        load_models(models_dir, device=device), data_root=data_root, token=token, limits=limits
    )
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
