"""`omnir1 predict` with the tiny models on the synthetic sets: the layout `omnir1 evaluate`
reads, one System-2 call per video, replayed answers that give masks where the target is, and
malformed answers that give empty, counted masks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import omnir1.eval.predict as predict_module
from conftest import short_params
from omnir1.cli import main
from omnir1.config import load_params
from omnir1.eval.predict import run_predict, select_expressions
from omnir1.eval.protocols import evaluate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def params_file(tmp_path_factory) -> Path:
    """params.yaml with short completions: a random System 1 never stops on its own."""
    path = short_params(tmp_path_factory.mktemp("params"))
    assert load_params(path).system1.max_new_tokens == 8
    return path


@pytest.fixture
def system2_calls(monkeypatch) -> list[tuple[str, int]]:
    """(video, requests) of every run_system2 call of the predictor (the real one runs)."""
    calls = []
    real = predict_module.run_system2

    def counting(models, video, requests, *args, **kwargs):
        calls.append((str(video), len(requests)))
        return real(models, video, requests, *args, **kwargs)

    monkeypatch.setattr(predict_module, "run_system2", counting)
    return calls


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_batched_answers_are_the_answers_one_at_a_time(synth_sets, tiny_models, params_file):
    import random

    import torch

    from omnir1.models.loading import load_models
    from omnir1.systems.reasoning import GlobalReasoner, load_clip

    s1 = load_params(params_file).system1
    models = load_models(tiny_models, system2=False)
    reasoner = GlobalReasoner(models.system1, models.system1_processor, s1, greedy=True)
    sample = select_expressions("revos", synth_sets["revos"], limit=1)[0][0]
    clip = load_clip(sample.frame_paths[0].parent, audio=sample.audio_path, cfg=s1, folder_fps=6)
    assert clip.audio is not None
    # prompts of different lengths: the batch is padded on the left
    expressions = ["the cat", "the small red square that moves to the left", sample.expression]

    def scores(inputs):
        out = models.system1.generate(
            **inputs,
            use_audio_in_video=True,
            max_new_tokens=4,
            do_sample=False,
            suppress_tokens=reasoner.suppress_tokens,
            output_scores=True,
            return_dict_in_generate=True,
        )
        return torch.stack(out.scores, 1)

    with torch.no_grad():
        batched = scores(
            reasoner.batch_inputs(clip, reasoner.expression_prompts(clip, expressions, seed=5))
        )
        for i, e in enumerate(expressions):
            alone = scores(reasoner.inputs(clip, e, random.Random(5)))[0]
            finite = torch.isfinite(alone)
            assert torch.equal(finite, torch.isfinite(batched[i]))
            torch.testing.assert_close(batched[i][finite], alone[finite], rtol=1e-4, atol=1e-5)
    one_by_one = [reasoner.generate(clip, e, seed=5)[0] for e in expressions]
    assert reasoner.answer_greedy(clip, expressions, seed=5, batch_size=2) == one_by_one


def test_sampled_answers_of_a_clips_expressions_come_together_and_in_order(
    synth_sets, tiny_models, params_file
):
    """policy_completions samples a clip's expressions in shared generate calls: each
    expression still gets its own prompt and its own answers, in order. Near-greedy sampling
    (temperature 1e-6) must give each expression's greedy answer, alone, `per_sample` times."""

    from omnir1.data.shards import clips_for
    from omnir1.experimental.assess import policy_completions
    from omnir1.models.loading import load_models
    from omnir1.rl.train import trainable_samples
    from omnir1.systems.reasoning import GlobalReasoner

    s1 = load_params(params_file).system1
    models = load_models(tiny_models, system2=False)
    train = trainable_samples("revos", synth_sets["revos"])
    videos = list(dict.fromkeys(s.video_id for s in train))[:2]
    first, second = ([s for s in train if s.video_id == v] for v in videos)
    samples = [first[0], second[0], first[1], second[1], first[2]]  # two clips, interleaved
    clips = clips_for(samples, s1)
    expressions = [s.expression for s in samples]
    greedy = GlobalReasoner(models.system1, models.system1_processor, s1, greedy=True)
    alone = [
        greedy.generate(c, e, seed=7 + i)[0]
        for i, (c, e) in enumerate(zip(clips, expressions, strict=True))
    ]
    cold = GlobalReasoner(
        models.system1, models.system1_processor, s1.model_copy(update={"temperature": 1e-6})
    )
    for rows in (2, 16):  # one expression per call, then all of a clip's in one
        texts = policy_completions(cold, clips, expressions, per_sample=2, seed=7, rows=rows)
        assert texts == [[a, a] for a in alone]
    warm = GlobalReasoner(models.system1, models.system1_processor, s1)
    once = policy_completions(warm, clips, expressions, per_sample=3, seed=7)
    assert [len(t) for t in once] == [3] * 5
    assert once == policy_completions(warm, clips, expressions, per_sample=3, seed=7)


@pytest.mark.parametrize("fmt", ["revos", "mevis", "refavs"])
def test_predict_then_evaluate(fmt, synth_sets, tiny_models, params_file, system2_calls, tmp_path):
    data, pred = synth_sets[fmt], tmp_path / "pred"
    args = ["predict", "--data", str(data), "--format", fmt, "--models", str(tiny_models)]
    args += ["--out", str(pred), "--params", str(params_file), "--limit", "4", "--quiet"]
    assert main(args) == 0

    summary = json.loads((pred / "predictions.json").read_text())
    answers = read_jsonl(pred / "answers.jsonl")
    samples, _, _ = select_expressions(fmt, data, limit=4)
    assert summary["counts"]["expressions"] == len(answers) == len(samples) == 4
    assert summary["models"]["name"] == "omnir1-tiny-seed0"
    assert summary["settings"]["system1"]["greedy"] is True
    for stage in ("load_models", "decode_system1", "system1_generate", "decode_system2", "sam2"):
        assert summary["timings_s"][stage] >= 0
    # one System-2 call per video, with one request per expression of the video
    videos = list(dict.fromkeys(s.video_id for s in samples))
    assert len(system2_calls) == summary["counts"]["videos"] == len(videos)
    assert [n for _, n in system2_calls] == [sum(s.video_id == v for s in samples) for v in videos]

    # the layout of the format: every frame of every predicted expression, native size, 0/255
    for s in samples:
        folder = pred.joinpath(*s.video_id.split("/"), s.expression_id)
        if fmt == "refavs":
            names = [f"{i:05d}.png" for i in range(s.num_frames)]
        else:
            names = [f"{name}.png" for name in s.frame_names]
        assert sorted(p.name for p in folder.iterdir()) == sorted(names)
        arr = np.asarray(Image.open(folder / names[0]))
        assert arr.shape == s.frame_size() and set(np.unique(arr)) <= {0, 255}

    out = tmp_path / "eval.json"
    args = ["evaluate", "--benchmark", fmt, "--data", str(data), "--pred", str(pred)]
    assert main([*args, "--out", str(out), "--workers", "1", "--quiet"]) == 0
    result = json.loads(out.read_text())
    counts = result["counts"]
    # the expressions not predicted (--limit) are the only missing ones
    assert counts["missing_predictions"] == counts["scored"] - 4
    assert counts["partly_missing_predictions"] == 0
    assert counts["unexpected_prediction_folders"] == 0
    ev = evaluate(fmt, data, pred)
    predicted = {(a["video_id"], a["expression_id"]) for a in answers}
    scores = [s for s in ev.scores if (s.video_id, s.expression_id) in predicted]
    assert len(scores) == 4 and not any(s.missing_frames for s in scores)


def test_replayed_answers_segment_the_target_and_malformed_ones_are_counted(
    synth_sets, tiny_models, params_file, system2_calls, tmp_path
):
    from omnir1.data.masks import mask_box
    from omnir1.media.video import smart_resize
    from omnir1.rl.engine import context_from_sample
    from omnir1.rl.warmstart import spread, system1_answer

    data, pred = synth_sets["revos"], tmp_path / "pred"
    params = load_params(params_file)
    s1 = params.system1
    samples, _, _ = select_expressions("revos", data)
    video = samples[0].video_id
    group = [s for s in samples if s.video_id == video]
    assert group == samples[: len(group)]  # a video's expressions are contiguous

    # the expression whose target is visible on the most of System 1's frames
    contexts = {s.expression_id: context_from_sample(s, s1) for s in group if not s.is_null}
    good = max(contexts, key=lambda e: sum(a > 0 for a in contexts[e].target.union_areas))
    ctx = contexts[good]
    visible = [k for k, area in enumerate(ctx.target.union_areas) if area > 0]
    assert visible
    answers = {(video, s.expression_id): "I cannot tell. {not json" for s in group}
    answers[(video, good)] = system1_answer(visible, "the target", s1.moments, ctx.frame_times)

    # the grounder answers the target's box on the first keyframe, in the pixels it is shown
    sample = next(s for s in group if s.expression_id == good)
    keyframe = ctx.source_indices[visible[0]]
    height, width = sample.frame_size()
    objects = sample.mask_source.frame_masks(keyframe, height, width)
    x0, y0, x1, y1 = mask_box(objects.any(axis=0))
    cfg = params.grounder
    shown_h, shown_w = smart_resize(
        height, width, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels
    )
    sx, sy = shown_w / width, shown_h / height
    box = [int(x0 * sx), int(y0 * sy), int(np.ceil(x1 * sx)), int(np.ceil(y1 * sy))]

    summary = run_predict(
        params,
        data=data,
        fmt="revos",
        models_dir=tiny_models,
        out=pred,
        limit=len(group),
        answers=answers,
        grounder_answer=json.dumps([{"bbox_2d": box, "label": "target"}]),
        progress=False,
    )
    assert len(system2_calls) == 1
    counts = summary["counts"]
    assert counts["expressions"] == counts["replayed"] == len(group)
    assert counts["no_keyframes"] == counts["malformed"] == len(group) - 1
    assert counts["problems"]["missing_answer_tags"] == len(group) - 1
    assert counts["empty_masks"] >= len(group) - 1

    records = {r["expression_id"]: r for r in read_jsonl(pred / "answers.jsonl")}
    kept = records[good]["keyframes"]
    assert [k["frame"] for k in kept] == [
        ctx.source_indices[k] for k in spread(visible, s1.moments)[: s1.max_keyframes]
    ]
    assert all(k["boxes"] for k in kept) and records[good]["mask_frames"] > 0

    scores = {s.expression_id: s for s in evaluate("revos", data, pred).scores}
    for s in group:
        gt_visible = [t for t, m in enumerate(s.masks()) if m.any()]
        j_visible = [scores[s.expression_id].frame_j[t] for t in gt_visible]
        if s.expression_id == good:
            assert np.mean(j_visible) > 0
        else:
            assert scores[s.expression_id].prediction_empty
            assert not any(j_visible)


def test_bad_inputs_are_errors_naming_the_file(
    synth_sets, tiny_models, params_file, tmp_path, capsys
):
    data = tmp_path / "revos"
    shutil.copytree(synth_sets["revos"], data)
    first = select_expressions("revos", data, limit=1)[0][0]
    broken = first.frame_paths[3]
    broken.write_bytes(b"not a jpeg")
    pred = tmp_path / "pred"
    base = ["predict", "--data", str(data), "--format", "revos", "--models", str(tiny_models)]
    base += ["--params", str(params_file), "--limit", "1", "--quiet"]
    assert main([*base, "--out", str(pred)]) == 2
    assert broken.name in capsys.readouterr().err
    assert not pred.exists()  # nothing partial is left to be scored

    # a folder that is not a prediction is never replaced
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    assert main([*base, "--out", str(other)]) == 2
    assert "not a prediction folder" in capsys.readouterr().err
    assert (other / "keep.txt").exists()

    answers = tmp_path / "answers.jsonl"
    answers.write_text('{"video_id": "v"}\n')
    assert main([*base, "--out", str(pred), "--system1-answers", str(answers)]) == 2
    assert "answers.jsonl: line 1" in capsys.readouterr().err
