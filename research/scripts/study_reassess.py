"""A finished `omnir1 study` read again with more sampled answers: each seed's System 1 before
GRPO (seed_N/warm) and after (seed_N/grpo/model), assessed on the study's held-out split with
`--per-sample` answers per expression and sampling seeds 5000 + seed (never the study's own).
Two answers per expression (the study's default) misread a sampling policy by a few points of
hit rate; this gives the steadier reading of research/LOG.md's 8-sample tables without
training anything again.

    OMP_NUM_THREADS=1 python research/scripts/study_reassess.py --study REPORTS/study \
        --recipe research/recipes/study_turns.yaml [--seeds 0 1 2] [--per-sample 8]

Each seed's two assessments go to STUDY/reassess_<per-sample>/seed_N.json (a seed whose file
exists is not assessed again, so seeds can run as separate processes, one per core, and a last
call with every seed only reports). Then every seed found there is reported: its figures and
each change with the study's 95 % interval (omnir1.experimental.study.paired_intervals), in a
table on stdout and in STUDY/reassess_<per-sample>.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    import torch

    from omnir1.experimental.params import load_study_params
    from omnir1.experimental.study import (
        HEADLINE,
        NAMES,
        _assess_folder,
        _split_inputs,
        paired_intervals,
    )
    from omnir1.fsutil import read_json, write_json

    every_figure = (*HEADLINE, "keyframes_per_answer")  # the study's figures, and one more

    ap = argparse.ArgumentParser()
    ap.add_argument("--study", required=True, help="an `omnir1 study --out` folder")
    ap.add_argument("--recipe", nargs="*", default=[], help="the study's --recipe files")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--per-sample", type=int, default=8)
    a = ap.parse_args()
    torch.set_num_threads(1)

    study = Path(a.study)
    folder = study / f"reassess_{a.per_sample}"
    todo = [seed for seed in a.seeds if not (folder / f"seed_{seed}.json").is_file()]
    if todo:
        report = read_json(study / "study.json")
        params = load_study_params(a.params, a.recipe)
        data = report["data"]
        heldout = _split_inputs(
            params,
            data["format"],
            Path(data.get("heldout_path", data["path"])),
            data["heldout_split"],
            report["heldout_samples"],
        )
    for seed in todo:
        models = {"before": study / f"seed_{seed}" / "warm"}
        models["after"] = study / f"seed_{seed}" / "grpo" / "model"
        run = {}
        for when, models_dir in models.items():
            assessment, _ = _assess_folder(
                params, models_dir, *heldout, per_sample=a.per_sample, seed=5000 + seed
            )
            run[when] = assessment.to_dict()
            figures = {f: round(run[when][f], 3) for f in every_figure}
            print(f"seed {seed} {when}", json.dumps(figures), flush=True)
        write_json(folder / f"seed_{seed}.json", run)

    runs = {
        path.stem.removeprefix("seed_"): read_json(path)
        for path in sorted(folder.glob("seed_*.json"))
    }
    intervals = paired_intervals(runs) or {}
    seeds = list(runs)
    # seeds assessed by an older version lack the figures added since
    sides = [side for run in runs.values() for side in run.values()]
    figures = [f for f in every_figure if all(f in side for side in sides)]
    print(f"\n{a.per_sample} sampled answers per held-out expression; 95 % intervals:\n")
    print("| metric | " + " | ".join(f"seed {s} before → after [Δ interval]" for s in seeds) + " |")
    print("|---|" + "---|" * len(seeds))
    for key in (f for f in figures if f in NAMES):
        cells = []
        for s in seeds:
            before, after = runs[s]["before"][key], runs[s]["after"][key]
            cell = f"{before:.3f} → {after:.3f}"
            if key in intervals:
                low, high = intervals[key][s]
                cell += f" [{low:+.3f}, {high:+.3f}]"
            cells.append(cell)
        print(f"| {NAMES[key]} | " + " | ".join(cells) + " |")
    for key, by_run in intervals.items():
        low, high = by_run["mean"]
        print(f"mean over seeds, {NAMES[key]}: [{low:+.3f}, {high:+.3f}]")
    summary = {
        "per_sample": a.per_sample,
        "seeds": {s: {w: {f: r[w][f] for f in figures} for w in r} for s, r in runs.items()},
        "intervals": intervals,
    }
    write_json(study / f"reassess_{a.per_sample}.json", summary)


if __name__ == "__main__":
    main()
