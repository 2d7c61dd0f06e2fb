"""`omnir1 train`: GRPO of System 1 on a data set, from params.yaml.

    omnir1 train --data DIR --format revos --models DIR --out DIR [--params params.yaml]
                 [--resume [auto]] [--checkpoints DIR] [--max-steps N]

Writes OUT/checkpoints/ (TRL checkpoints every `train.save_steps`: model, optimizer, scheduler,
RNG states, trainer state with the data position; complete once CHECKPOINT_DONE is written),
and when training ends a complete model folder OUT/model/ (models.json; the trained System 1;
the frozen grounder and SAM2 of the base folder, hard-linked where the file system allows) and
OUT/train.json (steps, time, last rewards).
`--resume` continues from the newest complete checkpoint in OUT/checkpoints (or --checkpoints),
and gives the same next steps as an uninterrupted run. `--resume auto` does so only when the
checkpoints were written by a run of the same inputs (`run_fingerprint`: the training params,
the data, the model files) and otherwise starts afresh, clearing them:
what a rerun after a kill needs (the DVC train stage, a resubmitted pipeline) without ever
continuing another run's training.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from omnir1.errors import DataError
from omnir1.fsutil import write_json
from omnir1.rl.checkpoints import (
    checkpoint_step,
    claim_checkpoints,
    latest_checkpoint,
    run_fingerprint,
)

log = logging.getLogger(__name__)


def trainable_samples(fmt: str, data: Path, split: str = "train") -> list:
    """The split's expressions that have a referent: null and excluded ones give no reward
    signal for keyframes and boxes."""
    from omnir1.benchmarks.registry import load

    samples = [
        s
        for s in load(fmt, data)
        if s.split == split and not s.is_null and s.expression_type != "excluded"
    ]
    if not samples:
        raise DataError(data, f"no {split!r} expressions with a referent to train on")
    return samples


STEP_TIMES = ("time/generation_s", "time/system2_s", "time/reward_s", "time/update_s")


def training_curve(log_history: list[dict]) -> list[dict]:
    """One row per logged training step: step, total reward (the rewards summed), every
    reward's mean and spread, KL, completion length, the step-time split (DVC plots it)."""
    rows = []
    for entry in log_history:
        if "loss" not in entry or "step" not in entry:
            continue
        row = {"step": entry["step"]}
        row.update({k: v for k, v in entry.items() if isinstance(v, int | float) and k != "step"})
        if "reward" not in row:
            means = [
                v for k, v in entry.items() if k.startswith("rewards/") and k.endswith("/mean")
            ]
            row["reward"] = sum(means)
        rows.append(row)
    return rows


def run_training(
    params,
    *,
    data: str | Path,
    fmt: str,
    models_dir: str | Path,
    out: str | Path,
    resume: bool | Literal["auto"] = False,
    checkpoints: str | Path | None = None,
    max_steps: int | None = None,
    device: str = "cpu",
    system2_url: str | None = None,
    system2_root: str | Path | None = None,
    shards: str | Path | None = None,
    samples: Sequence | None = None,
) -> dict:
    """GRPO of System 1 (see the module docstring). System 2 runs in this process, or in the
    System-2 service at `system2_url` (then only System 1 is loaded here). System 1's clips
    come from the preprocessed `shards` when given, else are decoded once per video.
    `samples`: the expressions to train on (default: `trainable_samples` of the train split)."""
    import torch
    from datasets import Dataset

    from omnir1.models.loading import (
        check_thinker_folder,
        freeze_towers,
        load_models,
        part_saver,
        stored_dtype,
        write_model_folder,
    )
    from omnir1.rl.engine import engine_from_params
    from omnir1.rl.inputs import LazyContexts, LazyPrompts, SampleViews
    from omnir1.rl.rewards import check_reward_names
    from omnir1.rl.trainer import GroupRewards, VideoGRPOTrainer
    from omnir1.systems.reasoning import GlobalReasoner

    check_reward_names(params.rewards.names)  # before anything loads
    data, out = Path(data), Path(out)
    if device.startswith("cuda") and "LOCAL_RANK" in os.environ:  # one GPU per process
        device = f"cuda:{os.environ['LOCAL_RANK']}"
    s1 = params.system1
    # System 1's trainable weights are float32 masters whatever the checkpoint stores (bf16 for
    # the published ones): AdamW's steps at lr 1e-6 are below bf16's resolution. The compute
    # runs in bf16 under `train.bf16` (autocast), or DeepSpeed keeps its own fp32 masters.
    models = load_models(
        models_dir,
        device=device,
        system2=system2_url is None,
        system1_dtype=torch.float32,
        attn_implementation=s1.attn_implementation,
    )
    system1_folder = models.manifest.system1
    check_thinker_folder(system1_folder)  # TRL builds the reference model from its config
    freeze_towers(models.system1)
    if samples is None:
        samples = trainable_samples(fmt, data)
    reasoner = GlobalReasoner(models.system1, models.system1_processor, s1)
    # clips, prompts and reward contexts are built as steps ask for them: memory and start-up
    # stay flat in the number of samples (omnir1.rl.inputs)
    views = SampleViews(samples, s1, shards)
    prompt_inputs = LazyPrompts(
        reasoner, views, [s.expression for s in samples], seed=params.train.seed
    )
    contexts = LazyContexts(samples, s1, views)
    engine = engine_from_params(params, models, system2_url=system2_url, system2_root=system2_root)
    rewards = GroupRewards(engine, contexts)
    train = params.train
    if max_steps is not None:
        train = train.model_copy(update={"max_steps": max_steps})
    checkpoints = Path(checkpoints) if checkpoints else out / "checkpoints"
    config = train.grpo_config(
        checkpoints,
        use_cpu=device == "cpu",
        suppress_tokens=reasoner.suppress_tokens,
        reward_weights=params.rewards.reward_weights(),  # in the order of reward_funcs
    )
    rows = [{"prompt": s.expression, "sample_index": i} for i, s in enumerate(samples)]
    trainer = VideoGRPOTrainer(
        model=models.system1,
        processing_class=models.system1_processor,
        reward_funcs=rewards.functions(),
        args=config,
        train_dataset=Dataset.from_list(rows),
        prompt_inputs=prompt_inputs,
        rewards=rewards,
    )
    tracking = None
    if params.tracking.enabled:
        from omnir1.rl.tracking import MLflowTracking

        tracked = params.model_dump(include={"system1", "grounder", "rewards", "train"})
        tracked["data"] = {"path": str(data), "format": fmt, "samples": len(samples)}
        tracked["models"] = {"base": models.manifest.name}
        tracking = MLflowTracking(
            params.tracking.uri,
            params.tracking.experiment,
            tracked,
            rewards,
            out.name,
            on_unavailable=params.tracking.on_unavailable,
            pending_file=out / "mlflow_pending.jsonl",
        )
        trainer.add_callback(tracking)
    if resume == "auto":
        fingerprint = run_fingerprint(params, data=data, fmt=fmt, models_dir=Path(models_dir))
        # the main process decides (and clears stale checkpoints) before the others look
        with trainer.accelerator.main_process_first():
            resume_from = claim_checkpoints(checkpoints, fingerprint)
    else:
        resume_from = latest_checkpoint(checkpoints) if resume else None
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    seconds = time.perf_counter() - start
    # a finished run's last checkpoint resumed: its model, no further step (VideoGRPOTrainer)
    reused = resume_from is not None and trainer.state.global_step == checkpoint_step(resume_from)
    if reused:
        log.warning(
            f"{resume_from} is the end of a finished run of the same inputs: its model is "
            "reused, no step trained (remove the checkpoints to train again)"
        )

    acc = trainer.accelerator
    # every process takes part: under DeepSpeed ZeRO-3 this gathers the partitioned weights
    # (stage3_gather_16bit_weights_on_model_save); only the main process writes OUT/
    state_dict = acc.get_state_dict(trainer.model_wrapped)
    # saved in the dtype the base folder stores (bf16 for the published checkpoints)
    save_system1 = part_saver(
        trainer.model, models.system1_processor, stored_dtype(system1_folder), state_dict
    )

    curve = training_curve(trainer.state.log_history)
    summary = {
        "steps": trainer.state.global_step,
        "resumed_from": resume_from.name if resume_from else None,
        "reused_finished_run": reused,
        "seconds": seconds,
        "processes": trainer.accelerator.num_processes,  # ranks that trained together
        # GRPO's frozen reference (None with beta 0): the thinker class, not a full model's
        "reference_model": None if trainer.ref_model is None else type(trainer.ref_model).__name__,
        "samples": len(samples),
        "last": {k: v for k, v in (curve[-1] if curve else {}).items() if k.startswith("reward")},
        "step_seconds": {
            key.removeprefix("time/"): sum(row[key] for row in curve) / len(curve)
            for key in STEP_TIMES
            if curve and all(key in row for row in curve)
        },
    }
    if tracking is not None and tracking.run_id is not None:
        # `omnir1 register --training` puts the model version in this run
        summary["mlflow"] = {"run_id": tracking.run_id, "tracking_uri": tracking.public_uri()}
    if acc.is_main_process:
        write_model_folder(
            models.manifest.root,
            out / "model",
            name=f"{models.manifest.name}-grpo",
            system1=save_system1,
        )
        write_json(out / "train.json", summary)
        write_json(out / "train_curve.json", curve)
    acc.wait_for_everyone()
    summary["history"] = curve
    return summary
