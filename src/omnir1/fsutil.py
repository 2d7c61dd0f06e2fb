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


def _host() -> str:
    import socket

    return "".join(c if c.isalnum() else "-" for c in socket.gethostname())[:40] or "host"


def _owner_tag() -> str:
    """Who made a staging path: host and process, so that a later run can tell a killed run's
    leftovers (this host, process gone) from another run's work in progress."""
    return f"{_host()}-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def clear_stale(target: Path) -> list[Path]:
    """Remove what killed runs left next to `target` (staging folders and temporary files of
    `atomic_dir` / `atomic_path` made on this host by processes that no longer exist), and put
    back `target` from its `.old` copy when a kill fell between the two renames of a swap.
    Returns what was removed."""
    host = _host()
    removed = []
    parent = target.parent
    if not parent.is_dir():
        return removed
    prefix = f".{target.name}.{host}-"
    for path in parent.iterdir():
        if not (path.name.startswith(prefix) and path.name.endswith(".tmp")):
            continue
        pid = path.name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    old = target.with_name(f".{target.name}.old")
    if old.is_dir() and not target.exists():
        old.replace(target)  # the previous complete version, never replaced
    return removed


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `target`; rename it onto `target` only on success.

    Readers never see a half-written file, and a failure leaves any previous `target` intact;
    what a killed run left next to `target` is removed first (`clear_stale`).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clear_stale(target)
    prefix = f".{target.name}.{_owner_tag()}."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=target.parent)
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
    new one, never a half-written one. What a killed run left is removed first (`clear_stale`).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clear_stale(target)
    prefix = f".{target.name}.{_owner_tag()}."
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=target.parent))
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


def _journal(first: Path) -> Path:
    return first.with_name(f".{first.name}.commit.json")


def finish_group(first: str | Path) -> bool:
    """Complete the renames of an `atomic_group` whose run was killed between them (its journal
    next to `first`, the group's first target); True when there was one."""
    journal = _journal(Path(first))
    if not journal.is_file():
        return False
    try:
        renames = json.loads(journal.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        renames = []
    for tmp, target in renames:
        if Path(tmp).exists():
            Path(tmp).replace(target)
    journal.unlink(missing_ok=True)
    return True


@contextlib.contextmanager
def atomic_group(*targets: str | Path) -> Iterator[list[Path]]:
    """Temporary paths for files that belong together (a summary and the files it names); they
    replace `targets` together when the block succeeds. Everything is written before any target
    changes; the renames are recorded in a journal first, so a kill between them (a few
    microseconds) is completed by the next `atomic_group` or `finish_group` on the same
    targets: readers find the previous files or the new ones, never a mix of finished work."""
    paths = [Path(t) for t in targets]
    finish_group(paths[0])
    tmps = []
    try:
        for target in paths:
            target.parent.mkdir(parents=True, exist_ok=True)
            clear_stale(target)
            prefix = f".{target.name}.{_owner_tag()}."
            fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=target.parent)
            os.close(fd)
            tmps.append(Path(tmp))
        yield tmps
        for tmp in tmps:
            tmp.chmod(0o666 & ~_UMASK)
        renames = [[str(t), str(p)] for t, p in zip(tmps, paths, strict=True)]
        with atomic_open(_journal(paths[0]), "w", encoding="utf-8") as fh:
            json.dump(renames, fh)
        finish_group(paths[0])
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)


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
    """Read a JSON file, turning a missing, unreadable or malformed file into a DataError naming
    it: not UTF-8, nested past Python's recursion limit, an integer of more digits than Python
    converts (4,300), a folder where the file should be."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except IsADirectoryError:
        raise DataError(path, "is a folder, not a JSON file") from None
    except json.JSONDecodeError as exc:
        raise DataError(
            path, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except RecursionError:
        raise DataError(path, "JSON nested too deeply to read") from None
    except ValueError as exc:  # int() of a number with too many digits
        raise DataError(path, f"invalid JSON value ({exc})") from None
    except OSError as exc:
        raise DataError(path, f"cannot read ({exc.strerror or exc})") from None


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
