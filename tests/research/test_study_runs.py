"""`omnir1 study` and the research warm start (rendered clips, curricula, expression kinds) on
the tiny models and synthetic data: the study writes its figures, table and plot; the research
knobs add what they say to the product's warm start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import WARM
from omnir1.cli import main
from omnir1.experimental.params import load_study_params
from omnir1.experimental.warmstart import object_words, run_study_warm_start
from omnir1.models.loading import Manifest
from omnir1.rl.warmstart import target_boxes

pytestmark = pytest.mark.slow


def warm_start(params_file, data, models, out) -> dict:
    """The research warm start of the params in `params_file` (its summary)."""
    params = load_study_params(params_file)
    return run_study_warm_start(params, data=data, fmt="revos", models_dir=models, out=out)


def study_params(steps: int) -> str:
    """WARM with `steps` GRPO steps of two 16-token completions (a checkpoint at the end)."""
    train = f"num_generations: 2, max_completion_length: 16, max_steps: {steps}"
    return WARM + "models: {tiny: {sam2_size: 64}}\n" + f"train: {{{train}, save_steps: {steps}}}\n"


def weights(folder):
    from safetensors.torch import load_file

    return load_file(next(folder.glob("*.safetensors")))


def test_study_writes_before_after_figures_a_table_and_reward_curves(synth_sets, tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(study_params(steps=2))
    out = tmp_path / "study"
    args = ["study", "--data", str(synth_sets["revos"]), "--format", "revos", "--out", str(out)]
    args += ["--params", str(params), "--seeds", "0", "--heldout-limit", "2", "--per-sample", "1"]
    assert main(args) == 0
    study = json.loads((out / "study.json").read_text())
    run = study["seeds"]["0"]
    assert run["grpo"]["steps"] == 2 and [h["step"] for h in run["history"]] == [1, 2]
    for key in ("before", "after"):
        assert run[key]["samples"] == 2 and run[key]["completions"] == 2
    assert study["baseline_ignore_video"]["completions"] == 2
    assert study["baseline_read_words"]["completions"] == 2
    words = object_words(synth_sets["revos"])  # what read-the-words masks
    assert {"small", "large", "circle"} <= words and "appears" not in words
    assert set(study["summary"]) == {
        "reward",
        "keyframe_hit_rate",
        "keyframe_hits_per_answer",
        "box_iou",
        "answers_with_hit",
        "box_iou_on_hits",
        "format_rate",
    }
    report = (out / "study.md").read_text()
    assert "| ignore the video | read the words |" in report
    # System 2 alone, on each held-out target's visible frames with its true description
    truth = study["grounder_on_truth"]
    assert truth["samples"] <= 2 and truth["frames"] >= truth["samples"]
    assert 0.0 <= truth["box_iou"] <= 1.0 and len(truth["box_iou_by_area_quartile"]) == 4
    assert "System 2 alone: the frozen grounder given each target's true description" in report
    assert len(run["before"]["per_sample"]) == 2  # each held-out expression's sums
    low, high = study["summary"]["reward"]["delta_interval"]
    assert low <= study["summary"]["reward"]["delta"] <= high
    assert "Change after GRPO with a 95 % interval" in report
    assert set(run["seconds"]) == {"system1_warm_start", "assess", "grpo"}
    assert "Seed 0: System 1 warm start " in report and "reused stages: none." in report
    assert (out / "reward_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # run again into the same folder: every finished stage is reused, the report is the same
    capsys.readouterr()
    assert main(args) == 0
    assert capsys.readouterr().out.count("reusing") == 3  # the grounder, baselines, seed 0
    again = json.loads((out / "study.json").read_text())
    assert again["seeds"] == study["seeds"] and again["grounder"] == study["grounder"]
    assert again["baseline_ignore_video"] == study["baseline_ignore_video"]
    assert study["reused_stages"] == []
    assert again["reused_stages"] == ["environment", "baselines", "seed_0"]
    assert "GRPO of 1 seed: " in report and "GRPO of" not in (out / "study.md").read_text()

    # another GRPO setting (here only how often it checkpoints): the grounder and the seed's
    # warm start with its first assessment are reused; GRPO and the assessment after it run
    # again from them and, as nothing they compute changed, give the same figures
    params.write_text(study_params(steps=2).replace("save_steps: 2", "save_steps: 1"))
    capsys.readouterr()
    assert main(args) == 0
    regrpo = json.loads((out / "study.json").read_text())
    assert regrpo["reused_stages"] == ["environment", "baselines", "seed_0 warm start"]
    assert regrpo["baseline_read_words"] == study["baseline_read_words"]
    rerun = regrpo["seeds"]["0"]
    assert rerun["warm_start_reused"] and not run["warm_start_reused"]
    assert rerun["before"] == run["before"] and rerun["warm_start"] == run["warm_start"]
    assert rerun["after"] == run["after"]

    def computed(history):  # a step's figures, not its timings
        return [{k: v for k, v in row.items() if "time" not in k} for row in history]

    assert computed(rerun["history"]) == computed(run["history"])
    assert (out / "seed_0" / "grpo" / "checkpoints" / "checkpoint-1").is_dir()
    start, end = rerun["grpo_window"]
    assert run["grpo_window"][1] <= start < end
    regrpo_report = (out / "study.md").read_text()
    assert "GRPO of 1 seed: " in regrpo_report
    assert "Seed 0: System 1 warm start " in regrpo_report
    assert "(its warm start and first assessment reused)." in regrpo_report

    # the held-out split from another folder: drawn alike, or refused naming the field
    import shutil

    elsewhere = tmp_path / "heldout"
    shutil.copytree(synth_sets["revos"], elsewhere)
    assert main([*args, "--heldout-data", str(elsewhere)]) == 0
    other = json.loads((out / "study.json").read_text())
    assert other["data"]["heldout_path"] == str(elsewhere)
    assert other["reused_stages"] == ["environment"]  # the seed ran again: other held-out data
    assert other["seeds"]["0"]["before"] == study["seeds"]["0"]["before"]  # the same expressions
    summary = json.loads((elsewhere / "synth_summary.json").read_text())
    summary["layout"] = "free" if summary.get("layout") != "free" else "turns"
    (elsewhere / "synth_summary.json").write_text(json.dumps(summary))
    capsys.readouterr()
    assert main([*args, "--heldout-data", str(elsewhere)]) != 0
    assert "synth_summary.json: layout: layout is" in capsys.readouterr().err


def test_study_seeds_in_processes(synth_sets, tmp_path, capsys):
    """--jobs 2: each unfinished seed runs in a worker process of its own
    (log in its folder) reusing the one grounder, and this process writes the report; a seed
    whose process fails fails the study, naming the seed and its log, and the seed that
    finished is kept."""
    params = tmp_path / "params.yaml"
    params.write_text(study_params(steps=1))
    out = tmp_path / "study"
    args = ["study", "--data", str(synth_sets["revos"]), "--format", "revos", "--out", str(out)]
    args += ["--params", str(params), "--heldout-limit", "2", "--per-sample", "1", "--jobs", "2"]
    (out / "seed_1").mkdir(parents=True)
    (out / "seed_1" / "base").write_text("not a model folder")  # seed 1 cannot start
    assert main([*args, "--seeds", "0", "1"]) != 0
    err = capsys.readouterr().err
    assert "study seed 1 failed (log " in err and "seed_1/study.log" in err
    assert "seed 0 failed" not in err
    assert (out / "seed_0" / "stage.json").is_file()  # kept: a rerun reuses it
    assert "reusing" in (out / "seed_0" / "study.log").read_text()  # the parent's grounder

    (out / "seed_1" / "base").unlink()
    assert main([*args, "--seeds", "0", "1", "2"]) == 0
    study = json.loads((out / "study.json").read_text())
    assert set(study["seeds"]) == {"0", "1", "2"}
    assert study["seeds_in_processes"] == ["seed_1", "seed_2"]
    assert study["reused_stages"] == ["environment", "seed_0"]
    assert all(study["seeds"][s]["after"]["completions"] == 2 for s in "012")
    assert all(study["seeds"][s]["seconds"]["grpo"] > 0 for s in "12")  # kept from the process
    assert "Seed 2: System 1 warm start " in (out / "study.md").read_text()
    assert study["summary"]["reward"]["improved_seeds"] in range(4)
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:  # refused while the arguments are parsed
        main([*args[:-2], "--jobs", "0", "--seeds", "0"])
    assert refused.value.code == 2
    assert "argument --jobs: must be >= 1 and <= 256, got 0" in capsys.readouterr().err


def test_rendered_frames_join_the_grounders_examples(tiny_models, synth_sets, tmp_path):
    """warm_start.grounder_rendered adds freshly drawn frames like the data set's own (boxes
    inside the frame, on the named object) to the grounder's examples."""
    from omnir1.experimental.warmstart import rendered_frames
    from omnir1.rl.train import trainable_samples

    data = synth_sets["revos"]
    frames = rendered_frames(data, 5, seed=1)
    assert len(frames) == 5
    for img, text, (box,) in frames:
        assert img.shape == (180, 320, 3) and text.startswith("the ")
        assert 0 <= box[0] < box[2] < 320 and 0 <= box[1] < box[3] < 180
    assert all(len(b) == 1 for *_, b in rendered_frames(data, 3, objects=1))

    params = tmp_path / "params.yaml"
    params.write_text(
        WARM.replace(
            "grounder_frame_stride: 20", "grounder_frame_stride: 20\n  grounder_rendered: 4"
        ).replace("system1: {steps: 2,", "system1: {steps: 0,")
    )
    summary = warm_start(params, data, tiny_models, tmp_path / "w")
    own = len(list(target_boxes(trainable_samples("revos", data), {}, frame_stride=20)))
    assert summary["grounder"]["rendered"] == 4
    assert summary["grounder"]["examples"] == own + 4
    changed = weights(Manifest.read(tmp_path / "w").grounder)
    before = weights(Manifest.read(tiny_models).grounder)
    assert any(not torch.equal(before[k], changed[k]) for k in before)


def test_a_rendered_scene_is_what_system1_loads_of_its_video(synth_sets):
    """scene_expressions on a data set's own scene (and random stream) gives the clip that
    load_clip reads from the video's files, its expressions, and the System-1 frames on which
    the data set's masks show each target: rendered warm-start clips are like the set's."""
    import dataclasses

    import numpy as np

    from omnir1.config import load_params
    from omnir1.data.shards import clips_for
    from omnir1.data.synth.generate import video_scene
    from omnir1.experimental.warmstart import _synth_config, rendered_clips, scene_expressions
    from omnir1.rl.engine import context_from_sample
    from omnir1.rl.train import trainable_samples

    data = synth_sets["revos"]
    s1 = load_params("params.yaml").system1
    cfg = dataclasses.replace(_synth_config(data), seed=3)  # the fixture's seed
    vid, split, scene, rng = video_scene(cfg, 0)
    assert split == "train"
    rendered = scene_expressions(cfg, scene, rng, s1)
    samples = [s for s in trainable_samples("revos", data) if s.video_id == vid]
    (loaded, *_) = clips_for(samples[:1], s1)
    clip = rendered[0].clip
    assert np.array_equal(clip.times, loaded.times)
    assert np.array_equal(clip.source_indices, loaded.source_indices)
    assert clip.frames.shape == loaded.frames.shape  # JPEG-encoded on disk, exact here
    assert np.abs(clip.frames.astype(int) - loaded.frames.astype(int)).mean() < 3.0
    assert clip.audio.shape == loaded.audio.shape
    assert np.abs(clip.audio - loaded.audio).max() < 1e-3  # 16-bit PCM on disk
    visible_on_disk = {}
    for sample in samples:
        target = context_from_sample(sample, s1, loaded).target
        visible_on_disk[sample.expression] = [f for f, a in enumerate(target.union_areas) if a > 0]
    assert {r.expression: r.visible for r in rendered} == visible_on_disk

    many = rendered_clips(data, 12, s1, seed=1, kinds={"appearance"})
    assert len(many) == 12 and {r.kind for r in many} == {"appearance"}
    assert all(r.visible and r.description.startswith("the ") for r in many)

    # words: only expressions with one of them; colours skip scenes before any pixel is drawn
    # and give the same expressions as choosing after rendering every scene
    red = rendered_clips(data, 4, s1, seed=1, kinds={"appearance"}, words=["red"])
    after = rendered_clips(
        data, 4, s1, seed=1, kinds={"appearance"}, keep=lambda r: "red" in r.expression.split()
    )
    assert [r.expression for r in red] == [r.expression for r in after]
    assert all(
        np.array_equal(a.clip.frames, b.clip.frames) for a, b in zip(red, after, strict=True)
    )
    assert all("red" in r.expression.split() and r.visible for r in red)


def test_system1_rendered_adds_examples_on_fresh_clips(tiny_models, synth_sets, tmp_path):
    """warm_start.system1_rendered: that many examples on freshly rendered clips join the
    set's own; a kind the generator does not make is refused, naming the field."""
    from omnir1.errors import ConfigError

    data = synth_sets["revos"]
    counts = {}
    for rendered in (0, 5):
        params = tmp_path / f"params{rendered}.yaml"
        extra = f"\n  system1_rendered: {rendered}\n  system1_rendered_kinds: [appearance]"
        params.write_text(
            WARM.replace("grounder: {steps: 2,", "grounder: {steps: 0,").replace(
                "system1: {steps: 2, batch_size: 2, warmup_steps: 1}",
                "system1: {steps: 2, batch_size: 2, warmup_steps: 1}" + extra,
            )
        )
        summary = warm_start(params, data, tiny_models, tmp_path / f"w{rendered}")
        counts[rendered] = summary["system1"]
    assert counts[5]["rendered"] == 5
    assert counts[5]["examples"] == counts[0]["examples"] + 5

    bad = tmp_path / "bad.yaml"
    bad.write_text("warm_start: {system1_rendered: 5, system1_rendered_kinds: [smell]}\n")
    with pytest.raises(ConfigError, match="system1_rendered_kinds"):
        load_study_params(bad)


def test_rendered_examples_need_a_synthetic_set(tmp_path):
    from omnir1.errors import DataError
    from omnir1.experimental.warmstart import rendered_frames

    with pytest.raises(DataError, match=r"synth_summary\.json.*warm_start"):
        rendered_frames(tmp_path, 1)


def test_system1_stages_train_one_after_another_on_their_own_expressions(
    tiny_models, synth_sets, tmp_path
):
    """warm_start.system1_stages: each stage trains, for its own steps, on the set's
    expressions of its kinds with one of its words (those whose target System 1 can see) and
    on rendered ones chosen alike."""
    from omnir1.data.synth.expressions import expression_kind
    from omnir1.experimental.study import _split_inputs

    data = synth_sets["revos"]
    params = tmp_path / "params.yaml"
    params.write_text(
        WARM.replace("grounder: {steps: 2,", "grounder: {steps: 0,").replace(
            "warmup_steps: 1}\ntracking",
            "warmup_steps: 1}\n"
            "  system1_stages:\n"
            "    - {steps: 1, kinds: [appearance], words: [red, blue]}\n"
            "    - {steps: 2, rendered: 3, kinds: [appearance, multi]}\n"
            "tracking",
        )
    )
    summary = warm_start(params, data, tiny_models, tmp_path / "w")
    first, second = summary["system1"]["stages"]

    def seen(keep) -> int:  # the set's expressions whose target shows on a System-1 frame
        _, _, contexts = _split_inputs(load_study_params(params), "revos", data, "train", keep=keep)
        return sum(any(a > 0 for a in c.target.union_areas) for c in contexts)

    red_or_blue = seen(
        lambda s: (
            expression_kind(s.expression) == "appearance"
            and bool({"red", "blue"} & set(s.expression.split()))
        )
    )
    looks_or_several = seen(lambda s: expression_kind(s.expression) in ("appearance", "multi"))
    assert 0 < red_or_blue < looks_or_several
    assert (first["examples"], first["loss"]["steps"], first["words"]) == (
        red_or_blue,
        1,
        ["red", "blue"],
    )
    assert (second["examples"], second["loss"]["steps"]) == (looks_or_several + 3, 2)
    assert second["kinds"] == ["appearance", "multi"] and second["rendered"] == 3


def test_expression_kinds_need_a_synthetic_set(synth_sets, tmp_path):
    """A real data set's expressions have no known kind: a stage or train.kinds that names
    kinds is refused, naming the field; the synthetic set's are chosen by kind."""
    from omnir1.data.synth.expressions import expression_kind
    from omnir1.errors import DataError
    from omnir1.experimental.warmstart import study_samples

    data = synth_sets["revos"]
    chosen = study_samples("revos", data, kinds=["appearance", "multi"])
    every = study_samples("revos", data)
    assert {expression_kind(s.expression) for s in chosen} == {"appearance", "multi"}
    assert len(chosen) == sum(
        expression_kind(s.expression) in ("appearance", "multi") for s in every
    )

    real = tmp_path / "real"  # the same set without the generator's synth_objects.json
    real.mkdir()
    for entry in data.iterdir():
        if entry.name != "synth_objects.json":
            (real / entry.name).symlink_to(entry)
    with pytest.raises(DataError, match=r"train\.kinds"):
        study_samples("revos", real, kinds=["appearance"])
    assert len(study_samples("revos", real, kinds=None)) == len(every)
    params = tmp_path / "params.yaml"
    params.write_text("warm_start:\n  system1_stages: [{steps: 1, kinds: [appearance]}]\n")
    with pytest.raises(DataError, match=r"warm_start\.system1_stages"):
        warm_start(params, real, tmp_path, tmp_path / "w")


def test_training_expressions_chosen_by_word(synth_sets):
    """train.words: only expressions with one of the words as a word of their own (any case),
    on top of the kinds; a word no expression has is refused, naming the field."""
    from omnir1.errors import DataError
    from omnir1.experimental.params import names_any
    from omnir1.experimental.study import _split_inputs
    from omnir1.experimental.warmstart import study_samples

    data = synth_sets["revos"]
    every = study_samples("revos", data)
    red = study_samples("revos", data, words=["Red"])
    assert red and all("red" in s.expression.lower().split() for s in red)
    assert len(red) == sum("red" in s.expression.lower().split() for s in every)
    appearance_red = study_samples("revos", data, kinds=["appearance"], words=["red"])
    assert {s.expression for s in appearance_red} <= {s.expression for s in red}
    assert not names_any("the reddish circle", ["red"]) and names_any("a circle", [])
    with pytest.raises(DataError, match=r"naming mauve \(train\.words\)"):
        study_samples("revos", data, words=["mauve"])
    # the study chooses its held-out expressions (and so its baselines) by the same words
    params = load_study_params(Path(__file__).resolve().parents[2] / "params.yaml")
    params.train.words = ["red"]
    chosen, _, _ = _split_inputs(params, "revos", data, "train")
    assert [s.expression for s in chosen] == [s.expression for s in red]
