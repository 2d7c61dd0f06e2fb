"""The System-2 client against a service that is slow or answers garbage (a local HTTP server
standing in for a broken `omnir1 serve-system2`): timeouts and garbled answers are retried with
back-off, a service that recovers is used, one that does not ends in an error saying what was
wrong; no call ever turns into empty masks (rewards through it: test_reward_engine)."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from omnir1.data import rle
from omnir1.service.client import System2Client, System2Error
from omnir1.systems.system2 import KeyframeRequest, System2Request

REQUEST = System2Request("boxed", (KeyframeRequest(3, "the grey shape", ((4, 3, 20, 12),)),))
MASK = np.zeros((18, 32), bool)
MASK[3:12, 4:20] = True


def good(ids=("boxed",), frames: int = 2) -> dict:
    return {
        "results": [
            {
                "id": i,
                "keyframes": [
                    {
                        "frame": 3,
                        "description": "the grey shape",
                        "boxes": [[4, 3, 20, 12]],
                        "grounding": {},
                    }
                ],
                "masks": [rle.encode(MASK) for _ in range(frames)],
            }
            for i in ids
        ],
        "timings_s": {"total": 0.1},
    }


GARBAGE = {
    "not JSON": b"<html>502 Bad Gateway</html>",
    "no results": {"detail": "ok"},
    "other ids": good(ids=("someone-else",)),
    "extra keyframe field": {"results": [{**good()["results"][0], "keyframes": [{"frame": 3}]}]},
    "masks not RLE": {"results": [{**good()["results"][0], "masks": [[1, 2, 3]]}]},
    "frame not an int": {
        "results": [
            {
                **good()["results"][0],
                "keyframes": [{"frame": "3", "description": "x", "boxes": [], "grounding": {}}],
            }
        ]
    },
}


class Busy:
    """An answer of a busy service: HTTP `status`, with Retry-After when given."""

    def __init__(self, status: int = 429, retry_after: str | None = None):
        self.status, self.retry_after = status, retry_after


def service(answers: list, delay_s: float = 0.0):
    """Answers the n-th call with answers[n] (the last one repeating), after delay_s."""
    calls = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            calls.append(time.monotonic())
            answer = answers[min(len(calls), len(answers)) - 1]
            time.sleep(delay_s)
            code, retry_after = 200, None
            if isinstance(answer, Busy):
                code, retry_after = answer.status, answer.retry_after
                answer = {"detail": "System 2 is busy; retry later"}
            data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
            try:
                self.send_response(code)
                if retry_after is not None:
                    self.send_header("Retry-After", retry_after)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting
                pass

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, calls


def call(server, tmp_path, **kw):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"\x00" * 64)  # uploaded as bytes; the stand-in never decodes it
    client = System2Client(
        f"http://127.0.0.1:{server.server_address[1]}", token="t", backoff_s=0.01, **kw
    )
    frames = []
    results = client.run_system2(None, video, [REQUEST], lambda t, m: frames.append((t, m)))
    return results, frames


@pytest.mark.parametrize("kind", list(GARBAGE))
def test_garbage_is_retried_then_an_error_says_what_was_wrong(kind, tmp_path):
    server, calls = service([GARBAGE[kind]])
    try:
        with pytest.raises(System2Error, match=r"unavailable after 3 attempts \(garbled answer"):
            call(server, tmp_path, retries=2)
    finally:
        server.shutdown()
    assert len(calls) == 3


def test_a_service_that_recovers_is_used(tmp_path):
    server, calls = service([GARBAGE["not JSON"], GARBAGE["other ids"], good(frames=3)])
    try:
        results, frames = call(server, tmp_path, retries=3)
    finally:
        server.shutdown()
    assert len(calls) == 3 and calls[2] - calls[1] >= 0.02  # backed off 0.01, then 0.02 s
    assert results[0].keyframes[0].boxes == [[4, 3, 20, 12]]
    assert [t for t, _ in frames] == [0, 1, 2]
    assert np.array_equal(frames[0][1]["boxed"], MASK)


def test_a_slow_service_times_out_and_is_retried(tmp_path):
    server, calls = service([good()], delay_s=1.0)
    try:
        with pytest.raises(System2Error, match=r"unavailable after 2 attempts \(ReadTimeout"):
            call(server, tmp_path, retries=1, timeout_s=0.2)
    finally:
        server.shutdown()
    assert len(calls) == 2


def test_a_mask_that_does_not_decode_is_an_error_not_an_empty_mask(tmp_path):
    broken = good()
    broken["results"][0]["masks"][1] = {"size": [18, 32], "counts": "not-an-rle!"}
    server, _ = service([broken])
    try:
        with pytest.raises(System2Error, match="mask of frame 1 does not decode"):
            call(server, tmp_path, retries=0)
    finally:
        server.shutdown()


def test_a_busy_service_is_waited_for_as_its_retry_after_says(tmp_path):
    """429 and 503 are not failures: they spend no retry (retries=0 here) and the client waits
    as told (0.3 s, then exponential back-off from 0.01 s where no Retry-After is given)."""
    server, calls = service([Busy(429, "0.3"), Busy(503), Busy(429, "soon"), good()])
    try:
        results, frames = call(server, tmp_path, retries=0)
    finally:
        server.shutdown()
    assert len(calls) == 4 and results and len(frames) == 2
    assert calls[1] - calls[0] >= 0.3  # Retry-After: 0.3
    assert calls[3] - calls[1] < 0.3  # no usable Retry-After: 0.01 s, then 0.02 s, and jitter


def test_a_service_busy_for_too_long_ends_in_an_error_that_says_so(tmp_path):
    server, calls = service([Busy(429, "0.2")])
    try:
        with pytest.raises(System2Error, match=r"busy for 1 s \(\d+ answers HTTP 429: System 2"):
            call(server, tmp_path, retries=3, busy_wait_s=1.0)
    finally:
        server.shutdown()
    assert 3 <= len(calls) <= 5  # 0.2-0.25 s apart, until a pause would pass the 1 s


def test_a_long_retry_after_is_capped(tmp_path):
    server, calls = service([Busy(429, "3600"), good()])
    try:
        results, _ = call(server, tmp_path, max_pause_s=0.1)
    finally:
        server.shutdown()
    assert len(calls) == 2 and calls[1] - calls[0] < 1.0 and results
