"""`omnir1 data ...` and `omnir1 media inspect`: data sets and media files."""

from __future__ import annotations

import argparse
import sys

from omnir1.cli.common import (
    FORMATS,
    POSITIVE,
    SEED,
    add_params_args,
    number,
    print_json,
)
from omnir1.fsutil import write_json
from omnir1.parts import parse_part


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
    print_json(synthesize(cfg, args.out, overwrite=args.overwrite, progress=not args.quiet))
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from omnir1.config import load_params
    from omnir1.data.fetch import fetch_to_files

    params = load_params(args.params, args.recipe)
    report = fetch_to_files(params, args.format, args.out, args.metrics, progress=not args.quiet)
    keys = ("ok", "source", "videos", "expressions", "frames", "null_expressions")
    print_json({k: report[k] for k in keys if k in report})
    return 0


def cmd_data_source(args: argparse.Namespace) -> int:
    from omnir1.config import load_params
    from omnir1.data.fetch import source_key
    from omnir1.fsutil import write_json

    key = source_key(load_params(args.params, args.recipe), args.format)
    write_json(args.out, key)
    print_json(key)
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from omnir1.data.check import check_dataset
    from omnir1.fsutil import write_json

    report = check_dataset(args.format, args.root).to_dict()
    if args.out:
        write_json(args.out, report)
    print_json(report)
    if not report["ok"]:
        for problem in report["problems"]:
            print(f"omnir1: error: {problem}", file=sys.stderr)
        return 2
    return 0


def cmd_data_validate(args: argparse.Namespace) -> int:
    from omnir1.config import ValidateParams
    from omnir1.data.validate import raise_on_failure, summary, validate_dataset

    if args.params:
        from omnir1.config import load_params

        config = load_params(args.params).validation
    else:
        config = ValidateParams()
    report = validate_dataset(
        args.format,
        args.root,
        args.out,
        config,
        progress=not args.quiet,
        copy_to=args.report_copy,
    )
    print_json(summary(report))
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
    print_json(summary)
    return 0


def cmd_data_merge_shards(args: argparse.Namespace) -> int:
    from omnir1.data.preprocess import merge_shards

    print_json(merge_shards(args.parts, args.out))
    return 0


def _dvc_remote(args: argparse.Namespace):
    from omnir1.config import load_params
    from omnir1.dvcremote import resolve

    return resolve(load_params(args.params).remote)


def cmd_data_remote(args: argparse.Namespace) -> int:
    from omnir1.dvcremote import setup

    print_json(setup(_dvc_remote(args), create_bucket=args.create_bucket))
    return 0


def cmd_data_transfer(args: argparse.Namespace) -> int:
    from omnir1.dvcremote import transfer

    sys.stdout.write(transfer(args.cmd, _dvc_remote(args), args.targets))
    return 0


def cmd_media_inspect(args: argparse.Namespace) -> int:
    from omnir1.media import inspect

    print_json(inspect(args.path, folder_fps=args.fps).to_dict())
    return 0


def add_commands(groups) -> None:
    """Register this area's commands on the CLI's subparsers."""
    data = groups.add_parser(
        "data", help="synthesise, check, validate and version (DVC on S3) data sets"
    ).add_subparsers(dest="cmd", required=True)
    p = data.add_parser(
        "synth", help="write a synthetic audio-visual data set in an official layout"
    )
    p.add_argument("--format", choices=FORMATS, required=True)
    p.add_argument("--out", required=True, help="output folder (created; see --overwrite)")
    p.add_argument("--videos", type=number(int, low=1, high=100_000, low_open=False), default=24)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument(
        "--workers",
        type=number(int, low=1, high=256, low_open=False),
        default=2,
        help="videos rendered in parallel",
    )
    p.add_argument(
        "--background",
        choices=("gradient", "position", "timecode"),
        help="gradient: top to bottom colour; position: red ramps with x, green with y; "
        "timecode: position, and blue rises with time (default: SynthConfig's)",
    )
    p.add_argument(
        "--object-scale", type=POSITIVE, help="shapes' radii x this (default: SynthConfig's)"
    )
    p.add_argument(
        "--visits",
        type=number(float, low=0, high=1, low_open=False),
        help="fraction of objects only in view for 2-3.5 s (default: SynthConfig's)",
    )
    p.add_argument(
        "--layout",
        choices=("free", "turns"),
        help="free: 3-5 objects, often several in view; turns: 2-3 objects in view one at a "
        "time (default: SynthConfig's)",
    )
    p.add_argument(
        "--duration",
        type=number(float, low=2, high=600, low_open=False),
        help="seconds per video (default: SynthConfig's, 10)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_data_synth)

    p = data.add_parser(
        "source",
        help="the source stage: what a data set's source (params data.source(s)) holds now, "
        "as a digest (a listing, no copy), so DVC sees an S3 prefix or folder change",
    )
    p.add_argument("--format", choices=FORMATS, required=True)
    p.add_argument("--out", required=True, help="JSON to write (format, source, files, sha256)")
    add_params_args(p)
    p.set_defaults(func=cmd_data_source)

    p = data.add_parser(
        "fetch",
        help="the data stage: synthesise or import (path, s3://) a data set as params.yaml "
        "data.source(s) says, then check it",
    )
    p.add_argument("--format", choices=FORMATS, required=True)
    p.add_argument("--out", required=True, help="data set folder (replaced when complete)")
    p.add_argument("--metrics", help="write the check report to this JSON file")
    add_params_args(p)
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
        "--out",
        required=True,
        help="report folder: Data Docs (data_docs/index.html), report.json, manifests as CSV",
    )
    p.add_argument(
        "--report-copy",
        metavar="DIR",
        help="also copy the report to DIR (replaced), pass or fail: e.g. a volume that outlives "
        "a failed Kubeflow step",
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
    p.add_argument(
        "--workers",
        type=number(int, low=1, high=256, low_open=False),
        help="worker processes (default: params preprocess)",
    )
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
    p.add_argument(
        "--fps",
        type=number(float, high=1000),
        default=None,
        help="frame rate of a folder of frames",
    )
    p.set_defaults(func=cmd_media_inspect)
