"""`omnir1 data validate`: Great Expectations suites over the manifests of a data set.

    omnir1 data validate --format revos data/sets/revos --out reports/validation/revos

The loaders' samples become two tables: one row per expression (ids, type, objects, frames, how
much of the clip its ground-truth masks cover) and one row per video (what `omnir1.media.inspect`
finds in its video file or frame folder, and what its audio file holds); a third, one row per
split, is derived from them. Expectation suites (great-expectations 1.x) check schema, ids,
frame counts and sizes, masks, audio, durations and split proportions against the bounds of
`ValidateParams`.

Each table is a pandas data asset of an ephemeral Data Context and runs through a Checkpoint (a
ValidationDefinition of its suite) whose UpdateDataDocsAction builds the context's one Data Docs
site, a local folder: `OUT/data_docs/index.html`, built pass or fail. Beside it, written after
it: `report.json`, the summary the pipeline reads (`ok`, every expectation with the rows that
broke it, a few of them by id), and the three tables as CSV (the row numbers Data Docs lists
index them). The CLI then exits 2 on a failure; `copy_to` also copies the report elsewhere (a
Kubeflow step's outputs are not uploaded when it fails, so the step copies it to the data PVC).

Masks are decoded one frame at a time: beyond the annotation files the loaders read, memory holds
one small row per expression and one frame's masks, whatever the length of the videos.
great_expectations (~3 s to import) is imported only when the suites run.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import operator
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from omnir1.config import ValidateParams
from omnir1.data.records import EXPRESSION_TYPES, Sample
from omnir1.errors import DataError, InputError, MediaError
from omnir1.fsutil import atomic_dir, atomic_path, write_json

# Column -> dtype of each manifest (the names GX's pandas type check reports under pandas 3).
EXPRESSION_SCHEMA = {
    "dataset": "str",
    "split": "str",
    "video_id": "str",
    "expression_id": "str",
    "expression": "str",
    "expression_type": "str",
    "is_null": "bool",
    "n_objects": "int64",
    "num_frames": "int64",
    "mask_coverage": "float64",  # fraction of frames whose mask (objects unioned) is non-empty
    "mask_area_mean": "float64",  # mean area fraction over those frames (0 when there are none)
}
VIDEO_SCHEMA = {
    "split": "str",
    "video_id": "str",
    "source": "str",  # the video file or frame folder inspected, relative to the data root
    "num_frames": "int64",
    "annotated_frames": "int64",  # frames the annotations (and masks) are indexed by
    "frame_files": "int64",  # frame files in the video's frame folder
    "width": "int64",
    "height": "int64",
    "fps": "float64",
    "duration_s": "float64",
    "has_audio": "bool",
    "audio_sample_rate": "int64",  # 0 without audio
    "audio_duration_s": "float64",
    "av_drift_s": "float64",  # |audio duration - video duration|
}
SPLIT_SCHEMA = {
    "split": "str",
    "videos": "int64",
    "expressions": "int64",
    "video_fraction": "float64",
}
SCHEMAS = {"expressions": EXPRESSION_SCHEMA, "videos": VIDEO_SCHEMA, "splits": SPLIT_SCHEMA}
ID_COLUMNS = {
    "expressions": ("split", "video_id", "expression_id"),
    "videos": ("split", "video_id"),
    "splits": ("split",),
}
DATA_DOCS = "data_docs"  # the Data Docs site, under the report folder
SITE = "local_site"  # its name in the Data Context


class ValidationError(DataError):
    """Expectations failed; the message names them and the report that lists their rows."""


# ------------------------------------------------------------------------------- manifests


@dataclass
class Manifests:
    expressions: pd.DataFrame
    videos: pd.DataFrame


def manifest_frame(rows: list[dict], schema: Mapping[str, str]) -> pd.DataFrame:
    """Rows as a table of `schema`'s columns and dtypes, plus `error` (None: no error)."""
    return pd.DataFrame.from_records(rows, columns=[*schema, "error"]).astype(
        {**schema, "error": "str"}
    )


def mask_stats(sample: Sample, height: int, width: int) -> tuple[float, float]:
    """(fraction of frames with a non-empty mask, mean area fraction over those frames), the
    objects unioned. Null expressions are decoded too: stored masks of theirs must be empty."""
    source, n = sample.mask_source, sample.num_frames
    if source is None or n == 0:
        return 0.0, 0.0
    hits, area = 0, 0.0
    for t in range(n):
        masks = source.frame_masks(t, height, width)
        covered = np.count_nonzero(masks.any(axis=0)) if len(masks) else 0
        if covered:
            hits += 1
            area += covered / (height * width)
    return hits / n, (area / hits if hits else 0.0)


def _audio_info(path: Path) -> tuple[int, float | None]:
    """(sample rate, duration in seconds) of the first audio stream of `path`."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MediaError(path, "has no audio stream")
            stream = container.streams.audio[0]
            rate = int(stream.codec_context.sample_rate or 0)
            if stream.duration is not None and stream.time_base is not None:
                return rate, float(stream.duration * stream.time_base)
            if container.duration is not None:
                return rate, container.duration / 1_000_000
            return rate, None
    except av.error.FFmpegError as exc:
        raise MediaError(path, f"cannot open audio ({exc.__class__.__name__}: {exc})") from None


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


_EMPTY = {"str": "", "int64": 0, "float64": math.nan, "bool": False}


def video_row(sample: Sample, root: Path) -> dict:
    """One manifest row for the video of `sample`; media that cannot be read fill `error`."""
    from omnir1.media.video import inspect, list_frame_files

    row: dict[str, Any] = {c: _EMPTY[t] for c, t in VIDEO_SCHEMA.items()}
    row.update(
        split=sample.split,
        video_id=sample.video_id,
        annotated_frames=sample.num_frames,
        error=None,
    )
    try:
        folder = sample.frame_paths[0].parent
        if folder.is_dir():
            row["frame_files"] = len(list_frame_files(folder))
        source = sample.video_path or folder
        row["source"] = _relative(source, root)
        info = inspect(source, folder_fps=sample.fps)
        row.update(
            num_frames=info.num_frames,
            width=info.width,
            height=info.height,
            fps=math.nan if info.fps is None else info.fps,
            duration_s=math.nan if info.duration_s is None else info.duration_s,
            has_audio=sample.audio_path is not None or info.has_audio,
            audio_sample_rate=info.audio_sample_rate or 0,
        )
        if sample.audio_path is not None:  # the soundtrack the model hears
            row["audio_sample_rate"], audio_s = _audio_info(sample.audio_path)
            if audio_s is not None:
                row["audio_duration_s"] = audio_s
                row["av_drift_s"] = abs(audio_s - row["duration_s"])  # NaN if unknown
    except InputError as err:
        row["error"] = str(err)
    return row


def expression_row(sample: Sample, frame_size: tuple[int, int] | InputError) -> dict:
    """One manifest row for `sample`; `frame_size` is (height, width) or why it is unknown."""
    row: dict[str, Any] = {c: _EMPTY[t] for c, t in EXPRESSION_SCHEMA.items()}
    row.update(
        dataset=sample.dataset,
        split=sample.split,
        video_id=sample.video_id,
        expression_id=sample.expression_id,
        expression=sample.expression,
        expression_type=sample.expression_type,
        is_null=sample.is_null,
        n_objects=len(sample.object_ids),
        num_frames=sample.num_frames,
        error=None,
    )
    if isinstance(frame_size, InputError):
        row["error"] = str(frame_size)
        return row
    try:
        row["mask_coverage"], row["mask_area_mean"] = mask_stats(sample, *frame_size)
    except InputError as err:
        row["error"] = str(err)
    return row


def build_manifests(samples: Iterable[Sample], root: str | Path) -> Manifests:
    """The expression and video tables of a stream of samples (one pass, masks on demand)."""
    root = Path(root)
    expressions, videos = [], []
    sizes: dict[tuple[str, str], tuple[int, int] | InputError] = {}
    for sample in samples:
        key = (sample.split, sample.video_id)
        if key not in sizes:
            videos.append(video_row(sample, root))
            try:
                sizes[key] = sample.frame_size()
            except InputError as err:
                sizes[key] = err
        expressions.append(expression_row(sample, sizes[key]))
    return Manifests(
        manifest_frame(expressions, EXPRESSION_SCHEMA), manifest_frame(videos, VIDEO_SCHEMA)
    )


def load_manifests(fmt: str, root: str | Path, *, progress: bool = False) -> Manifests:
    from tqdm import tqdm

    from omnir1.benchmarks.registry import load

    samples = tqdm(load(fmt, root), desc="manifests", unit="expr", disable=not progress)
    return build_manifests(samples, root)


def split_table(manifests: Manifests) -> pd.DataFrame:
    """One row per split: videos, expressions and the split's fraction of all videos."""
    v, e = manifests.videos, manifests.expressions
    if "split" not in v or "split" not in e:
        return manifest_frame([], SPLIT_SCHEMA).drop(columns="error")
    table = pd.DataFrame(
        {"videos": v.groupby("split").size(), "expressions": e.groupby("split").size()}
    )
    table = table.fillna(0).astype("int64").rename_axis("split").reset_index()
    total = table["videos"].sum()
    table["video_fraction"] = table["videos"] / total if total else 0.0
    return table.astype(SPLIT_SCHEMA)


# ---------------------------------------------------------------------------------- suites


# What each check means, for the report; the bounds themselves are in its kwargs.
MEANING = {
    "rows": "the table has rows",
    "columns": "every manifest column is present",
    "type": "the column has its manifest type",
    "readable": "its files decode (`error` says why not; the checks below skip such rows)",
    "expressions.ids_unique": "(video_id, expression_id) is unique",
    "expressions.video_known": "every expression's video is in the videos table",
    "expressions.type_known": "the expression type is a known one",
    "expressions.mask_present": "an expression with a referent has a mask in some frame",
    "expressions.null_empty": "a null expression (referent absent) has empty masks",
    "expressions.mask_area": "masks do not cover (almost) the whole frame: inverted?",
    "videos.ids_unique": "video_id is unique (no video in two splits)",
    "videos.frames": "the frame count is within bounds",
    "videos.frames_match_video": "the video has as many frames as the annotations",
    "videos.frames_match_folder": "the frame folder has as many frames as the annotations",
    "videos.width": "the width in px is within bounds",
    "videos.height": "the height in px is within bounds",
    "videos.fps": "the frame rate is within bounds",
    "videos.duration": "the duration in s is within bounds",
    "videos.audio_present": "the video has audio",
    "videos.audio_rate": "the audio has the expected sample rate",
    "videos.av_drift": "audio and video last as long as each other",
    "splits.present": "every expected split is present",
    "splits.train_fraction": "the training split holds its share of the videos",
}


@dataclass(frozen=True)
class Check:
    """One expectation, named and described in words a data owner understands."""

    suite: str  # the table it runs on
    name: str
    expectation: Any  # a great_expectations.expectations.Expectation
    where: tuple[str, Any] | None = None  # (column, value): only rows where column == value

    @property
    def key(self) -> str:
        return f"{self.suite}.{self.name}"

    @property
    def description(self) -> str:
        return MEANING.get(self.key) or MEANING[self.name.split(".")[0]]

    @property
    def where_text(self) -> str | None:
        return None if self.where is None else f"{self.where[0]} == {self.where[1]!r}"


def build_checks(fmt: str, config: ValidateParams, video_ids: Iterable[str]) -> list[Check]:
    """The expectations of the three suites; `video_ids` are the ids of the videos table."""
    import great_expectations as gx
    from great_expectations.expectations.row_conditions import Column

    c = config
    checks: list[Check] = []

    def add(suite: str, name: str, kind: str, where=None, decoded=False, **kwargs) -> None:
        # `decoded`: a row whose files did not decode fails `readable` once, not every check
        # of the values it could not measure
        conditions = [Column("error").is_null()] if decoded else []
        if where is not None:
            conditions.append(Column(where[0]) == where[1])
        if conditions:
            kwargs["row_condition"] = functools.reduce(operator.and_, conditions)
        check = Check(suite, name, None, where)
        kwargs["notes"] = f"`{check.key}`: {check.description}"  # shown in Data Docs
        expectation = getattr(gx.expectations, f"Expect{kind}")(**kwargs)
        checks.append(Check(suite, name, expectation, where))

    def between(suite: str, name: str, column: str, low, high, **kwargs) -> None:
        kwargs.update(column=column, min_value=low, max_value=high)
        add(suite, name, "ColumnValuesToBeBetween", decoded=suite != "splits", **kwargs)

    for suite in ("expressions", "videos"):
        schema = SCHEMAS[suite]
        add(suite, "rows", "TableRowCountToBeBetween", min_value=1)
        add(suite, "columns", "TableColumnsToMatchSet", column_set=list(schema), exact_match=False)
        for col, dtype in schema.items():
            add(suite, f"type.{col}", "ColumnValuesToBeOfType", column=col, type_=dtype)
        add(suite, "readable", "ColumnValuesToBeNull", column="error")

    x, v, s = "expressions", "videos", "splits"
    add(x, "ids_unique", "CompoundColumnsToBeUnique", column_list=["video_id", "expression_id"])
    known = sorted(set(video_ids))
    add(x, "video_known", "ColumnValuesToBeInSet", column="video_id", value_set=known)
    types = list(EXPRESSION_TYPES)
    add(x, "type_known", "ColumnValuesToBeInSet", column="expression_type", value_set=types)
    between(x, "mask_present", "mask_coverage", 0, 1, strict_min=True, where=("is_null", False))
    between(x, "null_empty", "mask_coverage", 0, 0, where=("is_null", True))
    between(x, "mask_area", "mask_area_mean", 0, c.max_mask_area)

    add(v, "ids_unique", "ColumnValuesToBeUnique", column="video_id")
    exact = c.frames_per_video.get(fmt)
    low, high = (exact, exact) if exact is not None else (c.min_frames, c.max_frames)
    between(v, "frames", "num_frames", low, high)
    for name, col in (("video", "num_frames"), ("folder", "frame_files")):
        pair = {"column_A": col, "column_B": "annotated_frames"}
        add(v, f"frames_match_{name}", "ColumnPairValuesToBeEqual", decoded=True, **pair)
    between(v, "width", "width", c.min_width, c.max_width)
    between(v, "height", "height", c.min_height, c.max_height)
    between(v, "fps", "fps", c.min_fps, c.max_fps)
    between(v, "duration", "duration_s", c.min_duration_s, c.max_duration_s)
    if c.require_audio:
        audio = {"column": "has_audio", "value_set": [True]}
        add(v, "audio_present", "ColumnValuesToBeInSet", decoded=True, **audio)
    rate = {"column": "audio_sample_rate", "value_set": [c.audio_sample_rate]}
    add(v, "audio_rate", "ColumnValuesToBeInSet", ("has_audio", True), decoded=True, **rate)
    between(v, "av_drift", "av_drift_s", 0, c.max_av_drift_s, where=("has_audio", True))

    if expected := list(c.splits.get(fmt, ())):
        add(s, "present", "ColumnDistinctValuesToContainSet", column="split", value_set=expected)
    share = (c.min_train_fraction, c.max_train_fraction)
    between(s, "train_fraction", "video_fraction", *share, where=("split", c.train_split))
    return checks


def _context(docs: Path | None = None):
    """An ephemeral GX context (stores in memory, no analytics, no progress bars); with `docs`,
    its one Data Docs site is that local folder."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    sites = {}
    if docs is not None:
        sites[SITE] = {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs.absolute()),  # GX refuses relative ones
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        data_docs_sites=sites,
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def run_suites(
    manifests: Manifests,
    fmt: str,
    config: ValidateParams | None = None,
    docs: str | Path | None = None,
) -> list[dict]:
    """Validate the manifests; one outcome (see `_outcome`) per expectation, in suite order.

    Each table runs through its own Checkpoint (a pandas DataFrame asset takes its data as a
    batch parameter, one per Checkpoint run), all under one run id; with `docs`, each
    Checkpoint's UpdateDataDocsAction adds its result to the Data Docs site in that folder."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier

    config = config or ValidateParams()
    tables = {
        "expressions": manifests.expressions.reset_index(drop=True),
        "videos": manifests.videos.reset_index(drop=True),
        "splits": split_table(manifests),
    }
    videos = tables["videos"]
    checks = build_checks(fmt, config, videos.get("video_id", ()))
    context = _context(None if docs is None else Path(docs))
    source = context.data_sources.add_pandas(fmt)
    run_id = RunIdentifier(run_name=f"validate-{fmt}", run_time=dt.datetime.now(dt.UTC))
    outcomes = []
    for name, table in tables.items():
        mine = [c for c in checks if c.suite == name]
        suite = context.suites.add(
            gx.ExpectationSuite(name=name, expectations=[c.expectation for c in mine])
        )
        batches = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe("all")
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batches, suite=suite)
        )
        actions = [] if docs is None else [UpdateDataDocsAction(name="docs", site_names=[SITE])]
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=f"{fmt}.{name}",
                validation_definitions=[definition],
                actions=actions,
                result_format="COMPLETE",  # every failing row's index, for the examples
            )
        )
        run = checkpoint.run(batch_parameters={"dataframe": table}, run_id=run_id)
        (result,) = run.run_results.values()
        by_id = {r.expectation_config.id: r for r in result.results}
        for check, expectation in zip(mine, suite.expectations, strict=True):
            outcomes.append(_outcome(check, by_id[expectation.id], table, config.examples))
    return outcomes


# ---------------------------------------------------------------------------------- report


def _plain(obj: Any) -> Any:
    """JSON-ready copy: numpy scalars to Python, NaN to None, anything else odd to str."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | np.ndarray):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    return str(obj)


def _short(value: Any, limit: int = 10) -> Any:
    if isinstance(value, list) and len(value) > limit:
        return [*value[:limit], f"... {len(value) - limit} more"]
    return value


def _exception(info: Mapping | None) -> str | None:
    # GX gives either one {raised_exception, exception_message} or one such dict per metric
    if not info:
        return None
    if "raised_exception" in info:
        return info.get("exception_message") if info["raised_exception"] else None
    found = {
        v.get("exception_message")
        for v in info.values()
        if isinstance(v, Mapping) and v.get("raised_exception")
    }
    return "; ".join(sorted(m for m in found if m)) or None


def _columns(kwargs: Mapping) -> list[str]:
    cols = [kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs]
    return cols + list(kwargs.get("column_list", []))


def _outcome(check: Check, result: Any, table: pd.DataFrame, n_examples: int) -> dict:
    res = result.result or {}
    kwargs = {
        k: _short(v)
        for k, v in result.expectation_config.kwargs.items()
        if k not in ("batch_id", "row_condition", "condition_parser")
    }
    out = {
        "key": check.key,
        "suite": check.suite,
        "name": check.name,
        "description": check.description,
        "expectation": result.expectation_config.type,
        "kwargs": kwargs,
        "where": check.where_text,
        "success": bool(result.success),
        "rows_checked": res.get("element_count"),
        "rows_failed": res.get("unexpected_count"),
        "observed": res.get("observed_value"),
        "details": {k: res[k] for k in ("details", "partial_missing_list") if k in res},
        "exception": _exception(result.exception_info),
        "examples": [],
    }
    index = res.get("unexpected_index_list") or []
    if not out["success"] and index and all(isinstance(i, int | np.integer) for i in index):
        wanted = [*ID_COLUMNS[check.suite], *_columns(kwargs)]
        if check.where is not None:
            wanted.append(check.where[0])
        cols = [c for c in dict.fromkeys(wanted) if c in table]
        rows = table.loc[list(index[:n_examples]), cols]
        out["examples"] = json.loads(rows.to_json(orient="records"))
    return _plain(out)


def failure_line(outcome: Mapping) -> str:
    """`videos.audio_rate (expect_column_values_to_be_in_set audio_sample_rate): 1 of 24 rows`"""
    cols = " ".join(_columns(outcome["kwargs"]))
    what = f"{outcome['key']} ({outcome['expectation']}{' ' + cols if cols else ''})"
    if outcome["exception"]:
        return f"{what}: could not run: {outcome['exception']}"
    if outcome["rows_failed"] is not None:
        return f"{what}: {outcome['rows_failed']} of {outcome['rows_checked']} rows"
    missing = outcome["details"].get("partial_missing_list")
    if missing:
        return f"{what}: missing {missing}"
    return f"{what}: observed {outcome['observed']}"


def make_report(
    fmt: str,
    root: str | Path,
    manifests: Manifests,
    outcomes: list[dict],
    config: ValidateParams,
    seconds: Mapping[str, float] | None = None,
) -> dict:
    failed = [o for o in outcomes if not o["success"]]
    return {
        "format": fmt,
        "root": str(root),
        "ok": not failed,
        "expectations": len(outcomes),
        "failed": len(failed),
        "failures": [failure_line(o) for o in failed],
        "data_docs": f"{DATA_DOCS}/index.html",  # relative to the report folder
        "rows": {
            "expressions": len(manifests.expressions),
            "videos": len(manifests.videos),
            "splits": len(split_table(manifests)),
        },
        "seconds": {k: round(v, 3) for k, v in (seconds or {}).items()},
        "config": _plain(config.model_dump(mode="json")),
        "results": outcomes,
    }


def write_report(report: Mapping, manifests: Manifests, out: str | Path) -> dict[str, Path]:
    """report.json and the three manifests as CSV (the tables the suites ran on: Data Docs
    name their failing rows by row number), each written atomically."""
    out = Path(out)
    paths = {"json": out / "report.json"}
    tables = {
        "expressions": manifests.expressions,
        "videos": manifests.videos,
        "splits": split_table(manifests),
    }
    for name, table in tables.items():
        paths[name] = out / f"{name}.csv"
        with atomic_path(paths[name]) as tmp:
            table.to_csv(tmp, index=False)
    write_json(paths["json"], report)  # last: the summary names a complete report
    return paths


def copy_report(out: str | Path, dest: str | Path) -> Path:
    """The report of `out` (Data Docs, report.json, the manifests) as the folder `dest`,
    replaced whole; what else `out` holds stays."""
    out, dest = Path(out), Path(dest)
    with atomic_dir(dest) as tmp:
        shutil.copytree(out / DATA_DOCS, tmp / DATA_DOCS)
        for name in ("expressions.csv", "videos.csv", "splits.csv", "report.json"):
            shutil.copy2(out / name, tmp / name)
    return dest


def summary(report: Mapping) -> dict:
    """What the CLI prints: the report without the per-expectation results."""
    return {k: v for k, v in report.items() if k not in ("results", "config")}


def raise_on_failure(report: Mapping, out: str | Path) -> None:
    if not report["ok"]:
        raise ValidationError(
            report["root"],
            f"{report['failed']} of {report['expectations']} expectations failed: "
            + "; ".join(report["failures"])
            + f" (Data Docs: {Path(out) / DATA_DOCS / 'index.html'})",
        )


def validate_dataset(
    fmt: str,
    root: str | Path,
    out: str | Path,
    config: ValidateParams | None = None,
    *,
    progress: bool = False,
    copy_to: str | Path | None = None,
) -> dict:
    """The `validate` stage: manifests, suites through Checkpoints, Data Docs and report files
    under `out` (and a copy of them as `copy_to`), all written whether the data pass or not;
    returns the report (its `ok` says whether every expectation passed)."""
    config = config or ValidateParams()
    out = Path(out)
    start = time.perf_counter()
    manifests = load_manifests(fmt, root, progress=progress)
    built = time.perf_counter()
    with atomic_dir(out / DATA_DOCS) as docs:  # a rerun's site replaces the last one whole
        outcomes = run_suites(manifests, fmt, config, docs=docs)
    seconds = {"manifests": built - start, "suites": time.perf_counter() - built}
    report = make_report(fmt, root, manifests, outcomes, config, seconds)
    write_report(report, manifests, out)
    if copy_to is not None:
        copy_report(out, copy_to)
    return report
