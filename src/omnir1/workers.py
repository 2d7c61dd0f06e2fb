"""One pool of worker processes for every parallel stage: preprocessing, scoring, the study.

Workers are fresh interpreters (`python -m MODULE`) that talk JSON lines: the first line on
stdin is the pool's setup, each next line one job; for a job the worker writes zero or more
`{"result": ...}` lines, then `{"done": true}`, or one `{"error": ...}` line. Nothing is
pickled between processes, and a worker's stderr goes to a file, never a pipe, so a chatty one
can never block. Each worker is fed its next job when it finishes one; the first error stops
the hand-out, jobs in flight finish (their outputs stay valid), then the error is raised here as
the kind the worker met, naming the same file and field. A worker that dies is reported with
the tail of its stderr and the job it was running.

    results = run_pool("omnir1.data.preprocess", jobs, workers=2, setup={...})  # parent
    if __name__ == "__main__": sys.exit(serve(handle))                          # worker module
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from omnir1.errors import ConfigError, DataError, InputError, MediaError, OmniR1Error

# the error kinds a worker reports by name and the parent raises again
ERRORS: dict[str, type[InputError]] = {
    "DataError": DataError,
    "MediaError": MediaError,
    "ConfigError": ConfigError,
    "InputError": InputError,
}


def run_pool(
    module: str,
    jobs: Sequence[Mapping],
    *,
    workers: int,
    setup: Mapping | None = None,
    env: Mapping[str, str] | None = None,
    describe: Callable[[Mapping], str] = lambda job: json.dumps(job)[:200],
) -> Iterator:
    """The results of `jobs`, as they arrive, from up to `workers` processes of
    `python -m module` (see the module docstring). `env`: the workers' environment (default:
    this process's); `describe(job)` names a job in the message of a crashed worker."""
    pending = deque(jobs)
    events: queue.Queue = queue.Queue()
    with contextlib.ExitStack() as stack:
        procs: list[tuple[subprocess.Popen, object]] = []
        current: list[Mapping | None] = []
        for w in range(min(workers, len(pending))):
            log = stack.enter_context(tempfile.TemporaryFile(mode="w+"))
            proc = subprocess.Popen(
                [sys.executable, "-m", module],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=None if env is None else dict(env),
            )
            stack.callback(_stop, proc)
            procs.append((proc, log))
            current.append(None)
            _send(proc, dict(setup or {}))
            threading.Thread(target=_pump, args=(w, proc, events), daemon=True).start()

        error: dict | None = None
        error_log = None
        error_job: Mapping | None = None

        def feed(w: int) -> None:
            proc = procs[w][0]
            current[w] = pending.popleft() if pending and error is None else None
            if current[w] is None:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()
            else:
                _send(proc, dict(current[w]))

        for w in range(len(procs)):
            feed(w)
        running = len(procs)
        while running:
            w, line = events.get()
            if line is None:  # the worker's stdout closed
                running -= 1
                proc, log = procs[w]
                if proc.wait() != 0 and error is None:
                    log.seek(0)
                    job = current[w]
                    what = describe(job) if job is not None else "no job"
                    raise RuntimeError(
                        f"{module} worker failed (exit {proc.returncode}) on {what}:\n"
                        + log.read()[-2000:]
                    )
                continue
            message = json.loads(line)
            if "result" in message:
                yield message["result"]
                continue
            if "error" in message and error is None:
                error, error_log, error_job = message["error"], procs[w][1], current[w]
                pending.clear()
            feed(w)  # "done", or an error: this worker's job is over
        if error is not None:
            kind = ERRORS.get(error["kind"])
            if kind is not None:
                raise kind(error.get("path"), error["message"], error.get("field"))
            if error["kind"] == "OmniR1Error":
                if error.get("path") is None:
                    raise OmniR1Error(error["message"])
                raise InputError(error["path"], error["message"], error.get("field"))
            error_log.seek(0)  # a bug, not bad input: name the job, show the worker's traceback
            raise RuntimeError(
                f"{describe(error_job)}: {error['message']}\n{error_log.read()[-2000:]}"
            )


def serve(handle: Callable[[Mapping, Mapping], Iterable | None]) -> int:
    """The worker side: `handle(setup, job)` for every job line on stdin; each item it yields
    (or returns, when not iterable) is sent as a result. What a library prints goes to stderr:
    stdout carries the protocol only."""
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    setup = json.loads(sys.stdin.readline() or "{}")
    for line in sys.stdin:
        job = json.loads(line)
        try:
            produced = handle(setup, job)
            items = produced if isinstance(produced, Iterator | list | tuple) else [produced]
            for item in items:
                if item is not None:
                    out.write(json.dumps({"result": item}) + "\n")
                    out.flush()
            message: dict = {"done": True}
        except InputError as err:
            kind = type(err).__name__ if type(err).__name__ in ERRORS else "InputError"
            message = {
                "error": {
                    "kind": kind,
                    "path": err.path,
                    "field": err.field,
                    "message": err.message,
                }
            }
        except OmniR1Error as err:
            message = {"error": {"kind": "OmniR1Error", "path": None, "message": str(err)}}
        except Exception as exc:  # a bug, not bad input: keep the traceback in the log
            import traceback

            print(traceback.format_exc(), file=sys.stderr, flush=True)
            message = {"error": {"kind": "bug", "message": f"{type(exc).__name__}: {exc}"}}
        out.write(json.dumps(message) + "\n")
        out.flush()
    return 0


def _send(proc: subprocess.Popen, obj: dict) -> None:
    with contextlib.suppress(BrokenPipeError):  # a dead worker is reported by its exit status
        proc.stdin.write(json.dumps(obj) + "\n")
        proc.stdin.flush()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _pump(w: int, proc: subprocess.Popen, events: queue.Queue) -> None:
    for line in proc.stdout:
        events.put((w, line))
    events.put((w, None))
