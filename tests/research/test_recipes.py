"""The study recipes of research/recipes/ merged over params.yaml change only what they say."""

from pathlib import Path

from omnir1.experimental.params import load_study_params

ROOT = Path(__file__).resolve().parents[2]


def _study_params(*names: str):
    """params.yaml with research/recipes/study_<name>.yaml merged over it, in order."""
    return load_study_params(
        ROOT / "params.yaml", [ROOT / "research" / "recipes" / f"study_{n}.yaml" for n in names]
    )


def test_the_learning_study_recipe_changes_only_what_it_says():
    """research/recipes/study_turns.yaml (research/LOG.md's study) over params.yaml: the data's
    drawing, the prompt, reward clipping and the warm-start / GRPO lengths; models unchanged."""
    embedded = load_study_params(ROOT / "params.yaml")
    study = _study_params("turns")
    assert study.data.synth.layout == "turns" and study.data.synth.background == "position"
    assert study.rewards.video_accuracy.clip_to_cumulated
    assert study.rewards.video_accuracy.a_g == 0.0
    assert study.models == embedded.models
    # a group's grounding requests in one batch (speed only); System 1's warm start at batch 6
    assert study.grounder == embedded.grounder.model_copy(update={"batch_size": 32})
    assert (study.warm_start.system1.steps, study.warm_start.system1.batch_size) == (300, 6)
    embedded_train = {"max_steps": 60, "learning_rate": 1e-4, "lr_scheduler_type": "cosine"}
    assert study.train.model_copy(update=embedded_train) == embedded.train
    # the short-clip study is the same recipe with 4 s clips and shorter System 1 / GRPO runs
    short = _study_params("turns", "short")
    assert short.data.synth == study.data.synth.model_copy(update={"duration_s": 4.0})
    assert short.warm_start.system1.steps == 200 and short.train.max_steps == 60
    # as documented: System 1's warm start at batch 8, the grounder's requests in batches of 8
    # (params.yaml's 16 since 2026-12-07; the recipe keeps the studies' setting)
    assert short.warm_start.system1.batch_size == 8
    assert short.grounder == embedded.grounder.model_copy(update={"batch_size": 8})
    assert short.rewards == study.rewards and short.system1 == study.system1
    # the 8 s study: the short one's runs on 8 s clips
    eight = _study_params("turns", "8s")
    assert eight.data.synth == study.data.synth.model_copy(update={"duration_s": 8.0})
    assert eight.warm_start == short.warm_start and eight.train == short.train


def test_the_curriculum_recipe_is_four_colour_stages_of_appearance():
    """research/recipes/study_curriculum.yaml over the no-audio study recipes: System 1's warm
    start in four stages of 1,000 steps (red; red, blue; four colours; every appearance
    expression), GRPO and the assessment on appearance expressions; nothing else changed."""
    frames = _study_params("turns", "8s", "frames")
    curriculum = _study_params("turns", "8s", "frames", "curriculum")
    stages = curriculum.warm_start.system1_curriculum()
    assert [list(s.words) for s in stages] == [
        ["red"],
        ["red", "blue"],
        ["red", "blue", "green", "yellow"],
        [],
    ]
    for stage in stages:
        assert (stage.finetune.steps, stage.finetune.batch_size) == (1000, 16)
        assert stage.finetune.learning_rate == 1e-3 and stage.rendered == 5000
        assert list(stage.kinds) == ["appearance"] and stage.filter_set
    assert curriculum.train.kinds == ["appearance"]
    assert curriculum.system1 == frames.system1 and curriculum.rewards == frames.rewards
    assert curriculum.train.model_copy(update={"kinds": frames.train.kinds}) == frames.train


def test_the_red_recipe_is_one_colour_for_the_warm_start_and_grpo():
    """research/recipes/study_red.yaml over the no-audio study recipes: the curriculum's first
    stage as the whole warm start, and GRPO (100 steps at 3e-5), the assessment and the
    baselines on the same expressions: appearance ones naming red."""
    frames = _study_params("turns", "8s", "frames")
    red = _study_params("turns", "8s", "frames", "red")
    (stage,) = red.warm_start.system1_curriculum()
    assert list(stage.words) == ["red"] and list(stage.kinds) == ["appearance"]
    assert (stage.finetune.steps, stage.finetune.batch_size) == (1000, 16)
    assert stage.finetune.learning_rate == 1e-3 and stage.rendered == 5000 and stage.filter_set
    assert (red.train.kinds, red.train.words) == (["appearance"], ["red"])
    assert (red.train.max_steps, red.train.learning_rate) == (100, 3e-5)
    changed = {"kinds", "words", "max_steps", "learning_rate"}
    assert red.train.model_copy(update={k: getattr(frames.train, k) for k in changed}) == (
        frames.train
    )
    assert red.system1 == frames.system1 and red.rewards == frames.rewards
