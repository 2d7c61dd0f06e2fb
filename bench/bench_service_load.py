"""A bounded load test of the System-2 service: `clients` threads call /v1/segment back to back
for `seconds`, each a well-behaved trainer (on 429 or 503 it sleeps the Retry-After, capped by
the time left). Every 200 is checked against the masks the in-process System 2 gives for the same
request. Run from `bench/run_all.py --only service_load` (`make bench`), which starts the service.

What it reports: correct answers per second, p50 / p95 latency of the answers, refusals (429) and
how long a refused caller waited for its answer, and calls that ended in 503 (no worker in time)
or 504 (work timeout) or a client-side timeout: a service that holds load refuses early and
never lets a call wait out a timeout to be told it is busy.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class LoadResult:
    seconds: float
    correct: int = 0
    wrong: int = 0
    latencies_s: list[float] = field(default_factory=list)  # of the 200s
    refused_after_s: list[float] = field(default_factory=list)  # of the 429s
    timed_out: int = 0  # 503, 504, or no answer within the client's timeout
    other: dict[int | str, int] = field(default_factory=dict)  # other statuses, errors

    def summary(self) -> dict:
        lat = np.array(self.latencies_s or [np.nan])
        refused = np.array(self.refused_after_s or [np.nan])
        return {
            "correct_per_s": self.correct / self.seconds,
            "correct": self.correct,
            "wrong": self.wrong,
            "p50_s": float(np.percentile(lat, 50)),
            "p95_s": float(np.percentile(lat, 95)),
            "refused": len(self.refused_after_s),
            "refused_p95_s": float(np.percentile(refused, 95)),
            "refused_max_s": float(np.max(refused)),
            "timed_out": self.timed_out,
            "other": dict(self.other),
        }


def run_load(
    url: str,
    token: str,
    body: dict,
    check,
    *,
    clients: int = 16,
    seconds: float = 60.0,
    timeout_s: float = 600.0,
) -> LoadResult:
    """`clients` threads POST `body` to `url`/v1/segment until `seconds` have passed (a call in
    flight then is waited for); `check(answer_json) -> bool` says whether an answer is right."""
    import requests

    result = LoadResult(seconds=seconds)
    lock = threading.Lock()
    end = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {token}"}

    def client() -> None:
        session = requests.Session()
        while time.monotonic() < end:
            start = time.monotonic()
            try:
                answer = session.post(
                    url + "/v1/segment", json=body, headers=headers, timeout=timeout_s
                )
            except requests.Timeout:
                with lock:
                    result.timed_out += 1
                continue
            except requests.ConnectionError:
                with lock:
                    result.other["connection error"] = result.other.get("connection error", 0) + 1
                continue
            took = time.monotonic() - start
            status = answer.status_code
            if status == 200:
                ok = check(answer.json())
                with lock:
                    result.correct += ok
                    result.wrong += not ok
                    result.latencies_s.append(took)
            elif status == 429:
                with lock:
                    result.refused_after_s.append(took)
            elif status in (503, 504):
                with lock:
                    result.timed_out += 1
            else:
                with lock:
                    result.other[status] = result.other.get(status, 0) + 1
            if status in (429, 503):
                pause = float(answer.headers.get("Retry-After", "1"))
                time.sleep(max(0.0, min(pause, end - time.monotonic())))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return result
