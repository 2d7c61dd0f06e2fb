"""`omnir1 data fetch`: the pipeline's data stage. A data set in one of the three official
layouts arrives at OUT from where params.yaml says, and is then checked the way training and
evaluation read it.

    omnir1 data fetch --format revos --out data/sets/revos --params params.yaml
                      [--metrics metrics/data_revos.json]

Sources (`data.sources.FORMAT`, else `data.source`):
- `synth`: the synthetic data set of `data.synth` (omnir1.data.synth);
- an `s3://bucket/prefix` URL: every object under the prefix, through omnir1.s3 (retries, clear
  errors for a missing bucket, key or credentials; AWS_ENDPOINT_URL for MinIO and the like);
- a local folder (absolute, or relative to the working directory): copied, symlinks resolved.

OUT is replaced only by a complete copy that the loader can read: the copy is made and checked
in a staging folder, which replaces OUT only when the check passes. A copy the loader cannot
read fails the stage with the problems named (exit 2), the report goes to METRICS, and OUT
keeps the data set it held.
DVC cannot see into an external source, so the `source` stage before this one runs on every
`dvc repro` (`omnir1 data source`: a listing, never a copy) and writes what the source holds
now (`source_key`); the data stage depends on that file, so a changed S3 prefix or folder makes
it stale, and an unchanged one does not.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from omnir1.errors import DataError
from omnir1.fsutil import atomic_dir, write_json


def source_of(params, fmt: str) -> str:
    return params.data.sources.get(fmt, params.data.source)


def source_key(params, fmt: str) -> dict:
    """What the source of `fmt` holds now, as a digest that changes when its contents do: the
    generating settings of the synthetic set; the keys, sizes and ETags under an s3:// prefix;
    the relative paths, sizes and modification times under a folder. A listing, no copy."""
    import hashlib
    import json

    from omnir1.s3 import is_s3, list_objects

    source = source_of(params, fmt)
    if source == "synth":
        listing = {"format": fmt, "synth": params.data.synth.model_dump(mode="json")}
    elif is_s3(source):
        listing = [[o["key"], o["size"], o["etag"]] for o in list_objects(source)]
    else:
        folder = Path(source)
        if not folder.is_dir():
            raise DataError(folder, "data set folder not found", f"data.sources.{fmt}")
        listing = [
            [p.relative_to(folder).as_posix(), (st := p.stat()).st_size, st.st_mtime_ns]
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        ]
    canonical = json.dumps(listing, sort_keys=True, separators=(",", ":"))
    return {
        "format": fmt,
        "source": source,
        "files": len(listing) if isinstance(listing, list) else None,
        "sha256": hashlib.sha256(canonical.encode()).hexdigest(),
    }


def fetch_dataset(params, fmt: str, out: str | Path, *, progress: bool = True) -> dict:
    """Bring the data set of `fmt` to `out`; the check report (with where it came from)."""
    from omnir1.data.check import check_dataset
    from omnir1.s3 import is_mirrored, is_s3

    out = Path(out)
    source = source_of(params, fmt)
    if is_s3(source) and is_mirrored(source, out):  # the objects it was checked as, unchanged
        report = {**check_dataset(fmt, out).to_dict(), "source": source}
        if not report["ok"]:
            raise UnreadableDataSetError(out, fmt, report)
        return report
    with atomic_dir(out) as staging:
        _bring(params, fmt, source, staging, out, progress)
        report = check_dataset(fmt, staging).to_dict()
        # the problems name files as they will be once the copy is in place
        report["problems"] = [p.replace(str(staging), str(out)) for p in report["problems"]]
        report["source"] = source
        if not report["ok"]:
            raise UnreadableDataSetError(out, fmt, report)
    return report


class UnreadableDataSetError(DataError):
    """The fetched copy failed its check (OUT was left as it was); `report` says why."""

    def __init__(self, out: Path, fmt: str, report: dict):
        problems = "; ".join(report["problems"][:5])
        message = f"the {fmt} data set from {report['source']} is unreadable: {problems}"
        super().__init__(out, message)
        self.report = report


def _bring(params, fmt: str, source: str, staging: Path, out: Path, progress: bool) -> None:
    """The data set of `fmt` from `source` into the (empty) folder `staging`."""
    from omnir1.s3 import download_prefix, is_s3

    if source == "synth":
        from omnir1.data.synth import SynthConfig, synthesize

        synth = params.data.synth
        cfg = SynthConfig(
            format=fmt,
            videos=synth.videos,
            seed=synth.seed,
            workers=synth.workers,
            background=synth.background,
            object_scale=synth.object_scale,
            visit_fraction=synth.visit_fraction,
            layout=synth.layout,
            duration_s=synth.duration_s,
        )
        synthesize(cfg, staging, overwrite=True, progress=progress)
    elif is_s3(source):
        download_prefix(source, staging)
    else:
        folder = Path(source)
        if not folder.is_dir():
            raise DataError(folder, "data set folder not found", f"data.sources.{fmt}")
        if out.resolve() == folder.resolve():
            raise DataError(folder, "source and --out are the same folder", "--out")
        shutil.copytree(folder, staging, symlinks=False, dirs_exist_ok=True)


def fetch_to_files(
    params, fmt: str, out: str | Path, metrics: str | Path | None, *, progress: bool = True
) -> dict:
    try:
        report = fetch_dataset(params, fmt, out, progress=progress)
    except UnreadableDataSetError as err:
        if metrics is not None:
            write_json(metrics, err.report)
        raise
    if metrics is not None:
        write_json(metrics, report)
    return report
