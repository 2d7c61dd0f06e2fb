"""`omnir1 register`, `report` and `pipeline ...`: the registry, the report and the Kubeflow
pipelines."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from omnir1.cli.common import (
    add_params_args,
    named_paths,
    print_json,
)


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
        extra_tags=named_paths(args.tag, "--tag"),
        train_summary=args.training,
    )
    keys = ("model", "version", "promoted", "summary", "champion", "previous_champion", "run_id")
    print_json({k: decision[k] for k in keys})
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from omnir1.report import build_report, stage_times, summary_table

    if args.summary_only:  # print, write nothing: the report file stays the stage's output
        print(summary_table(args.metrics, args.reports))
    else:
        print(build_report(args.metrics, args.reports, args.out))
        _log_report(args)
    if args.times:
        table, total = stage_times(args.times)
        print(f"\nwall time per stage ({total / 60:.1f} min in all):\n{table}")
    print(f"\nreport: {Path(args.out).resolve()}")
    return 0


def _log_report(args: argparse.Namespace) -> None:
    """The report into the MLflow run of the version the register stage made, when it made
    one; the report file stays the stage's output if MLflow cannot take it (a warning)."""
    import logging
    import os

    from omnir1.config import load_params
    from omnir1.errors import OmniR1Error
    from omnir1.registry import log_report

    decision = Path(args.reports) / "register.json"
    if not decision.is_file():
        return
    out = Path(args.out)
    try:
        uri = os.environ.get("MLFLOW_TRACKING_URI") or load_params(args.params).tracking.uri
        run_id = log_report(decision, [out, out.with_suffix(".md")], uri)
    except OmniR1Error as exc:
        logging.getLogger(__name__).warning(f"report not logged to MLflow: {exc}")
        return
    print(f"logged to MLflow run {run_id} under report/")


def _pipeline_arguments(values: Sequence[str]) -> dict:
    """NAME=VALUE pipeline arguments; VALUE is read as JSON when it parses (numbers, lists)."""
    out = {}
    for name, value in named_paths(values, "--set").items():
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


def cmd_pipeline(args: argparse.Namespace) -> int:
    from omnir1.kube import pipeline

    if args.action == "compile":
        print_json(pipeline.compile_pipelines(args.out, args.project))
        return 0
    arguments = _pipeline_arguments(args.set)
    if args.action == "run":
        print_json(
            pipeline.run_local(
                args.pipeline,
                args.project,
                args.params,
                args.pipeline_root,
                arguments,
                cache=args.cache,
            )
        )
        return 0
    run_id = pipeline.submit(
        args.host,
        args.pipeline,
        args.project,
        arguments,
        experiment=args.experiment,
        run_name=args.run_name,
        namespace=args.namespace,
        service_account=args.service_account,
    )
    print_json({"pipeline": args.pipeline, "run_id": run_id, "host": args.host})
    return 0


def add_commands(groups) -> None:
    """Register this area's commands on the CLI's subparsers."""
    p = groups.add_parser(
        "report", help="the pipeline's HTML report from every stage's metrics and reports"
    )
    p.add_argument("--metrics", default="metrics", help="folder of the stages' metrics JSON")
    p.add_argument("--reports", default="reports", help="folder of the stages' reports")
    p.add_argument("--out", default="reports/index.html", help="HTML (a .md summary beside)")
    p.add_argument(
        "--params",
        default="params.yaml",
        help="its `tracking.uri` (MLFLOW_TRACKING_URI wins) takes the report into the run of "
        "the registered version, when REPORTS/register.json names one",
    )
    p.add_argument(
        "--summary-only", action="store_true", help="print the headline table, write nothing"
    )
    p.add_argument("--times", help="also print the stage times recorded in this file")
    p.set_defaults(func=cmd_report)

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
        p.set_defaults(func=cmd_pipeline)
        if p is compile_:
            continue
        p.add_argument("--pipeline", choices=("training", "evaluation"), default="training")
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="a run setting (parts=2, recipe=release) or any params key, which joins the "
            "run's overrides (train.max_steps=2); VALUE is read as JSON when it parses "
            "(repeatable)",
        )
    run, submit = pipe.choices["run"], pipe.choices["submit"]
    run.add_argument("--local", action="store_true", required=True, help="with kfp.local")
    run.add_argument(
        "--params",
        help="the params.yaml the run starts from, as the image's on a cluster "
        "(default: PROJECT/params.yaml)",
    )
    run.add_argument("--pipeline-root", default="runs/kfp-local", help="artifacts of the run")
    run.add_argument(
        "--cache",
        action="store_true",
        help="Kubeflow's caching: tasks whose inputs did not change since an earlier run "
        "with this pipeline root are not run again (kept in PIPELINE_ROOT-cache)",
    )
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
    add_params_args(p)
    p.add_argument("--dataset", help="data set tag (default: data.source:data.train_format)")
    p.add_argument(
        "--training",
        metavar="TRAIN_JSON",
        help="`omnir1 train`'s train.json: the version joins that MLflow run (params, per-step "
        "metrics, completions) instead of a run of its own",
    )
    p.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra tag on the run and the version, e.g. kfp_run_id=... (repeatable)",
    )
    p.set_defaults(func=cmd_register)
