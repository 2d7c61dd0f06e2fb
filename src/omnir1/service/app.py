"""The System-2 service: `omnir1 serve-system2 --models DIR --host 127.0.0.1 --port P`.

    GET  /health        liveness (no token needed, says nothing about the models)
    GET  /metrics       Prometheus metrics (queue depth, latencies, masks, refusals)
    POST /v1/segment    one video, many requests (a GRPO group); masks as COCO RLE per frame
    POST /v1/batch      several videos, each as /v1/segment, run concurrently

Every call but /health needs `Authorization: Bearer <token>`, the token coming from the
environment (`OMNIR1_SYSTEM2_TOKEN`) or a Kubernetes Secret mounted as that variable; the
service refuses to start without one. Under load (omnir1.service.scheduler): a set number of
jobs run at once, calls are admitted before their body is read or refused with 429 and
Retry-After, queueing and work have their own timeouts (503 / 504). Limits: request body size,
requests and keyframes per call (schema), frame count of a video (of an upload, counted from its
packets: a header may understate it). A named video must stay inside the data root, symlinks
resolved; error answers name videos as the client did, never by the server's paths. JSON only:
nothing is pickled. docs/security.md lists what was reviewed.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

# FastAPI reads the endpoint annotations at run time: these names must be module globals
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from omnir1.service import TOKEN_ENV
from omnir1.service.scheduler import Busy, Cancelled, Scheduler, WorkTimeout
from omnir1.service.schema import BatchIn, SegmentIn


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 64 * 1024 * 1024
    max_frames: int = 3000  # frames of one video
    workers: int = 1  # jobs run at once (one per device unless told otherwise)
    queue_size: int = 8  # calls admitted beyond `workers`; more get 429
    queue_timeout_s: float = 120.0  # longest wait of a job for a worker (then 503)
    work_timeout_s: float = 600.0  # longest processing of one job (then 504)
    max_connections: int = 64  # open connections and calls (uvicorn answers 503 beyond)


class Gate:
    """ASGI middleware in front of the app, deciding before a body is read (FastAPI reads and
    parses a JSON body before it runs an endpoint's dependencies, the token check among them):
    any call but /health without the bearer token gets 401, a body over `limit` bytes 413, and a
    POST the scheduler has no room for 429 with Retry-After. Admitted POSTs are timed."""

    def __init__(self, app, limit: int, token: str, scheduler: Scheduler):
        self.app, self.limit, self.token, self.scheduler = app, limit, token, scheduler

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if scope["path"] != "/health" and not bearer_ok(headers.get(b"authorization"), self.token):
            return await _answer(send, 401, "missing or wrong bearer token")
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _answer(send, 413, f"request body over {self.limit} bytes")
        if scope["method"] != "POST":
            return await self._limited(scope, receive, send)
        try:
            self.scheduler.admit()
        except Busy as busy:
            return await _answer(send, busy.status, busy.detail, busy.retry_after_s)
        start, status = time.monotonic(), [500]

        async def noted(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self._limited(scope, receive, noted)
        finally:
            self.scheduler.release()
            self.scheduler.metrics.call_s.labels(scope["path"], str(status[0])).observe(
                time.monotonic() - start
            )

    async def _limited(self, scope, receive, send):
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
            await _answer(send, 413, f"request body over {self.limit} bytes")


def bearer_ok(header: bytes | str | None, token: str) -> bool:
    """Whether an Authorization header carries `token` as a bearer token (constant time)."""
    if isinstance(header, str):
        header = header.encode("latin-1", "replace")
    scheme, _, given = (header or b"").partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(given, token.encode())


class _BodyTooLargeError(Exception):
    pass


def _packet_count(video: Path, limit: int) -> int:
    """Frames of a video file counted from its packets, without decoding, stopping past
    `limit`: an upload's header may claim fewer frames than its stream holds (an AVI's frame
    count is a field its writer sets), and the frame limit must hold for what is decoded."""
    import av

    from omnir1.errors import MediaError

    count = 0
    try:
        with av.open(str(video)) as container:
            for packet in container.demux(container.streams.video[0]):
                count += bool(packet.size)
                if count > limit:
                    break
    except (av.error.FFmpegError, IndexError) as exc:
        raise MediaError(video, f"corrupt stream while counting frames ({exc})") from None
    return count


def _scrub(text: str, private: dict[str, str]) -> str:
    """`text` with each of the server's own paths replaced by a neutral name."""
    for name, public in private.items():
        text = text.replace(name, public)
    return text


async def _answer(send, status: int, detail: str, retry_after_s: int | None = None) -> None:
    import json

    body = json.dumps({"detail": detail}).encode()
    # answered without reading the body: the connection cannot carry another request (the
    # unread body would be taken for one), so tell the client not to reuse it
    headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
    if retry_after_s is not None:
        headers.append((b"retry-after", str(retry_after_s).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(
    models,
    *,
    data_root: str | Path,
    token: str,
    limits: Limits | None = None,
    grounder_cfg=None,
):
    """The FastAPI app around loaded `models` (omnir1.models.loading.Models), or a sequence of
    them (one per device): `limits.workers` jobs run at once, worker i on `models[i % n]`.
    `grounder_cfg` (params.yaml `grounder`: how keyframes are shown to the grounder) defaults to
    the release's."""
    from omnir1.errors import OmniR1Error
    from omnir1.fsutil import inside
    from omnir1.media import inspect
    from omnir1.systems.system2 import collect_rle, run_system2

    if not token:
        raise ValueError(f"a token is required (set {TOKEN_ENV})")
    limits = limits or Limits()
    data_root = Path(data_root)
    real_root = data_root.resolve()
    # the server's own paths, as they may appear in an error's text (longest first)
    root_names = {
        name: "<data root>"
        for name in sorted({str(real_root), str(data_root.absolute())}, key=len, reverse=True)
        if len(name) > 1
    }
    per_device = list(models) if isinstance(models, Sequence) else [models]
    app = FastAPI(title="omnir1 System 2", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes every offending value back: NaN and Infinity, which
        # Python's JSON reader accepts, cannot be written as JSON, so a non-finite box or fps
        # became a 500; an echoed upload would also send megabytes back. Where and why only.
        fields = ("type", "loc", "msg")
        errors = [{k: e[k] for k in fields if k in e} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(Busy)
    async def busy(request: Request, exc: Busy) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after_s)}
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=headers)

    @app.exception_handler(WorkTimeout)
    async def overran(request: Request, exc: WorkTimeout) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=504)

    def authorised(request: Request) -> None:  # the Gate checked already: defence in depth
        if not bearer_ok(request.headers.get("authorization"), token):
            raise HTTPException(401, "missing or wrong bearer token")

    def named_video(name: str) -> Path:
        """`name` under the data root; refused when it leads outside, by `..` or absolute
        components or by a symlink (of the video, or of any entry of a frame folder)."""
        refused = HTTPException(422, "video must be a path inside the data root")
        try:
            video = inside(data_root, *name.split("/"), field="video")
        except OmniR1Error:  # say why without naming the server's folders
            raise refused from None
        real = video.resolve()
        if not real.is_relative_to(real_root):
            raise refused
        if not real.exists():
            raise HTTPException(404, f"video {name!r} not found under the data root")
        if real.is_dir() and not all(p.resolve().is_relative_to(real_root) for p in real.iterdir()):
            raise refused
        return video

    def run_one(models, item: SegmentIn, cancelled: threading.Event) -> dict:
        """One job, in a worker thread."""
        with tempfile.TemporaryDirectory(prefix="omnir1-system2-") as tmp:
            try:
                return segment(models, item, Path(tmp), cancelled)
            except (OmniR1Error, ValueError) as err:  # av's InvalidDataError is a ValueError
                private = {tmp: "<upload>", **root_names}
                raise HTTPException(422, _scrub(str(err), private)) from None

    def segment(models, item: SegmentIn, tmp: Path, cancelled: threading.Event) -> dict:
        if item.video_b64 is not None:
            try:
                data = base64.b64decode(item.video_b64, validate=True)
            except (binascii.Error, ValueError):
                raise HTTPException(422, "video_b64 is not base64") from None
            video = tmp / f"upload{item.video_suffix}"
            video.write_bytes(data)
        elif item.video is not None:
            video = named_video(item.video)
        else:
            raise HTTPException(422, "give video (a path under the data root) or video_b64")
        info = inspect(video, folder_fps=item.fps)
        if info.num_frames > limits.max_frames:
            raise HTTPException(
                413, f"video has {info.num_frames} frames; the limit is {limits.max_frames}"
            )
        # an upload's header is the client's word: count what will be decoded
        if (
            item.video_b64 is not None
            and _packet_count(video, limits.max_frames) > limits.max_frames
        ):
            raise HTTPException(
                413, f"video has more than {limits.max_frames} frames (counted from its packets)"
            )
        keep, masks = collect_rle()

        def sink(frame, frame_masks):  # a job whose caller has gone stops at its next frame
            if cancelled.is_set():
                raise Cancelled
            keep(frame, frame_masks)

        timings: dict[str, float] = {}
        results = run_system2(
            models,
            video,
            [r.to_request() for r in item.requests],
            sink,
            folder_fps=item.fps,
            timings=timings,
            grounder_cfg=grounder_cfg,
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

    worker_models = [per_device[i % len(per_device)] for i in range(limits.workers)]
    scheduler = Scheduler(
        run_one,
        worker_models,
        queue_size=limits.queue_size,
        queue_timeout_s=limits.queue_timeout_s,
        work_timeout_s=limits.work_timeout_s,
    )
    metrics = scheduler.metrics

    async def run_items(items: list[SegmentIn]) -> list[dict]:
        done = await scheduler.run_items(items)
        metrics.masks.inc(sum(len(r["results"]) * r["video"]["frames"] for r in done))
        return done

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/metrics", dependencies=[Depends(authorised)])
    async def prometheus_metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/segment", dependencies=[Depends(authorised)])
    async def segment_one(body: SegmentIn) -> dict:
        return (await run_items([body]))[0]

    @app.post("/v1/batch", dependencies=[Depends(authorised)])
    async def segment_batch(body: BatchIn) -> dict:
        return {"items": await run_items(body.items)}

    gate = Gate(app, limits.max_body_bytes, token, scheduler)
    app.state.scheduler = scheduler
    return gate


def serve(
    models_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    data_root: str | Path = ".",
    device: str = "cpu",
    limits: Limits | None = None,
    grounder_cfg=None,
) -> None:
    """Serve on `host:port`; `device` may list several (`cuda:0,cuda:1`): the models are loaded
    once per device and the workers spread over them."""
    import uvicorn

    from omnir1.errors import ConfigError
    from omnir1.models.loading import load_models

    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        raise ConfigError(None, f"set {TOKEN_ENV} to the bearer token clients must send", TOKEN_ENV)
    limits = limits or Limits()
    devices = [d.strip() for d in device.split(",") if d.strip()]
    app = create_app(
        [load_models(models_dir, device=d, system1=False) for d in devices],  # System 2 only
        data_root=data_root,
        token=token,
        limits=limits,
        grounder_cfg=grounder_cfg,
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="info",
        access_log=False,
        limit_concurrency=limits.max_connections,
    )
