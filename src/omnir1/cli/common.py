"""What the CLI's areas share: JSON output, the params options, NAME=PATH arguments."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from omnir1.data import FORMATS
from omnir1.errors import ConfigError


def number(kind: type = float, *, low: float = 0, high: float = 1e9, low_open: bool = True):
    """An argparse type: a finite `kind` in (low, high] (or [low, high] with low_open=False).
    Out-of-range, NaN and infinite values are refused while the arguments are parsed (exit
    code 2, the option named), before anything loads or any output folder is made."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not {'an integer' if kind is int else 'a number'}: {text!r}"
            ) from None
        if not math.isfinite(value) or value > high or value < low or (low_open and value == low):
            bound = f"{'>' if low_open else '>='} {low:g} and <= {high:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


POSITIVE = number(float)  # rates, durations, sizes
COUNT = number(int, low=1, high=10**6, low_open=False)  # things made or run: videos, workers
SEED = number(int, low=0, high=2**32 - 1, low_open=False)


def print_json(obj: object) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def add_params_args(p: argparse.ArgumentParser, what: str = "") -> None:
    p.add_argument("--params", default="params.yaml", help=what or None)
    p.add_argument("--recipe", action="append", default=[], help="params file merged over --params")


def add_data_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", action="append", default=[], metavar="FORMAT=DIR", help="repeatable")
    p.add_argument(
        "--data-root",
        metavar="DIR",
        help="instead of --data: DIR/FORMAT for every format of params.yaml data.formats",
    )
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME=DIR",
        help="model folder (repeatable; with two, the metrics hold the second minus the first)",
    )


def named_paths(values: Sequence[str], option: str) -> dict[str, str]:
    """NAME=PATH arguments as an ordered mapping; a malformed or repeated NAME is an error."""
    out: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ConfigError(None, f"expected NAME=PATH, got {value!r}", option)
        if name in out:
            raise ConfigError(None, f"{name!r} given twice", option)
        out[name] = path
    return out


def format_paths(args: argparse.Namespace, params) -> dict[str, str]:
    """FORMAT -> data set folder from --data, or from --data-root and data.formats."""
    if args.data and args.data_root:
        raise ConfigError(None, "give --data or --data-root, not both", "--data-root")
    if args.data_root:
        return {fmt: str(Path(args.data_root) / fmt) for fmt in params.data.formats}
    if not args.data:
        raise ConfigError(None, "needs --data FORMAT=DIR (repeatable) or --data-root", "--data")
    data = named_paths(args.data, "--data")
    for fmt in data:
        if fmt not in FORMATS:
            raise ConfigError(None, f"unknown format {fmt!r}; valid: {list(FORMATS)}", "--data")
    return data


def text_arg(value: str | None) -> str | None:
    """A literal text, or @FILE for the contents of FILE."""
    if value is None or not value.startswith("@"):
        return value
    from pathlib import Path

    from omnir1.errors import InputError

    try:
        return Path(value[1:]).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(value[1:], f"cannot read ({exc.strerror})") from None
