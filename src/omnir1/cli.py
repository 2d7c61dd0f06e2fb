"""The `omnir1` command line: one entry point for every stage.

Subcommands import their heavy dependencies lazily, so `omnir1 --help` stays fast. Errors of
user input (OmniR1Error) print one line naming the file and field and exit non-zero.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from omnir1.data import FORMATS
from omnir1.errors import ConfigError, OmniR1Error
from omnir1.fsutil import write_json
from omnir1.parts import parse_part


def _print_json(obj: object) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def cmd_data_synth(args: argparse.Namespace) -> int:
    from omnir1.data.synth import SynthConfig, synthesize

    extra = {"background": args.background} if args.background else {}
    if args.object_scale is not None:
        extra["object_scale"] = args.object_scale
    if args.visits is not None:
        extra["visit_fraction"] = args.visits
    if args.layout:
        extra["layout"] = args.layout
    if args.duration is not None:
        extra["duration_s"] = args.duration
    cfg = SynthConfig(
        format=args.format, videos=args.videos, seed=args.seed, workers=args.workers, **extra
    )
    _print_json(synthesize(cfg, args.out, overwrite=args.overwrite, progress=not args.quiet))
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from omnir1.config import load_params
    from omnir1.data.fetch import fetch_to_files

    params = load_params(args.params, args.recipe)
    report = fetch_to_files(params, args.format, args.out, args.metrics, progress=not args.quiet)
    keys = ("ok", "source", "videos", "expressions", "frames", "null_expressions")
    _print_json({k: report[k] for k in keys if k in report})
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from omnir1.data.check import check_dataset
    from omnir1.fsutil import write_json

    report = check_dataset(args.format, args.root).to_dict()
    if args.out:
        write_json(args.out, report)
    _print_json(report)
    if not report["ok"]:
        for problem in report["problems"]:
            print(f"omnir1: error: {problem}", file=sys.stderr)
        return 2
    return 0


def cmd_data_validate(args: argparse.Namespace) -> int:
    from omnir1.data.validate import ValidateConfig, raise_on_failure, summary, validate_dataset

    if args.params:
        from omnir1.config import load_params

        config = load_params(args.params).validation.to_config()
    else:
        config = ValidateConfig()
    report = validate_dataset(args.format, args.root, args.out, config, progress=not args.quiet)
    _print_json(summary(report))
    raise_on_failure(report, args.out)  # exit 2, naming the failed checks
    return 0


def cmd_data_preprocess(args: argparse.Namespace) -> int:
    from omnir1.config import load_params
    from omnir1.data.preprocess import preprocess

    params = load_params(args.params)
    summary = preprocess(
        args.format,
        args.root,
        args.out,
        params.system1,
        workers=args.workers or params.preprocess.workers,
        prefer=args.prefer or params.preprocess.prefer,
        progress=not args.quiet,
        part=parse_part(args.part),
    )
    if args.metrics:
        write_json(args.metrics, summary)
    _print_json(summary)
    return 0


def cmd_data_merge_shards(args: argparse.Namespace) -> int:
    from omnir1.data.preprocess import merge_shards

    _print_json(merge_shards(args.parts, args.out))
    return 0


def _dvc_remote(args: argparse.Namespace):
    from omnir1.config import load_params
    from omnir1.dvcremote import resolve

    return resolve(load_params(args.params).remote)


def cmd_data_remote(args: argparse.Namespace) -> int:
    from omnir1.dvcremote import setup

    _print_json(setup(_dvc_remote(args), create_bucket=args.create_bucket))
    return 0


def cmd_data_transfer(args: argparse.Namespace) -> int:
    from omnir1.dvcremote import transfer

    sys.stdout.write(transfer(args.cmd, _dvc_remote(args), args.targets))
    return 0


def cmd_media_inspect(args: argparse.Namespace) -> int:
    from omnir1.media import inspect

    _print_json(inspect(args.path, folder_fps=args.fps).to_dict())
    return 0


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
    )
    _print_json({k: result[k] for k in ("benchmark", "splits", "summary", "counts", "timing")})
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
        grounder_answer=_text_arg(args.grounder_answer),
        progress=not args.quiet,
        shards=args.shards,
    )
    _print_json({k: summary[k] for k in ("format", "splits", "models", "counts", "timings_s")})
    return 0


def cmd_models_fetch(args: argparse.Namespace) -> int:
    from omnir1.config import load_params
    from omnir1.registry import fetch_model

    _print_json(fetch_model(load_params(args.params, args.recipe), args.uri, args.out))
    return 0


def cmd_models_init_tiny(args: argparse.Namespace) -> int:
    from omnir1.models.tiny import TinySizes, init_tiny

    _print_json(
        init_tiny(args.out, seed=args.seed, sizes=TinySizes(sam2_image_size=args.sam2_size))
    )
    return 0


def _text_arg(value: str | None) -> str | None:
    """A literal text, or @FILE for the contents of FILE."""
    if value is None or not value.startswith("@"):
        return value
    from pathlib import Path

    from omnir1.errors import InputError

    try:
        return Path(value[1:]).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(value[1:], f"cannot read ({exc.strerror})") from None


def cmd_infer(args: argparse.Namespace) -> int:
    from omnir1.inference import infer_video

    report = infer_video(
        args.models,
        args.video,
        args.expression,
        args.out,
        audio=args.audio,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        overlay=not args.no_overlay,
        device=args.device,
        system1_answer=_text_arg(args.system1_answer),
        grounder_answer=_text_arg(args.grounder_answer),
        folder_fps=args.fps,
        system2_url=args.system2_url,
        system2_root=args.system2_root,
    )
    _print_json({k: report[k] for k in ("keyframes", "masks", "overlay", "timings_s")})
    return 0


def cmd_serve_system2(args: argparse.Namespace) -> int:
    from omnir1.service.app import Limits, serve

    limits = Limits(
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        max_frames=args.max_frames,
        timeout_s=args.timeout,
    )
    grounder_cfg = None
    if args.params:
        from omnir1.config import load_params

        grounder_cfg = load_params(args.params).grounder.to_config()
    serve(
        args.models,
        host=args.host,
        port=args.port,
        data_root=args.data_root,
        device=args.device,
        limits=limits,
        grounder_cfg=grounder_cfg,
    )
    return 0


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
    from omnir1.rl.train import run_training

    params = load_params(args.params, args.recipe)
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
    _print_json(summary)
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
    _print_json(summary)
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


def cmd_register(args: argparse.Namespace) -> int:
    from omnir1.config import load_params
    from omnir1.registry import parse_metrics_arg, register_model

    params = load_params(args.params, args.recipe)
    decision = register_model(
        params,
        args.model,
        [parse_metrics_arg(m) for m in args.metrics],
        args.out,
        params_file=args.params,
        dataset=args.dataset,
        extra_tags=_named_paths(args.tag, "--tag"),
    )
    keys = ("model", "version", "promoted", "summary", "champion", "previous_champion", "run_id")
    _print_json({k: decision[k] for k in keys})
    return 0


def _add_params_args(p: argparse.ArgumentParser, what: str = "") -> None:
    p.add_argument("--params", default="params.yaml", help=what or None)
    p.add_argument("--recipe", action="append", default=[], help="params file merged over --params")


def _add_data_model_args(p: argparse.ArgumentParser) -> None:
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


def _named_paths(values: Sequence[str], option: str) -> dict[str, str]:
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


def _format_paths(args: argparse.Namespace, params) -> dict[str, str]:
    """FORMAT -> data set folder from --data, or from --data-root and data.formats."""
    if args.data and args.data_root:
        raise ConfigError(None, "give --data or --data-root, not both", "--data-root")
    if args.data_root:
        return {fmt: str(Path(args.data_root) / fmt) for fmt in params.data.formats}
    if not args.data:
        raise ConfigError(None, "needs --data FORMAT=DIR (repeatable) or --data-root", "--data")
    data = _named_paths(args.data, "--data")
    for fmt in data:
        if fmt not in FORMATS:
            raise ConfigError(None, f"unknown format {fmt!r}; valid: {list(FORMATS)}", "--data")
    return data


def cmd_benchmark(args: argparse.Namespace) -> int:
    from omnir1.config import load_params
    from omnir1.eval.benchmark import run_benchmark

    params = load_params(args.params, args.recipe)
    report = run_benchmark(
        params,
        data=_format_paths(args, params),
        models=_named_paths(args.model, "--model"),
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
    _print_json({k: report[k] for k in report if k not in ("settings", "models")})
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from omnir1.config import load_params
    from omnir1.eval.probe import run_probe

    params = load_params(args.params, args.recipe)
    report = run_probe(
        params,
        data=_format_paths(args, params),
        models=_named_paths(args.model, "--model"),
        out=args.out,
        metrics=args.metrics,
        evaluation=args.evaluation,
        progress=not args.quiet,
        device=args.device,
    )
    _print_json({k: report[k] for k in report if k not in ("by_dataset", "models")})
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from omnir1.report import build_report, stage_times, summary_table

    if args.summary_only:  # print, write nothing: the report file stays the stage's output
        print(summary_table(args.metrics, args.reports))
    else:
        print(build_report(args.metrics, args.reports, args.out))
    if args.times:
        table, total = stage_times(args.times)
        print(f"\nwall time per stage ({total / 60:.1f} min in all):\n{table}")
    print(f"\nreport: {Path(args.out).resolve()}")
    return 0


def _pipeline_arguments(values: Sequence[str]) -> dict:
    """NAME=VALUE pipeline arguments; VALUE is read as JSON when it parses (numbers, lists)."""
    out = {}
    for name, value in _named_paths(values, "--set").items():
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


def cmd_pipeline(args: argparse.Namespace) -> int:
    from omnir1.kube import pipeline

    if args.action == "compile":
        _print_json(pipeline.compile_pipelines(args.out, args.project, args.params))
        return 0
    arguments = _pipeline_arguments(args.set)
    if args.action == "run":
        _print_json(
            pipeline.run_local(
                args.pipeline, args.project, args.params, args.pipeline_root, arguments
            )
        )
        return 0
    run_id = pipeline.submit(
        args.host,
        args.pipeline,
        args.project,
        args.params,
        arguments,
        experiment=args.experiment,
        run_name=args.run_name,
        namespace=args.namespace,
        service_account=args.service_account,
    )
    _print_json({"pipeline": args.pipeline, "run_id": run_id, "host": args.host})
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omnir1", description="Omni-R1 Ops: data, training, evaluation, pipelines."
    )
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")

    data = groups.add_parser(
        "data", help="synthesise, check, validate and version (DVC on S3) data sets"
    ).add_subparsers(dest="cmd", required=True)
    p = data.add_parser(
        "synth", help="write a synthetic audio-visual data set in an official layout"
    )
    p.add_argument("--format", choices=FORMATS, required=True)
    p.add_argument("--out", required=True, help="output folder (created; see --overwrite)")
    p.add_argument("--videos", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="videos rendered in parallel")
    p.add_argument(
        "--background",
        choices=("gradient", "position", "timecode"),
        help="gradient: top to bottom colour; position: red ramps with x, green with y; "
        "timecode: position, and blue rises with time (default: SynthConfig's)",
    )
    p.add_argument(
        "--object-scale", type=float, help="shapes' radii x this (default: SynthConfig's)"
    )
    p.add_argument(
        "--visits",
        type=float,
        help="fraction of objects only in view for 2-3.5 s (default: SynthConfig's)",
    )
    p.add_argument(
        "--layout",
        choices=("free", "turns"),
        help="free: 3-5 objects, often several in view; turns: 2-3 objects in view one at a "
        "time (default: SynthConfig's)",
    )
    p.add_argument("--duration", type=float, help="seconds per video (default: SynthConfig's, 10)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_data_synth)

    p = data.add_parser(
        "fetch",
        help="the data stage: synthesise or import (path, s3://) a data set as params.yaml "
        "data.source(s) says, then check it",
    )
    p.add_argument("--format", choices=FORMATS, required=True)
    p.add_argument("--out", required=True, help="data set folder (replaced when complete)")
    p.add_argument("--metrics", help="write the check report to this JSON file")
    _add_params_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_data_fetch)

    p = data.add_parser("check", help="validate a data set and print a JSON summary")
    p.add_argument("--format", choices=FORMATS, required=True)
    p.add_argument("root", help="data set folder")
    p.add_argument("--out", help="also write the summary to this JSON file")
    p.set_defaults(func=cmd_data_check)

    p = data.add_parser(
        "validate",
        help="Great Expectations suites over a data set's manifests; report of failed checks",
    )
    p.add_argument("--format", choices=FORMATS, required=True)
    p.add_argument("root", help="data set folder")
    p.add_argument(
        "--out", required=True, help="report folder: report.json, report.md, manifests as CSV"
    )
    p.add_argument(
        "--params", help="params.yaml whose `validate` bounds to use (default: built-in)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_data_validate)

    p = data.add_parser(
        "preprocess",
        help="decode each video once into shards: System 1's frames and audio (params system1), "
        "every frame at full size for System 2",
    )
    p.add_argument("--format", choices=FORMATS, required=True)
    p.add_argument("root", help="data set folder")
    p.add_argument("--out", required=True, help="shards folder: VIDEO_ID/*.npy, meta.json, index")
    p.add_argument("--workers", type=int, help="worker processes (default: params preprocess)")
    p.add_argument("--prefer", choices=("frames", "video"), help="source of a video that has both")
    p.add_argument("--part", metavar="I/N", help="only every N-th video from the I-th (fan-out)")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--metrics", help="also write the summary here (DVC metrics)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_data_preprocess)

    p = data.add_parser(
        "merge-shards", help="one shards folder from the folders of `preprocess --part`"
    )
    p.add_argument("parts", nargs="+", help="shards folders of the parts (each complete)")
    p.add_argument("--out", required=True, help="merged shards folder (replaced when complete)")
    p.set_defaults(func=cmd_data_merge_shards)

    p = data.add_parser(
        "remote",
        help="check the S3 bucket of params.yaml `remote` (or OMNIR1_DVC_REMOTE_URL, "
        "AWS_ENDPOINT_URL) and make it DVC's default remote in .dvc/config.local",
    )
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--create-bucket", action="store_true", help="create the bucket if missing")
    p.set_defaults(func=cmd_data_remote)
    for name in ("push", "pull"):
        p = data.add_parser(name, help=f"dvc {name} with the remote of `omnir1 data remote`")
        p.add_argument("targets", nargs="*", help="dvc.yaml stages or outputs (default: all)")
        p.add_argument("--params", default="params.yaml")
        p.set_defaults(func=cmd_data_transfer)

    media = groups.add_parser("media", help="inspect media files").add_subparsers(
        dest="cmd", required=True
    )
    p = media.add_parser(
        "inspect", help="print duration, fps, size, frames, audio and codec as JSON"
    )
    p.add_argument("path", help="video file or folder of frames")
    p.add_argument("--fps", type=float, default=None, help="frame rate of a folder of frames")
    p.set_defaults(func=cmd_media_inspect)

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
    p.add_argument("--workers", type=int, default=2, help="processes scoring videos in parallel")
    p.add_argument(
        "--videos-per-split", type=int, help="score only the first N videos of each split"
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
    _add_params_args(p, "system1 and grounder settings")
    p.add_argument("--limit", type=int, help="predict only the first N expressions")
    p.add_argument(
        "--videos-per-split", type=int, help="predict only the first N videos of each split"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of System 1's prompt")
    p.add_argument(
        "--batch-size", type=int, default=8, help="expressions per System-1 generate call"
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
    _add_data_model_args(p)
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
    _add_params_args(p)
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_benchmark)

    p = groups.add_parser(
        "probe",
        help="the probe stage: hallucination probes from the data sets' annotations, per model",
    )
    _add_data_model_args(p)
    p.add_argument("--out", required=True, help="folder for every probe and answer (JSONL)")
    p.add_argument("--metrics", required=True, help="figures per model and probe family")
    p.add_argument(
        "--evaluation", help="the evaluate stage's metrics: mask-level figures (null S, R)"
    )
    _add_params_args(p)
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_probe)

    p = groups.add_parser(
        "report", help="the pipeline's HTML report from every stage's metrics and reports"
    )
    p.add_argument("--metrics", default="metrics", help="folder of the stages' metrics JSON")
    p.add_argument("--reports", default="reports", help="folder of the stages' reports")
    p.add_argument("--out", default="reports/index.html", help="HTML (a .md summary beside)")
    p.add_argument(
        "--summary-only", action="store_true", help="print the headline table, write nothing"
    )
    p.add_argument("--times", help="also print the stage times recorded in this file")
    p.set_defaults(func=cmd_report)

    models = groups.add_parser("models", help="model folders").add_subparsers(
        dest="cmd", required=True
    )
    p = models.add_parser(
        "init-tiny", help="build tiny System-1/grounder/SAM2 models locally (random weights)"
    )
    p.add_argument("--out", required=True, help="model folder to write (models.json + weights)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sam2-size", type=int, default=256, help="SAM2 input size (multiple of 16)")
    p.set_defaults(func=cmd_models_init_tiny)

    p = models.add_parser(
        "fetch",
        help="copy a model folder from models:/NAME@ALIAS, models:/NAME/N, s3:// or a folder",
    )
    p.add_argument("uri", help="registry version, s3:// prefix or folder")
    p.add_argument("--out", required=True, help="model folder to write (replaced when complete)")
    _add_params_args(p, "tracking.uri (MLFLOW_TRACKING_URI wins)")
    p.set_defaults(func=cmd_models_fetch)

    p = groups.add_parser("infer", help="run both systems on a video: masks, overlay, result.json")
    p.add_argument(
        "--video", required=True, help="video file (any common container and codec) or frame folder"
    )
    p.add_argument("--fps", type=float, default=1.0, help="frame rate of a frame folder")
    p.add_argument("--expression", required=True, help="what to segment")
    p.add_argument("--models", required=True, help="model folder with models.json")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--audio", help="audio file to use instead of the video's own track")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, help="System-1 completion length limit")
    p.add_argument("--no-overlay", action="store_true", help="skip overlay.mp4")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument(
        "--system1-answer",
        help="replay this System-1 completion (text or @FILE) instead of generating one",
    )
    p.add_argument(
        "--grounder-answer",
        help="replay this grounder answer (text or @FILE) for every keyframe instead of generating",
    )
    p.add_argument("--system2-url", help="use the System-2 service at this URL (token from env)")
    p.add_argument(
        "--system2-root", help="local mount of the service's data root (videos under it go by path)"
    )
    p.set_defaults(func=cmd_infer)

    p = groups.add_parser(
        "serve-system2", help="serve System 2 over HTTP (bearer token from OMNIR1_SYSTEM2_TOKEN)"
    )
    p.add_argument("--models", required=True, help="model folder with models.json")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--data-root", default=".", help="videos are named relative to this folder")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-body-mb", type=float, default=64.0)
    p.add_argument("--max-frames", type=int, default=3000, help="frames of one video")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per call, queue included")
    p.add_argument(
        "--params",
        help="params.yaml whose `grounder` section says how keyframes are shown to the grounder "
        "(default: the release's; give the trainers' file when they score with this service)",
    )
    p.set_defaults(func=cmd_serve_system2)

    p = groups.add_parser("train", help="GRPO of System 1 with System-2 rewards (params.yaml)")
    p.add_argument("--data", required=True, help="data set folder")
    p.add_argument("--format", choices=FORMATS, required=True)
    p.add_argument("--models", help="base model folder (default: models.dir of params.yaml)")
    p.add_argument("--out", required=True, help="run folder: checkpoints/, model/, train.json")
    _add_params_args(p)
    p.add_argument(
        "--resume",
        nargs="?",
        const="always",
        choices=("always", "auto"),
        help="continue from the last complete checkpoint; 'auto': only if it is from a run of "
        "the same params, data and models, else start afresh",
    )
    p.add_argument("--checkpoints", help="checkpoint folder (default: OUT/checkpoints)")
    p.add_argument("--max-steps", type=int, help="override train.max_steps")
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
    _add_params_args(p)
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
    _add_params_args(p)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--heldout-split", default="valid")
    p.add_argument("--heldout-limit", type=int, help="assess at most this many expressions")
    p.add_argument(
        "--heldout-data",
        help="take the held-out split from this data set (same format and drawing) instead",
    )
    p.add_argument("--per-sample", type=int, default=2, help="sampled answers per expression")
    p.add_argument("--jobs", type=int, default=1, help="seeds run in this many processes at a time")
    p.set_defaults(func=cmd_study)

    pipe = groups.add_parser("pipeline", help="the Kubeflow pipelines of pipelines/")
    pipe = pipe.add_subparsers(dest="action", required=True, metavar="ACTION")
    compile_ = pipe.add_parser("compile", help="write every pipeline as a YAML package")
    compile_.add_argument("--out", default="pipelines/compiled", help="folder for {name}.yaml")
    for p in (
        compile_,
        pipe.add_parser("run", help="run a pipeline here with kfp.local (CPU, this venv)"),
        pipe.add_parser("submit", help="submit a pipeline run to a Kubeflow Pipelines endpoint"),
    ):
        p.add_argument("--project", default=".", help="project folder holding pipelines/")
        p.add_argument("--params", help="parameter defaults (default: PROJECT/params.yaml)")
        p.set_defaults(func=cmd_pipeline)
        if p is compile_:
            continue
        p.add_argument("--pipeline", choices=("training", "evaluation"), default="training")
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="pipeline argument, e.g. train__max_steps=2 or parts=2 (repeatable)",
        )
    run, submit = pipe.choices["run"], pipe.choices["submit"]
    run.add_argument("--local", action="store_true", required=True, help="with kfp.local")
    run.add_argument("--pipeline-root", default="runs/kfp-local", help="artifacts of the run")
    submit.add_argument("--host", required=True, help="Kubeflow Pipelines API URL")
    submit.add_argument("--experiment", default="omnir1")
    submit.add_argument("--run-name")
    submit.add_argument("--namespace", help="Kubeflow profile namespace (multi-user)")
    submit.add_argument(
        "--service-account",
        default="omnir1-pipeline-runner",
        help="the run's pods' ServiceAccount (the chart's, allowed to create PyTorchJobs)",
    )

    p = groups.add_parser(
        "register",
        help="register a model folder in the MLflow registry (challenger) and promote it to "
        "champion if the gates of params.yaml register hold",
    )
    p.add_argument("--model", required=True, help="model folder (train's OUT/model)")
    p.add_argument(
        "--metrics",
        action="append",
        required=True,
        metavar="[NAME=]FILE",
        help="JSON of metrics (nested keys joined by dots, prefixed NAME.); repeatable",
    )
    p.add_argument("--out", required=True, help="decision JSON (a .md summary is written beside)")
    _add_params_args(p)
    p.add_argument("--dataset", help="data set tag (default: data.source:data.train_format)")
    p.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra tag on the run and the version, e.g. kfp_run_id=... (repeatable)",
    )
    p.set_defaults(func=cmd_register)
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
        _end_rank(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
