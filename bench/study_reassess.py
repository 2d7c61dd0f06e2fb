"""A finished `omnir1 study` read again with more sampled answers: each seed's System 1 before
GRPO (seed_N/warm) and after (seed_N/grpo/model), assessed on the study's held-out split with
`--per-sample` answers per expression and sampling seeds 5000 + seed (never the study's own).
Two answers per expression (the study's default) misread a sampling policy by a few points of
hit rate; this gives the steadier reading of docs/training.md's 8-sample tables without
training anything again.

    OMP_NUM_THREADS=1 python bench/study_reassess.py --study REPORTS/study \
        --recipe configs/params/study_turns.yaml [--seeds 0 1 2] [--per-sample 8]

Prints one line per model and writes STUDY/reassess_<per-sample>.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

FIGURES = ("reward", "keyframe_hit_rate", "box_iou", "format_rate", "keyframes_per_answer")


def main() -> None:
    import torch

    from omnir1.config import load_params
    from omnir1.fsutil import read_json, write_json
    from omnir1.rl.study import _assess_folder, _split_inputs

    ap = argparse.ArgumentParser()
    ap.add_argument("--study", required=True, help="an `omnir1 study --out` folder")
    ap.add_argument("--recipe", nargs="*", default=[], help="the study's --recipe files")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--per-sample", type=int, default=8)
    a = ap.parse_args()
    torch.set_num_threads(1)

    study = Path(a.study)
    report = read_json(study / "study.json")
    params = load_params(a.params, a.recipe)
    data = report["data"]
    heldout = _split_inputs(
        params, data["format"], Path(data["path"]), data["heldout_split"], report["heldout_samples"]
    )
    result: dict = {"per_sample": a.per_sample, "heldout": len(heldout[0]), "seeds": {}}
    for seed in a.seeds:
        folders = {"before": study / f"seed_{seed}" / "warm"}
        folders["after"] = study / f"seed_{seed}" / "grpo" / "model"
        result["seeds"][str(seed)] = {}
        for when, folder in folders.items():
            assessment, _ = _assess_folder(
                params, folder, *heldout, per_sample=a.per_sample, seed=5000 + seed
            )
            figures = {f: round(assessment.to_dict()[f], 3) for f in FIGURES}
            result["seeds"][str(seed)][when] = figures
            print(f"seed {seed} {when}", json.dumps(figures), flush=True)
    write_json(study / f"reassess_{a.per_sample}.json", result)


if __name__ == "__main__":
    main()
