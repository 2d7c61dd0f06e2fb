"""Client of the System-2 service, with retries and back-off.

`System2Client.run_system2` has the signature of `omnir1.systems.system2.run_system2`, so the
trainer and `omnir1 infer --system2-url` swap it in for the in-process System 2. Connection
errors, timeouts and 502/503/504 answers are retried with exponential back-off; after the last
attempt, or on any other error answer (bad token, invalid request), it raises System2Error with
the service's own message: a failed call never turns into empty masks.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from omnir1.errors import OmniR1Error
from omnir1.service import TOKEN_ENV
from omnir1.systems.system2 import KeyframeResult, MaskSink, System2Request, System2Result

RETRYABLE_STATUS = {502, 503, 504}


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
        data_root: str | Path | None = None,
    ):
        """`data_root`: where the service's data root is mounted on this side; videos under it
        are sent by path, others are uploaded."""
        self.url = url.rstrip("/")
        self.token = token if token is not None else os.environ.get(TOKEN_ENV, "")
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self.data_root = None if data_root is None else Path(data_root).resolve()

    def _post(self, path: str, body: dict) -> dict:
        import requests

        headers = {"Authorization": f"Bearer {self.token}"}
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                answer = requests.post(
                    self.url + path, json=body, headers=headers, timeout=self.timeout_s
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if answer.status_code in RETRYABLE_STATUS:
                last = f"HTTP {answer.status_code}: {_detail(answer)}"
                continue
            if answer.status_code != 200:
                raise System2Error(
                    None,
                    f"System-2 service {self.url}{path}: HTTP {answer.status_code}: "
                    f"{_detail(answer)}",
                )
            try:
                return answer.json()
            except ValueError:
                raise System2Error(None, f"System-2 service {self.url}{path}: not JSON") from None
        raise System2Error(
            None,
            f"System-2 service {self.url}{path} unavailable after {self.retries + 1} attempts "
            f"({last})",
        )

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

        del models, grounder_cfg
        if grounder_answer is not None:
            raise System2Error(None, "replaying a grounder answer needs the in-process System 2")
        start = time.perf_counter()
        answer = self._post("/v1/segment", self.segment_body(video, requests, folder_fps))
        results = []
        masks_by_id = {}
        for r in answer["results"]:
            results.append(System2Result(r["id"], [KeyframeResult(**k) for k in r["keyframes"]]))
            masks_by_id[r["id"]] = r["masks"]
        frames = min((len(m) for m in masks_by_id.values()), default=0)
        for t in range(frames):
            on_frame(t, {rid: rle.decode(m[t]) for rid, m in masks_by_id.items()})
        if timings is not None:
            timings["system2_service"] = time.perf_counter() - start
            for k, v in answer.get("timings_s", {}).items():
                timings[f"service_{k}"] = v
        return results


def _request_json(r: System2Request) -> dict:
    return {
        "id": r.id,
        "keyframes": [
            {k: v for k, v in asdict(kf).items() if not (k == "boxes" and v is None)}
            for kf in r.keyframes
        ],
    }


def _detail(answer) -> str:
    try:
        return str(answer.json().get("detail", answer.text[:300]))
    except ValueError:
        return answer.text[:300]
