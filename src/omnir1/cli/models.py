"""`omnir1 models ...`, `omnir1 infer` and `omnir1 serve-system2`: model folders, and the two
systems on any video."""

from __future__ import annotations

import argparse

from omnir1.cli.common import (
    COUNT,
    SEED,
    add_params_args,
    number,
    print_json,
    text_arg,
)


def cmd_models_fetch(args: argparse.Namespace) -> int:
    from omnir1.config import load_params
    from omnir1.registry import fetch_model

    print_json(fetch_model(load_params(args.params, args.recipe), args.uri, args.out))
    return 0


def cmd_models_base(args: argparse.Namespace) -> int:
    from omnir1.config import load_params
    from omnir1.registry import base_models

    print_json(base_models(load_params(args.params, args.recipe), args.out))
    return 0


def cmd_models_init_tiny(args: argparse.Namespace) -> int:
    from omnir1.models.tiny import TinySizes, init_tiny

    print_json(init_tiny(args.out, seed=args.seed, sizes=TinySizes(sam2_image_size=args.sam2_size)))
    return 0


def cmd_models_init(args: argparse.Namespace) -> int:
    from omnir1.errors import ConfigError
    from omnir1.models import presets

    if args.meta:
        print_json(presets.parameter_counts(args.preset, args.sam2))
        return 0
    if not args.out:
        raise ConfigError(None, "a folder to write is required unless --meta", "--out")
    print_json(
        presets.init_preset(
            args.out, args.preset, args.sam2, seed=args.seed, device=args.device, dtype=args.dtype
        )
    )
    return 0


def cmd_models_import(args: argparse.Namespace) -> int:
    from omnir1.models.importing import import_models

    manifest = import_models(
        args.snapshot,
        args.out,
        sam2_checkpoint=args.sam2,
        sam2_config=args.sam2_config,
        sam2_overrides=args.sam2_override,
        name=args.name,
    )
    print_json({k: manifest[k] for k in ("name", "imported")})
    return 0


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
        system1_answer=text_arg(args.system1_answer),
        grounder_answer=text_arg(args.grounder_answer),
        folder_fps=args.fps,
        system2_url=args.system2_url,
        system2_root=args.system2_root,
    )
    print_json({k: report[k] for k in ("keyframes", "masks", "overlay", "timings_s")})
    return 0


def cmd_serve_system2(args: argparse.Namespace) -> int:
    from omnir1.service.app import Limits, serve

    devices = [d for d in args.device.split(",") if d.strip()]
    limits = Limits(
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        max_frames=args.max_frames,
        workers=args.workers or len(devices),
        queue_size=args.queue_size,
        queue_timeout_s=args.queue_timeout,
        work_timeout_s=args.work_timeout,
        max_connections=args.max_connections,
    )
    grounder_cfg = None
    if args.params:
        from omnir1.config import load_params

        grounder_cfg = load_params(args.params).grounder
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


def add_commands(groups) -> None:
    """Register this area's commands on the CLI's subparsers."""
    models = groups.add_parser("models", help="model folders").add_subparsers(
        dest="cmd", required=True
    )
    p = models.add_parser(
        "init-tiny", help="build tiny System-1/grounder/SAM2 models locally (random weights)"
    )
    p.add_argument("--out", required=True, help="model folder to write (models.json + weights)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument(
        "--sam2-size",
        type=number(int, low=64, high=4096, low_open=False),
        default=256,
        help="SAM2 input size (multiple of 16)",
    )
    p.set_defaults(func=cmd_models_init_tiny)

    p = models.add_parser(
        "init",
        help="build models of the real sizes with random weights (memory, dtype and speed "
        "checks; nothing is downloaded)",
    )
    from omnir1.models.presets import SAM2, THINKERS

    p.add_argument("--preset", required=True, choices=sorted(THINKERS), help="System 1's size")
    p.add_argument("--sam2", default="hiera-l", choices=sorted(SAM2), help="SAM2.1's size")
    p.add_argument("--meta", action="store_true", help="only count parameters (meta device)")
    p.add_argument("--out", help="model folder to write (models.json + weights)")
    p.add_argument("--device", default="cpu", help="where to build (cuda: much faster)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--seed", type=SEED, default=0)
    p.set_defaults(func=cmd_models_init)

    p = models.add_parser(
        "import",
        help="a model folder from a Qwen2.5-Omni Hugging Face snapshot (its thinker) and a SAM2 "
        "checkpoint as Meta ships it",
    )
    p.add_argument("snapshot", help="snapshot folder (config.json, sharded safetensors, processor)")
    p.add_argument("--sam2", required=True, help='SAM2 checkpoint ({"model": state_dict} .pt)')
    p.add_argument(
        "--sam2-config",
        default="configs/sam2.1/sam2.1_hiera_l.yaml",
        help="its config in the sam2 package",
    )
    p.add_argument(
        "--sam2-override", action="append", default=[], help="hydra override of that config"
    )
    p.add_argument("--name", help="the folder's model name (default: the snapshot's folder name)")
    p.add_argument("--out", required=True, help="model folder to write (complete or absent)")
    p.set_defaults(func=cmd_models_import)

    p = models.add_parser(
        "base",
        help="the models GRPO starts from (the DVC models stage): params.yaml models.dir "
        "copied to OUT, or the embedded default's tiny models built there",
    )
    p.add_argument("--out", required=True, help="model folder to write (replaced when complete)")
    add_params_args(
        p, "models.dir, models.tiny; tracking.uri for models:/ (MLFLOW_TRACKING_URI wins)"
    )
    p.set_defaults(func=cmd_models_base)

    p = models.add_parser(
        "fetch",
        help="copy a model folder from models:/NAME@ALIAS, models:/NAME/N, s3:// or a folder",
    )
    p.add_argument("uri", help="registry version, s3:// prefix or folder")
    p.add_argument("--out", required=True, help="model folder to write (replaced when complete)")
    add_params_args(p, "tracking.uri (MLFLOW_TRACKING_URI wins)")
    p.set_defaults(func=cmd_models_fetch)

    p = groups.add_parser("infer", help="run both systems on a video: masks, overlay, result.json")
    p.add_argument(
        "--video", required=True, help="video file (any common container and codec) or frame folder"
    )
    p.add_argument(
        "--fps", type=number(float, high=1000), default=1.0, help="frame rate of a frame folder"
    )
    p.add_argument("--expression", required=True, help="what to segment")
    p.add_argument("--models", required=True, help="model folder with models.json")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--audio", help="audio file to use instead of the video's own track")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument(
        "--max-new-tokens",
        type=number(int, low=1, high=65536, low_open=False),
        help="System-1 completion length limit",
    )
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
    p.add_argument("--port", type=number(int, low=1, high=65535, low_open=False), default=8080)
    p.add_argument("--data-root", default=".", help="videos are named relative to this folder")
    p.add_argument(
        "--device", default="cpu", help="torch device, or several (cuda:0,cuda:1): models on each"
    )
    p.add_argument("--max-body-mb", type=number(float, high=65536), default=64.0)
    p.add_argument("--max-frames", type=COUNT, default=3000, help="frames of one video")
    p.add_argument("--workers", type=COUNT, help="jobs run at once (default: one per device)")
    p.add_argument(
        "--queue-size",
        type=number(int, low=0, high=10_000, low_open=False),
        default=8,
        help="calls admitted beyond the running ones; more get 429 with Retry-After",
    )
    seconds = number(float, high=7 * 24 * 3600)
    p.add_argument(
        "--queue-timeout", type=seconds, default=120.0, help="longest wait for a worker (503)"
    )
    p.add_argument(
        "--work-timeout", type=seconds, default=600.0, help="longest processing of a job (504)"
    )
    p.add_argument(
        "--max-connections",
        type=COUNT,
        default=64,
        help="open connections and calls at once (503 beyond)",
    )
    p.add_argument(
        "--params",
        help="params.yaml whose `grounder` section says how keyframes are shown to the grounder "
        "(default: the release's; give the trainers' file when they score with this service)",
    )
    p.set_defaults(func=cmd_serve_system2)
