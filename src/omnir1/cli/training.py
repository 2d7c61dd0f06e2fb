"""`omnir1 warm-start`, `omnir1 train` and the experimental `omnir1 study`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from omnir1.cli.common import (
    COUNT,
    FORMATS,
    SEED,
    add_params_args,
    number,
    print_json,
)
from omnir1.fsutil import write_json


def _close_process_group() -> bool:
    """Close the ranks' process group of `accelerate launch` once every rank is done (run_training
    ends on a barrier). Returns whether this process was one of several ranks (a group of one,
    as in a test's own process, is closed and the process goes on)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return False
    ranks = dist.get_world_size()
    dist.destroy_process_group()
    return ranks > 1


def _end_rank(code: int) -> NoReturn:
    """End a rank of `accelerate launch` without the interpreter's teardown, its outputs written.

    DeepSpeed keeps references to its process groups past destroy_process_group (the engines,
    ZeRO-3's parameters, deepspeed.utils.groups), so their gloo threads still run when the
    interpreter frees them at exit, and a rank that has done all its work can abort there
    ("terminate called without an active exception": 1 run in 8-30 of the ZeRO-3 offload test on
    2 busy cores), which fails the whole launch."""
    import logging
    import os

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def cmd_train(args: argparse.Namespace) -> int:
    from omnir1.config import load_params
    from omnir1.rl import launch
    from omnir1.rl.train import run_training

    params = load_params(args.params, args.recipe)
    processes = params.train.gpus_per_node
    if processes > 1 and not launch.is_rank():
        return launch.relaunch(args.command_args, processes, params.train.accelerate_config)
    summary = run_training(
        params,
        data=args.data,
        fmt=args.format,
        models_dir=args.models or params.models.dir,
        out=args.out,
        resume={None: False, "always": True, "auto": "auto"}[args.resume],
        checkpoints=args.checkpoints,
        max_steps=args.max_steps,
        device=args.device,
        system2_url=args.system2_url,
        system2_root=args.system2_root,
        shards=args.shards,
    )
    args.ends_rank = _close_process_group()  # main ends such a rank once all is written
    curve = summary.pop("history")
    if args.metrics:
        write_json(args.metrics, summary)
    if args.curve:
        write_json(args.curve, curve)
    print_json(summary)
    return 0


def cmd_warm_start(args: argparse.Namespace) -> int:
    from omnir1.config import load_params
    from omnir1.rl.warmstart import run_warm_start

    params = load_params(args.params, args.recipe)
    summary = run_warm_start(
        params,
        data=args.data,
        fmt=args.format,
        models_dir=args.models or params.models.dir,
        out=args.out,
        grounder_from=args.grounder_from,
    )
    if args.metrics:
        write_json(args.metrics, summary)
    print_json(summary)
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from omnir1.experimental.params import load_study_params
    from omnir1.experimental.study import run_study

    params = load_study_params(args.params, args.recipe)
    results = run_study(
        params,
        data=args.data,
        fmt=args.format,
        out=args.out,
        seeds=args.seeds,
        heldout_split=args.heldout_split,
        heldout_limit=args.heldout_limit,
        heldout_data=args.heldout_data,
        per_sample=args.per_sample,
        jobs=args.jobs,
    )
    print((Path(args.out) / "study.md").read_text(encoding="utf-8"))
    print(f"seconds: {results['seconds']['total']:.0f}")
    return 0


def add_commands(groups) -> None:
    """Register this area's commands on the CLI's subparsers."""
    p = groups.add_parser("train", help="GRPO of System 1 with System-2 rewards (params.yaml)")
    p.add_argument("--data", required=True, help="data set folder")
    p.add_argument("--format", choices=FORMATS, required=True)
    p.add_argument("--models", help="base model folder (default: models.dir of params.yaml)")
    p.add_argument("--out", required=True, help="run folder: checkpoints/, model/, train.json")
    add_params_args(p)
    p.add_argument(
        "--resume",
        nargs="?",
        const="always",
        choices=("always", "auto"),
        help="continue from the last complete checkpoint; 'auto': only if it is from a run of "
        "the same params, data and models, else start afresh",
    )
    p.add_argument("--checkpoints", help="checkpoint folder (default: OUT/checkpoints)")
    p.add_argument("--max-steps", type=COUNT, help="override train.max_steps")
    p.add_argument("--device", default="cpu")
    p.add_argument("--metrics", help="also write the summary here (DVC metrics)")
    p.add_argument("--curve", help="write the per-step curve here (DVC plots)")
    p.add_argument("--system2-url", help="use the System-2 service at this URL (token from env)")
    p.add_argument(
        "--system2-root", help="local mount of the service's data root (videos under it go by path)"
    )
    p.add_argument("--shards", help="System 1's clips from these shards (omnir1 data preprocess)")
    p.set_defaults(func=cmd_train)

    p = groups.add_parser(
        "warm-start", help="supervised start of the grounder and System 1 (params warm_start)"
    )
    p.add_argument("--data", required=True, help="data set folder (its train split is used)")
    p.add_argument("--format", choices=FORMATS, required=True)
    p.add_argument("--models", help="base model folder (default: models.dir of params.yaml)")
    p.add_argument("--out", required=True, help="the warm-started model folder")
    add_params_args(p)
    p.add_argument("--grounder-from", help="take the grounder of this model folder instead")
    p.add_argument("--metrics", help="also write the summary here (DVC metrics)")
    p.set_defaults(func=cmd_warm_start)

    p = groups.add_parser(
        "study",
        help="experimental (research/README.md): does GRPO learn? warm start, GRPO, held-out "
        "before/after over seeds",
    )
    p.add_argument("--data", required=True, help="data set folder (train and held-out splits)")
    p.add_argument("--format", choices=FORMATS, required=True)
    p.add_argument("--out", required=True, help="folder for study.json, study.md, plots, runs")
    add_params_args(p)
    p.add_argument("--seeds", type=SEED, nargs="+", default=[0, 1, 2])
    p.add_argument("--heldout-split", default="valid")
    p.add_argument("--heldout-limit", type=COUNT, help="assess at most this many expressions")
    p.add_argument(
        "--heldout-data",
        help="take the held-out split from this data set (same format and drawing) instead",
    )
    p.add_argument(
        "--per-sample",
        type=number(int, low=1, high=1024, low_open=False),
        default=2,
        help="sampled answers per expression",
    )
    p.add_argument(
        "--jobs",
        type=number(int, low=1, high=256, low_open=False),
        default=1,
        help="seeds run in this many processes at a time",
    )
    p.set_defaults(func=cmd_study)
