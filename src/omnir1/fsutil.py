"""File-system helpers: atomic writes and paths that must stay inside a data root."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from omnir1.errors import DataError


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once, before any worker thread exists
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `target`; rename it onto `target` only on success.

    Readers never see a half-written file, and a failure leaves any previous `target` intact.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file private (0600); give it the mode a plain open() would
        tmp_path.chmod(0o666 & ~_UMASK)
        tmp_path.replace(target)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temporary folder next to `target`; it replaces `target` only on success.

    For outputs that are folders (saved models): readers see the old folder or the complete
    new one, never a half-written one.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        tmp.chmod(0o777 & ~_UMASK)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.replace(old)
            tmp.replace(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.replace(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_open(target: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing that replaces `target` when the block succeeds."""
    with atomic_path(target) as tmp, tmp.open(mode, **kwargs) as fh:
        yield fh


def write_json(target: str | Path, obj: Any, *, indent: int | None = 2) -> None:
    """Write `obj` as JSON to `target` atomically."""
    with atomic_open(target, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=indent)
        fh.write("\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file, turning a missing or malformed file into a DataError naming it."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except json.JSONDecodeError as exc:
        raise DataError(
            path, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None


def inside(
    root: Path, *parts: str, source: str | Path | None = None, field: str | None = None
) -> Path:
    """Join `parts` under `root`, each a single plain path component, so the result cannot
    escape `root`.

    Ids read from annotation files become path components; an id such as `../../etc` or
    `/etc/passwd` must not make a loader read outside the data set. The check is lexical (no
    file-system calls: loaders join one path per frame), so symlinks the data set's owner put
    inside the root are followed as they are. `source`/`field` name where the id came from.
    """
    for part in parts:
        if not isinstance(part, str) or part in ("", ".", "..") or "\x00" in part:
            raise DataError(source or root, f"invalid path component {part!r}", field)
        if "/" in part or "\\" in part:
            raise DataError(
                source or root, f"path {'/'.join(parts)!r} escapes the data root {root}", field
            )
    return root.joinpath(*parts)
