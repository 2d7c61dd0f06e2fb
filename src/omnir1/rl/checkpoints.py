"""GRPO checkpoints: when one is complete, which is the newest, and which run wrote them.

A checkpoint-N folder counts once CHECKPOINT_DONE is written into it (after every process wrote
and fsynced its files: omnir1.rl.trainer.VideoGRPOTrainer). `--resume auto` continues only
checkpoints whose folder carries the fingerprint of the same inputs (`run_fingerprint`: the
training params, the data, the model files).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from omnir1.fsutil import read_json, write_json

log = logging.getLogger(__name__)

# written into checkpoint-N after every other file of it is on disk (VideoGRPOTrainer)
CHECKPOINT_DONE = "omnir1_checkpoint.json"


# the params that decide what training does: the DVC train stage's, and how the shards that
# System 1's frames come from were decoded
TRAINING_PARAMS = {
    "system1": True,
    "grounder": True,
    "rewards": True,
    "train": True,
    "preprocess": {"prefer"},
}
FINGERPRINT_FILE = "run_fingerprint.json"  # in the checkpoints folder
ANNOTATION_SUFFIXES = {".json", ".csv", ".yaml", ".yml", ".txt"}


def _tree_digest(root: Path, read: Callable[[Path], bool]) -> str:
    """sha256 over every file's relative path and either its bytes (`read`) or its size."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        if read(path):
            with path.open("rb") as fh:
                for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    digest.update(chunk)
        else:
            digest.update(str(path.stat().st_size).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def data_digest(data: str | Path) -> str:
    """A data set's digest: annotations read in full, media files by path and size."""
    return _tree_digest(Path(data), lambda p: p.suffix.lower() in ANNOTATION_SUFFIXES)


def run_fingerprint(params, *, data: Path, fmt: str, models_dir: Path) -> dict[str, str]:
    """What a run's checkpoints depend on. The model files and the annotations are read in
    full; media files count by path and size (reading every video would cost more than it
    protects against). Shards are not read: they are decoded from the data as the params say
    (and their indexes hold file times)."""
    sections = params.model_dump(mode="json", include=TRAINING_PARAMS)
    return {
        "params": hashlib.sha256(json.dumps(sections, sort_keys=True).encode()).hexdigest(),
        "format": fmt,
        "data": data_digest(data),
        "models": _tree_digest(Path(models_dir), lambda p: True),
    }


def fingerprint_key(fingerprint: dict) -> str:
    """A short folder name for a fingerprint."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]


def claim_checkpoints(checkpoints: Path, fingerprint: dict) -> Path | None:
    """`--resume auto`: the newest complete checkpoint when `checkpoints` was written by a run
    with this fingerprint; otherwise clear the checkpoints there (with a note of what differs)
    and mark the folder as this run's."""
    marker = checkpoints / FINGERPRINT_FILE
    previous = read_json(marker) if marker.is_file() else None
    if previous == fingerprint:
        return latest_checkpoint(checkpoints)
    stale = sorted(checkpoints.glob("checkpoint-*")) if checkpoints.is_dir() else []
    if stale:
        changed = sorted(k for k in fingerprint if (previous or {}).get(k) != fingerprint[k])
        log.warning(
            f"{checkpoints}: {len(stale)} checkpoint(s) of another run ({', '.join(changed)} "
            "differ); starting afresh"
        )
        for folder in stale:
            shutil.rmtree(folder)
    write_json(marker, fingerprint)
    return None


def checkpoint_step(folder: Path) -> int:
    """The global step a checkpoint-N folder was saved at."""
    return int(folder.name.split("-")[-1])


def latest_checkpoint(folder: Path) -> Path | None:
    """Newest checkpoint-N folder written to the end: TRL writes into checkpoint-N directly, so a
    process killed while saving leaves a partial one, without CHECKPOINT_DONE."""
    done = [
        p
        for p in folder.glob("checkpoint-*")
        if p.name.split("-")[-1].isdigit() and (p / CHECKPOINT_DONE).is_file()
    ]
    return max(done, key=checkpoint_step, default=None)
