"""Parts of a data set for fan-out: `--part I/N` keeps every N-th video starting at the I-th
(0-based), so N workers together cover every video exactly once and each gets a similar mix.
Preprocessing and prediction take a part; their merge steps put the parts back together."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from omnir1.errors import ConfigError

T = TypeVar("T")


def parse_part(text: str | None, option: str = "--part") -> tuple[int, int] | None:
    """ "I/N" -> (I, N) with 0 <= I < N; None stays None (the whole data set)."""
    if text is None:
        return None
    index, sep, count = str(text).partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i = n = -1
    if not sep or n < 1 or not 0 <= i < n:
        raise ConfigError(None, f"expected I/N with 0 <= I < N, got {text!r}", option)
    return i, n


def take_part(items: Sequence[T], part: tuple[int, int] | None) -> list[T]:
    """The items of `part` (all of them when None), in their order."""
    if part is None:
        return list(items)
    index, count = part
    return list(items[index::count])
