"""The benchmarks by name: RefAVS, ReVOS and MeViS, one module each of omnir1.benchmarks
(layout, loader, splits, protocol, headline figures), registered here. Everything that depends
on a data set's format asks this registry (`get(name)`), and `load(name, root)` reads a data set
of any of them.

Adding a benchmark: a module of the package that builds a `Benchmark`, its entry in BENCHMARKS
(README "Extending" lists the rest).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from omnir1.benchmarks import mevis, refavs, revos
from omnir1.benchmarks.base import Benchmark
from omnir1.data.records import Sample

BENCHMARKS: dict[str, Benchmark] = {
    b.name: b for b in (refavs.BENCHMARK, revos.BENCHMARK, mevis.BENCHMARK)
}


def names() -> tuple[str, ...]:
    return tuple(BENCHMARKS)


def get(name: str) -> Benchmark:
    """The benchmark called `name`; a ValueError listing the valid ones otherwise."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown data set format {name!r}; valid formats: {', '.join(names())}")
    return BENCHMARKS[name]


def load(fmt: str, root: str | Path, **kwargs) -> Iterator[Sample]:
    """Samples of the data set at `root` in the layout of benchmark `fmt`."""
    return get(fmt).load(root, **kwargs)
