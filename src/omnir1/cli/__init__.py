"""The `omnir1` command line: one subcommand per library entry point, each a thin adapter.

The commands live by area (`data`, `models`, `training`, `evaluation`, `release`); each area's
module registers its commands with `add_commands` and calls one library function per command.
Nothing in the package imports the CLI: it is the top of the dependency graph.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from omnir1.errors import OmniR1Error


def build_parser() -> argparse.ArgumentParser:
    from omnir1.cli import data, evaluation, models, release, training

    parser = argparse.ArgumentParser(
        prog="omnir1", description="Omni-R1 Ops: data, training, evaluation, pipelines."
    )
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")
    for area in (data, models, training, evaluation, release):
        area.add_commands(groups)
    return parser


def _record_time(argv: Sequence[str], seconds: float, code: int) -> None:
    """Append {command, seconds, exit} to $OMNIR1_TIMES_FILE when set: how `make demo` reports
    the wall time of each pipeline stage (every stage is one omnir1 call)."""
    import os

    path = os.environ.get("OMNIR1_TIMES_FILE")
    if path:
        line = {"command": " ".join(argv), "seconds": round(seconds, 2), "exit": code}
        with Path(path).open("a", encoding="utf-8") as fh:  # short lines: appends stay whole
            fh.write(json.dumps(line) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    import time

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.command_args = argv[1:]  # after the command name: `omnir1 train` relaunches itself
    func: Callable[[argparse.Namespace], int] = args.func
    start = time.perf_counter()
    code = 1
    try:
        code = func(args)
    except OmniR1Error as err:
        print(f"omnir1: error: {err}", file=sys.stderr)
        code = err.exit_code
    finally:
        _record_time(argv, time.perf_counter() - start, code)
    if getattr(args, "ends_rank", False):
        from omnir1.cli.training import _end_rank

        _end_rank(code)
    return code
