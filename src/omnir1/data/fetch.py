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

OUT is replaced only by a complete copy (a staging folder renamed at the end). A copy the loader
cannot read fails the stage with the problems named (exit 2); the check report goes to METRICS.
An external source is not watched by DVC: point `data.sources` at a new, versioned prefix (or
run `dvc repro -f -s data@FORMAT`) when its contents change.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from omnir1.errors import DataError
from omnir1.fsutil import atomic_dir, write_json


def source_of(params, fmt: str) -> str:
    return params.data.sources.get(fmt, params.data.source)


def fetch_dataset(params, fmt: str, out: str | Path, *, progress: bool = True) -> dict:
    """Bring the data set of `fmt` to `out`; the check report (with where it came from)."""
    from omnir1.data.check import check_dataset
    from omnir1.s3 import download_prefix, is_s3

    out = Path(out)
    source = source_of(params, fmt)
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
        synthesize(cfg, out, overwrite=True, progress=progress)
    elif is_s3(source):
        download_prefix(source, out)
    else:
        folder = Path(source)
        if not folder.is_dir():
            raise DataError(folder, "data set folder not found", f"data.sources.{fmt}")
        if out.resolve() == folder.resolve():
            raise DataError(folder, "source and --out are the same folder", "--out")
        with atomic_dir(out) as staging:
            shutil.copytree(folder, staging, symlinks=False, dirs_exist_ok=True)
    report = check_dataset(fmt, out).to_dict()
    report["source"] = source
    return report


def fetch_to_files(
    params, fmt: str, out: str | Path, metrics: str | Path | None, *, progress: bool = True
) -> dict:
    report = fetch_dataset(params, fmt, out, progress=progress)
    if metrics is not None:
        write_json(metrics, report)
    if not report["ok"]:
        problems = "; ".join(report["problems"][:5])
        source = report["source"]
        raise DataError(out, f"the {fmt} data set from {source} is unreadable: {problems}")
    return report
