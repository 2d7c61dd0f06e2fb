"""Does GRPO improve a System 1 that already uses the frames? GRPO from a given model folder's
System 1 (e.g. the end of a curriculum: research/scripts/system1_frames.py --save, or the
warm start of `omnir1 study` with research/recipes/study_curriculum.yaml) against a given
warm-started grounder, with the study's held-out assessment before and after and its two blind
baselines.

    OMP_NUM_THREADS=1 python research/scripts/grpo_from.py --system1 MODELS --grounder MODELS
        --data DIR --out DIR [--recipe research/recipes/study_turns.yaml ...] [--kinds appearance]
        [--steps 60] [--lr 2e-4] [--prompts-per-step 1] [--limit 160] [--split valid]
        [--per-sample 4] [--seed 0]

Held-out: the first `--limit` expressions of the `--split` split of `--kinds` (`--split train`:
the expressions GRPO trains on, to see whether it improves on its own prompts); the baselines'
answers come from the training split's targets of the same kinds (omnir1.experimental.assess).
Writes OUT/result.json and prints one line per assessment.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

RECIPES = ["study_turns.yaml", "study_8s.yaml", "study_frames.yaml"]
FIGURES = ("reward", "keyframe_hit_rate", "box_iou", "format_rate")


def main() -> None:
    import torch

    from omnir1.experimental.params import load_study_params
    from omnir1.experimental.study import _assess_folder, _engine, _split_inputs, blind_baselines
    from omnir1.fsutil import write_json
    from omnir1.models.loading import Manifest, link_tree, load_models, write_model_folder
    from omnir1.rl.train import run_training

    ap = argparse.ArgumentParser()
    ap.add_argument("--system1", required=True, help="model folder whose System 1 GRPO starts from")
    ap.add_argument("--grounder", required=True, help="model folder whose grounder is System 2's")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--recipe", nargs="+", default=[f"configs/params/{r}" for r in RECIPES])
    ap.add_argument("--kinds", nargs="+", default=["appearance"], help="train.kinds")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--prompts-per-step", type=int, default=1)
    ap.add_argument("--limit", type=int, default=160)
    ap.add_argument("--split", default="valid", help="assessed split ('train': GRPO's own)")
    ap.add_argument("--per-sample", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)

    params = load_study_params("params.yaml", a.recipe)
    params.train.kinds = a.kinds
    params.train.max_steps, params.train.learning_rate = a.steps, a.lr
    params.train.prompts_per_step, params.train.seed = a.prompts_per_step, a.seed
    out, data = Path(a.out), Path(a.data)
    start = out / "start"
    if not (start / "models.json").is_file():
        grounder = Manifest.read(a.grounder).grounder
        write_model_folder(
            a.system1, start, name="grpo-from", grounder=lambda f: link_tree(grounder, f)
        )
    heldout = _split_inputs(params, "revos", data, a.split, a.limit)
    train_samples, _, train_contexts = _split_inputs(params, "revos", data, "train")
    targets = [c.target for c in train_contexts]
    ignore, words = blind_baselines(
        params, _engine(params, load_models(start)), data, heldout, train_samples, targets
    )
    result: dict = {"args": vars(a), "heldout": len(heldout[0])}
    result["ignore_video"], result["read_words"] = ignore.to_dict(), words.to_dict()
    before, _ = _assess_folder(params, start, *heldout, per_sample=a.per_sample, seed=1000 + a.seed)
    result["before"] = before.to_dict()
    t0 = time.perf_counter()
    train = run_training(
        params,
        data=data,
        fmt="revos",
        models_dir=start,
        out=out / "grpo",
        resume="auto",
        samples=train_samples,  # of --kinds
    )
    result["grpo_seconds"] = time.perf_counter() - t0
    result["history"] = train.get("history", [])
    after, _ = _assess_folder(
        params, out / "grpo" / "model", *heldout, per_sample=a.per_sample, seed=1000 + a.seed
    )
    result["after"] = after.to_dict()
    for key in ("ignore_video", "read_words", "before", "after"):
        print(key, json.dumps({f: round(result[key][f], 3) for f in FIGURES}), flush=True)
    write_json(out / "result.json", result)


if __name__ == "__main__":
    main()
