"""`bench/gpu_scale.py`, the device check, at its CPU smoke size: every stage runs and writes
sane figures, a spent time budget skips stages instead of running them, a failed stage is
recorded while the others run, and the GRPO step's fallbacks (micro-batches after an
out-of-memory error, a plain log-softmax without TRL's fused head) give the gradients of the
path the trainer takes."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_scale.py"
MODEL_STAGES = ("build", "prompt", "prefill", "rollout", "grounder", "grpo")


def run_script(*args: str, out: Path) -> tuple[subprocess.CompletedProcess, dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--device", "cpu", "--out", str(out), *args]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return done, json.loads(out.read_text())


def test_smoke_run_records_every_stage_with_sane_figures(tmp_path):
    out = tmp_path / "tmp" / "gpu_scale.json"
    done, report = run_script(out=out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert report["smoke"] is True and report["finished"] is True
    assert [p.name for p in out.parent.iterdir()] == ["gpu_scale.json"]  # no temporary file
    stages = report["stages"]
    expected = ["sam2/build", "sam2/1", "sam2/8", "sam2/32"]
    expected += [f"{m}/{s}" for m in ("3b", "7b") for s in MODEL_STAGES]
    assert list(stages) == expected
    for name, stage in stages.items():
        assert stage["status"] == "ok", (name, stage)
        assert stage["seconds"] > 0 and "peak_memory_gb" in stage, name
    assert report["optimizers"] == {"3b": "adamw_fused", "7b": "adafactor"}

    for n in (1, 8, 32):
        sam2 = stages[f"sam2/{n}"]
        assert sam2["masks"] == n * sam2["frames"] and sam2["masks_per_s"] > 0
    for m in ("3b", "7b"):
        build, prompt = stages[f"{m}/build"], stages[f"{m}/prompt"]
        parts = ("language_model", "vision", "audio", "lm_head")
        assert build["parameters"] == sum(build[p] for p in parts)
        assert prompt["video_tokens"] > 0 and prompt["audio_tokens"] > 0
        assert prompt["prompt_tokens"] == (
            prompt["video_tokens"] + prompt["audio_tokens"] + prompt["text_tokens"]
        )
        prefill = stages[f"{m}/prefill"]
        assert prefill["tokens"] == prefill["rows"] * prompt["prompt_tokens"]
        assert prefill["tokens_per_s"] > 0 and prefill["encode_once_ratio"] > 0
        rollout = stages[f"{m}/rollout"]
        assert rollout["generated_tokens"] == rollout["generations"] * rollout["new_tokens"]
        assert rollout["tokens_per_s"] > 0
        grounder = stages[f"{m}/grounder"]
        assert grounder["answers"] == grounder["requests"] and grounder["boxes_per_s"] > 0
        grpo = stages[f"{m}/grpo"]
        assert grpo["optimizer"] == report["optimizers"][m]
        assert len(grpo["step_s"]) == 2 and min(grpo["step_s"]) > 0
        assert grpo["tokens_per_row"] == prompt["prompt_tokens"] + rollout["new_tokens"]
        assert grpo["logprobs"] == "trl fused_lm_head" and grpo["micro_batch"] == grpo["rows"]
        assert grpo["weights_changed"] is True  # float32 masters: the steps moved the weights


def test_a_spent_budget_skips_the_remaining_stages(tmp_path):
    out = tmp_path / "gpu_scale.json"
    done, report = run_script("--budget-s", "0", "--models", "3b", out=out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert report["finished"] is True
    assert list(report["stages"]) == ["sam2/build", "sam2/1", "sam2/8", "sam2/32", "3b/build"] + [
        f"3b/{s}" for s in MODEL_STAGES[1:]
    ]
    for stage in report["stages"].values():
        assert stage["status"] == "skipped" and stage["reason"], stage


def test_a_failed_stage_is_recorded_and_the_run_goes_on(tmp_path):
    # flash-attn is not installed here: the thinker cannot build, SAM2 still runs
    out = tmp_path / "gpu_scale.json"
    args = ("--attn", "flash_attention_2", "--models", "3b", "--stages", "sam2,prompt,rollout")
    done, report = run_script(*args, out=out)
    assert done.returncode == 1  # some stage failed
    assert report["finished"] is True
    stages = report["stages"]
    assert all(stages[f"sam2/{n}"]["status"] == "ok" for n in (1, 8, 32))
    assert stages["3b/build"]["status"] == "error"
    assert "FlashAttention2" in stages["3b/build"]["error"]
    assert stages["3b/build"]["traceback"]
    for name in ("3b/prompt", "3b/rollout"):
        assert stages[name] == {"status": "skipped", "reason": "the thinker did not build"}


@pytest.fixture(scope="module")
def gpu_scale():
    spec = importlib.util.spec_from_file_location("gpu_scale", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_scale"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_scale", None)


class Recorder:
    """An optimiser that keeps the gradients it is asked to apply, and changes nothing."""

    def __init__(self, params):
        self.params, self.grads = params, []

    def step(self):
        self.grads.append([p.grad.clone() for p in self.params])

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None


def prompted_thinker(gpu_scale, args):
    """The smoke 3B thinker, built, with its prompt."""
    import torch

    from omnir1.models.tiny import TinySizes, build_processor, build_tokenizer

    scale = gpu_scale.smoke_scale()
    tokenizer = build_tokenizer(TinySizes())
    torch.manual_seed(0)
    bench = gpu_scale.ThinkerBench("3b", scale, args, tokenizer, build_processor(tokenizer))
    bench.build()
    bench.prompt()
    return bench


def test_micro_batches_and_the_plain_head_give_the_fused_batch_gradients(gpu_scale):
    import torch

    args = gpu_scale.parse_args(["--smoke", "--device", "cpu"])
    bench = prompted_thinker(gpu_scale, args)
    train = bench.scale.train
    params, _, fused_off = gpu_scale.prepare_training(bench.model, args, "3b", 1e-6, 0.0, 1.0)
    assert fused_off is None
    g, n = train.num_generations, train.max_completion_length
    rewards = torch.tensor([0.0, 1.0, 0.5, 2.0])[:g]
    ctx = gpu_scale.SimpleNamespace(
        model=bench.model,
        opt=Recorder(params),
        params=params,
        batch=gpu_scale.grpo_batch(bench, seed=0),
        rows_of=gpu_scale._row_slicer(g),
        n=n,
        beta=train.beta,
        advantages=(rewards - rewards.mean()) / (rewards.std() + 1e-4),
        mask=torch.ones(g, n),
        fused=True,
        audio_in_video=bench.audio_in_video,
        device="cpu",
    )
    whole = gpu_scale._grpo_step(ctx, g)
    gpu_scale._grpo_step(ctx, 1)  # one row per forward, gradients accumulated
    ctx.fused = False
    plain = gpu_scale._grpo_step(ctx, g)
    assert whole["loss"] == pytest.approx(plain["loss"], abs=1e-6)
    reference, *others = ctx.opt.grads
    assert any(bool(g.abs().sum() > 0) for g in reference)
    for grads in others:
        for a, b in zip(reference, grads, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6)


def test_out_of_memory_halves_the_micro_batch_and_a_failed_fused_head_falls_back(
    gpu_scale, monkeypatch
):
    import torch

    args = gpu_scale.parse_args(["--smoke", "--device", "cpu", "--models", "3b"])
    bench = prompted_thinker(gpu_scale, args)
    real_step, calls = gpu_scale._grpo_step, []

    def step(ctx, micro):
        calls.append((ctx.fused, micro))
        if ctx.fused:  # as Triton without a C compiler would
            raise RuntimeError("Failed to find C compiler")
        if micro > 1:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real_step(ctx, micro)

    monkeypatch.setattr(gpu_scale, "_grpo_step", step)
    figures = gpu_scale.grpo_figures(bench, "3b", bench.scale, args)
    g = bench.g
    assert figures["logprobs"].startswith("plain log-softmax (failed: RuntimeError: Failed")
    assert figures["out_of_memory_at_micro_batch"] == [g, g // 2]
    assert figures["micro_batch"] == 1 and len(figures["steps"]) == 2
    assert calls == [(True, g), (False, g), (False, g // 2), (False, 1), (False, 1)]
    assert figures["weights_changed"] is True
