"""Client of the System-2 service, with retries and back-off.

`System2Client.run_system2` has the signature of `omnir1.systems.system2.run_system2`, so the
trainer and `omnir1 infer --system2-url` swap it in for the in-process System 2. A busy service
(429, or 503: no worker free in time, too many connections, no ready replica) is waited for, as
its Retry-After says (or with exponential back-off, capped), up to `busy_wait_s` in all: a
training run pauses while the service is saturated instead of failing. Connection errors,
timeouts and 502/504 answers are failures, retried `retries` times with exponential back-off;
after the last attempt, or on any other error answer (bad token, invalid request), it raises
System2Error with the service's own message: a failed call never turns into empty masks. An
answer that is not what was asked for (not JSON, other request ids, malformed keyframes or masks,
masks that do not decode) counts as a failure too: retried, then an error saying what was wrong.
"""

from __future__ import annotations

import base64
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from omnir1.errors import OmniR1Error
from omnir1.service import TOKEN_ENV
from omnir1.systems.system2 import KeyframeResult, MaskSink, System2Request, System2Result

RETRYABLE_STATUS = {502, 504}
BUSY_STATUS = {429, 503}


class System2Error(OmniR1Error):
    """The System-2 service could not serve a call."""


class System2Client:
    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout_s: float = 600.0,
        retries: int = 3,
        backoff_s: float = 1.0,
        busy_wait_s: float = 3600.0,
        max_pause_s: float = 60.0,
        data_root: str | Path | None = None,
    ):
        """`data_root`: where the service's data root is mounted on this side; videos under it
        are sent by path, others are uploaded. `busy_wait_s`: how long a call waits for a busy
        service in all; `max_pause_s`: the longest single pause (Retry-After is capped to it)."""
        self.url = url.rstrip("/")
        self.token = token if token is not None else os.environ.get(TOKEN_ENV, "")
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self.busy_wait_s, self.max_pause_s = busy_wait_s, max_pause_s
        self.data_root = None if data_root is None else Path(data_root).resolve()
        self.busy_answers = 0  # 429/503 answers seen (waited for), over this client's life

    def _post(self, path: str, body: dict, parse=lambda answer: answer):
        """POST with retries; `parse(json)` checks and converts the answer (ValueError, KeyError
        or TypeError: a garbled answer, retried like a dropped connection)."""
        import requests

        headers = {"Authorization": f"Bearer {self.token}"}
        last, failures, busy, busy_until = "", 0, 0, None
        while True:
            try:
                answer = requests.post(
                    self.url + path, json=body, headers=headers, timeout=self.timeout_s
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                answer, last = None, f"{type(exc).__name__}: {exc}"
            if answer is not None and answer.status_code in BUSY_STATUS:
                self.busy_answers += 1
                now = time.monotonic()
                busy_until = busy_until or now + self.busy_wait_s
                pause = _retry_after(answer)
                if pause is None:
                    pause = self.backoff_s * 2**busy
                # jitter: clients told the same Retry-After do not all come back at once
                pause = min(pause, self.max_pause_s) * random.uniform(1.0, 1.25)
                busy += 1
                if now + pause > busy_until:
                    raise System2Error(
                        None,
                        f"System-2 service {self.url}{path} busy for {self.busy_wait_s:g} s "
                        f"({busy} answers HTTP {answer.status_code}: {_detail(answer)})",
                    )
                time.sleep(pause)
                continue
            if answer is not None:
                if answer.status_code in RETRYABLE_STATUS:
                    last = f"HTTP {answer.status_code}: {_detail(answer)}"
                elif answer.status_code != 200:
                    raise System2Error(
                        None,
                        f"System-2 service {self.url}{path}: HTTP {answer.status_code}: "
                        f"{_detail(answer)}",
                    )
                else:
                    try:
                        return parse(answer.json())
                    except (ValueError, KeyError, TypeError, IndexError) as exc:
                        last = f"garbled answer: {type(exc).__name__}: {str(exc)[:200]}"
            failures += 1
            if failures > self.retries:
                raise System2Error(
                    None,
                    f"System-2 service {self.url}{path} unavailable after {failures} attempts "
                    f"({last})",
                )
            time.sleep(self.backoff_s * 2 ** (failures - 1))

    def health(self) -> bool:
        import requests

        try:
            return requests.get(self.url + "/health", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def segment_body(self, video: str | Path, requests: Sequence[System2Request], fps: float):
        video = Path(video)
        body: dict = {"fps": fps, "requests": [_request_json(r) for r in requests]}
        rel = None
        if self.data_root is not None:
            try:
                rel = video.resolve().relative_to(self.data_root)
            except ValueError:
                rel = None
        if rel is not None:
            body["video"] = rel.as_posix()
        else:
            if video.is_dir():
                raise System2Error(video, "frame folders must be under the shared data root")
            body["video_b64"] = base64.b64encode(video.read_bytes()).decode("ascii")
            body["video_suffix"] = video.suffix.lower() or ".mp4"
        return body

    def run_system2(
        self,
        models,
        video: str | Path,
        requests: Sequence[System2Request],
        on_frame: MaskSink,
        *,
        grounder_cfg=None,
        folder_fps: float = 1.0,
        grounder_answer: str | None = None,
        timings: dict[str, float] | None = None,
    ) -> list[System2Result]:
        """Drop-in for the in-process `run_system2` (models and grounder settings live in the
        service; replaying a grounder answer is in-process only)."""
        from omnir1.data import rle
        from omnir1.errors import DataError

        del models, grounder_cfg
        if grounder_answer is not None:
            raise System2Error(None, "replaying a grounder answer needs the in-process System 2")
        start = time.perf_counter()
        asked = [r.id for r in requests]
        answer, results, masks = self._post(
            "/v1/segment",
            self.segment_body(video, requests, folder_fps),
            lambda answer: _parse_segment(answer, asked),
        )
        for t in range(len(next(iter(masks.values()), []))):  # decoded a frame at a time
            try:
                frame = {rid: rle.decode(m[t]) for rid, m in masks.items()}
            except DataError as exc:
                raise System2Error(
                    None,
                    f"System-2 service {self.url}: mask of frame {t} does not decode "
                    f"({exc.message})",
                ) from None
            on_frame(t, frame)
        if timings is not None:
            timings["system2_service"] = time.perf_counter() - start
            for k, v in answer.get("timings_s", {}).items():
                timings[f"service_{k}"] = v
        return results


def _parse_segment(answer, asked: list[str]):
    """(answer, results, {id: RLE per frame}) of a /v1/segment answer, checked against the
    request ids and for well-formed RLE (decoded later, a frame at a time, to bound memory);
    anything else raises ValueError / KeyError / TypeError."""

    if not isinstance(answer, dict) or not isinstance(answer.get("results"), list):
        raise ValueError("expected an object with a 'results' list")
    got = [r["id"] for r in answer["results"]]
    if sorted(got) != sorted(asked):
        raise ValueError(f"results for ids {got[:5]}, asked for {asked[:5]}")
    results, masks = [], {}
    for r in answer["results"]:
        keyframes = [KeyframeResult(**k) for k in r["keyframes"]]  # TypeError on other fields
        for k in keyframes:
            if not isinstance(k.frame, int) or not isinstance(k.boxes, list):
                raise TypeError(f"keyframe {k.frame!r}: frame must be an int, boxes a list")
        results.append(System2Result(r["id"], keyframes))
        if not isinstance(r["masks"], list) or not all(map(_is_rle, r["masks"])):
            raise TypeError(f"masks of {r['id']!r} must be a list of COCO RLE objects")
        masks[r["id"]] = r["masks"]
    if len({len(m) for m in masks.values()}) > 1:
        raise ValueError("the requests' masks cover different numbers of frames")
    return answer, results, masks


def _is_rle(m) -> bool:
    size = m.get("size") if isinstance(m, dict) else None
    return (
        isinstance(size, list)
        and len(size) == 2
        and all(isinstance(v, int) for v in size)
        and isinstance(m.get("counts"), str | list)
    )


def _request_json(r: System2Request) -> dict:
    return {
        "id": r.id,
        "keyframes": [
            {k: v for k, v in asdict(kf).items() if not (k == "boxes" and v is None)}
            for kf in r.keyframes
        ],
    }


def _retry_after(answer) -> float | None:
    """Seconds of a Retry-After header given in seconds (an HTTP date is not used here)."""
    try:
        value = float(answer.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _detail(answer) -> str:
    try:
        return str(answer.json().get("detail", answer.text[:300]))
    except ValueError:
        return answer.text[:300]
