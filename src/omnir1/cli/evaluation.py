"""`omnir1 evaluate`, `predict`, `benchmark` and `probe`: scoring models on the benchmarks."""

from __future__ import annotations

import argparse
from pathlib import Path

from omnir1.cli.common import (
    COUNT,
    FORMATS,
    SEED,
    add_data_model_args,
    add_params_args,
    format_paths,
    named_paths,
    number,
    print_json,
    text_arg,
)
from omnir1.parts import parse_part


def cmd_evaluate(args: argparse.Namespace) -> int:
    from omnir1.eval.report import evaluate_to_files

    result = evaluate_to_files(
        args.benchmark,
        args.data,
        args.pred,
        args.out,
        splits=args.split,
        workers=args.workers,
        html_report=not args.no_html,
        progress=not args.quiet,
        videos_per_split=args.videos_per_split,
        official_png=args.official_png,
    )
    print_json({k: result[k] for k in ("benchmark", "splits", "summary", "counts", "timing")})
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from omnir1.config import load_params
    from omnir1.eval.predict import read_answers, run_predict

    params = load_params(args.params, args.recipe)
    summary = run_predict(
        params,
        data=args.data,
        fmt=args.format,
        models_dir=args.models,
        out=args.out,
        splits=args.split,
        limit=args.limit,
        videos_per_split=args.videos_per_split,
        seed=args.seed,
        device=args.device,
        batch_size=args.batch_size,
        answers=read_answers(args.system1_answers) if args.system1_answers else None,
        grounder_answer=text_arg(args.grounder_answer),
        progress=not args.quiet,
        shards=args.shards,
    )
    print_json({k: summary[k] for k in ("format", "splits", "models", "counts", "timings_s")})
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from omnir1.config import load_params
    from omnir1.eval.benchmark import run_benchmark

    params = load_params(args.params, args.recipe)
    report = run_benchmark(
        params,
        data=format_paths(args, params),
        models=named_paths(args.model, "--model"),
        out=args.out,
        metrics=args.metrics,
        device=args.device,
        progress=not args.quiet,
        shards=(
            {fmt: str(Path(args.shards_root) / fmt) for fmt in params.data.formats}
            if args.shards_root
            else None
        ),
        part=parse_part(args.part),
        merge=args.merge,
    )
    print_json({k: report[k] for k in report if k not in ("settings", "models")})
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from omnir1.config import load_params
    from omnir1.eval.probe import run_probe

    params = load_params(args.params, args.recipe)
    report = run_probe(
        params,
        data=format_paths(args, params),
        models=named_paths(args.model, "--model"),
        out=args.out,
        metrics=args.metrics,
        evaluation=args.evaluation,
        progress=not args.quiet,
        device=args.device,
    )
    print_json({k: report[k] for k in report if k not in ("by_dataset", "models")})
    return 0


def add_commands(groups) -> None:
    """Register this area's commands on the CLI's subparsers."""
    p = groups.add_parser(
        "evaluate",
        help="score predicted masks with a benchmark's protocol (JSON + CSV + HTML report)",
    )
    p.add_argument("--benchmark", choices=FORMATS, required=True)
    p.add_argument("--data", required=True, help="data set folder in the benchmark's layout")
    p.add_argument(
        "--pred",
        required=True,
        help="predicted PNG masks: PRED/{video}/{expression_id}/{frame}.png (ReVOS, MeViS); "
        "the gt_mask layout PRED/{vid}/fid_{fid}/0000{i}.png or PRED/{vid}/{uid}/... (RefAVS)",
    )
    p.add_argument("--out", required=True, help="summary JSON; .csv and .html are written beside")
    p.add_argument(
        "--split",
        action="append",
        help="split to evaluate (repeatable; default: RefAVS test_s/test_u/test_n, "
        "else every split but train)",
    )
    p.add_argument(
        "--workers",
        type=number(int, low=1, high=256, low_open=False),
        default=2,
        help="processes scoring videos in parallel",
    )
    p.add_argument(
        "--videos-per-split", type=COUNT, help="score only the first N videos of each split"
    )
    p.add_argument(
        "--official-png",
        action="store_true",
        help="A and R from 0/255 PNG values and a missing PNG scoring its expression 0, as the "
        "official ReVOS script does: figures comparable with published tables",
    )
    p.add_argument("--no-html", action="store_true", help="skip the HTML report")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)

    p = groups.add_parser(
        "predict",
        help="masks of a model folder on a data set's evaluation splits, for omnir1 evaluate",
    )
    p.add_argument("--data", required=True, help="data set folder")
    p.add_argument("--format", choices=FORMATS, required=True)
    p.add_argument("--models", required=True, help="model folder with models.json")
    p.add_argument(
        "--out",
        required=True,
        help="prediction folder (replaced when complete): PNGs, predictions.json, answers.jsonl",
    )
    p.add_argument(
        "--split",
        action="append",
        help="split to predict (repeatable; default: the splits omnir1 evaluate scores)",
    )
    add_params_args(p, "system1 and grounder settings")
    p.add_argument("--limit", type=COUNT, help="predict only the first N expressions")
    p.add_argument(
        "--videos-per-split", type=COUNT, help="predict only the first N videos of each split"
    )
    p.add_argument("--seed", type=SEED, default=0, help="seed of System 1's prompt")
    p.add_argument(
        "--batch-size",
        type=number(int, low=1, high=1024, low_open=False),
        default=8,
        help="expressions per System-1 generate call",
    )
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument(
        "--system1-answers",
        metavar="JSONL",
        help="replay System-1 completions from an answers.jsonl of an earlier prediction "
        "(expressions it lacks are generated)",
    )
    p.add_argument(
        "--grounder-answer",
        help="replay this grounder answer (text or @FILE) for every keyframe instead of generating",
    )
    p.add_argument("--shards", help="System 1's clips from these shards (omnir1 data preprocess)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)

    p = groups.add_parser(
        "benchmark",
        help="the evaluate stage: predict and score models side by side on every data set",
    )
    add_data_model_args(p)
    p.add_argument("--out", required=True, help="folder for predictions and evaluation reports")
    p.add_argument("--metrics", help="headline figures per model and data set (not with --part)")
    p.add_argument(
        "--shards-root",
        metavar="DIR",
        help="System 1's clips from DIR/FORMAT (omnir1 data preprocess) instead of decoding",
    )
    p.add_argument("--part", metavar="I/N", help="only predict every N-th video from the I-th")
    p.add_argument(
        "--merge",
        action="append",
        default=[],
        metavar="PART_OUT",
        help="score the predictions of these --part outputs instead of predicting (repeatable)",
    )
    add_params_args(p)
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_benchmark)

    p = groups.add_parser(
        "probe",
        help="the probe stage: hallucination probes from the data sets' annotations, per model",
    )
    add_data_model_args(p)
    p.add_argument("--out", required=True, help="folder for every probe and answer (JSONL)")
    p.add_argument("--metrics", required=True, help="figures per model and probe family")
    p.add_argument(
        "--evaluation", help="the evaluate stage's metrics: mask-level figures (null S, R)"
    )
    add_params_args(p)
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_probe)
