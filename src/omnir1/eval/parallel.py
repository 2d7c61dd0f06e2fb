"""Scoring spread over worker processes, one shard of videos each.

Workers are fresh interpreters (`python -m omnir1.eval.parallel`) that get their task as JSON
on stdin and stream one JSON line per scored expression on stdout: nothing is pickled between
processes. Each worker reloads the annotations itself and scores whole videos, so a video's
ground truth is decoded in one place only. The first worker error stops the others and is
raised here as the same kind of error, naming the same file.
"""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from omnir1.errors import InputError, OmniR1Error
from omnir1.eval.scoring import ExpressionScore

_DONE = object()


def score_in_workers(task: dict, shards: Sequence[Sequence[str]]) -> Iterator[ExpressionScore]:
    """Scores from one worker process per shard of video ids, as they arrive."""
    lines: queue.Queue = queue.Queue()
    with contextlib.ExitStack() as stack:
        procs = []
        for videos in shards:
            # stderr goes to a file, not a pipe, so a chatty worker can never block on it
            log = stack.enter_context(tempfile.TemporaryFile(mode="w+"))
            proc = subprocess.Popen(
                [sys.executable, "-m", "omnir1.eval.parallel"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
            stack.callback(_stop, proc)
            procs.append((proc, log))
            proc.stdin.write(json.dumps({**task, "videos": list(videos)}))
            proc.stdin.close()
            threading.Thread(target=_pump, args=(proc, lines), daemon=True).start()
        running = len(procs)
        while running:
            item = lines.get()
            if item is _DONE:
                running -= 1
                continue
            message = json.loads(item)
            if "score" in message:
                yield ExpressionScore.from_dict(message["score"])
            elif "error" in message:
                err = message["error"]
                raise InputError(err.get("path"), err["message"], err.get("field"))
        for proc, log in procs:
            if proc.wait() != 0:
                log.seek(0)
                tail = log.read()[-2000:]
                raise RuntimeError(f"evaluation worker failed (exit {proc.returncode}):\n{tail}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _pump(proc: subprocess.Popen, lines: queue.Queue) -> None:
    for line in proc.stdout:
        lines.put(line)
    lines.put(_DONE)


def _worker() -> int:
    from omnir1.eval.protocols import load_samples, score_samples, select_samples

    task = json.load(sys.stdin)
    data, pred = Path(task["data"]), Path(task["pred"])
    try:
        all_samples = load_samples(task["benchmark"], data)
        samples, _ = select_samples(
            task["benchmark"], all_samples, data, task["splits"], task.get("videos_per_split")
        )
        videos = set(task["videos"])
        mine = [(i, s) for i, s in enumerate(samples) if s.video_id in videos]
        for score in score_samples([s for _, s in mine], data, pred, indices=[i for i, _ in mine]):
            sys.stdout.write(json.dumps({"score": score.to_dict()}) + "\n")
            sys.stdout.flush()
    except OmniR1Error as err:
        error = {"message": str(err)}
        if isinstance(err, InputError):
            error = {"path": err.path, "field": err.field, "message": err.message}
        sys.stdout.write(json.dumps({"error": error}) + "\n")
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(_worker())
