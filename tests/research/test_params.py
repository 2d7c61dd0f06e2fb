"""The research knobs of omnir1.experimental.params: validated like product params, filled in
as the study reads them."""

import pytest

from omnir1.errors import ConfigError
from omnir1.experimental.params import StudyTinyParams, load_study_params


def test_tiny_model_options_reach_the_thinker_config():
    from omnir1.models.tiny import TinySizes, build_tokenizer, thinker_config

    sizes = StudyTinyParams(rope_theta=100.0, mrope_section=(2, 7, 7), digit_tokens=True).sizes()
    tok = build_tokenizer(sizes)
    assert tok.tokenize("120") == ["1", "2", "0"]
    rope = thinker_config(tok, sizes).text_config.rope_parameters
    assert rope["rope_theta"] == 100.0 and list(rope["mrope_section"]) == [2, 7, 7]
    default = thinker_config(tok, TinySizes()).text_config.rope_parameters
    assert default["rope_theta"] == 1e6 and list(default["mrope_section"]) == [4, 6, 6]
    with pytest.raises(ConfigError):
        thinker_config(tok, TinySizes(mrope_section=(4, 4, 4)))


def test_audio_first_needs_frames_as_images(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("system1: {audio_first: true}\n")
    with pytest.raises(ConfigError, match="audio_first needs frames: images"):
        load_study_params(bad)
    good = tmp_path / "good.yaml"
    good.write_text("system1: {audio_first: true, frames: images}\n")
    assert load_study_params(good).system1.audio_first


def test_system1_stages_fill_in_what_they_do_not_name(tmp_path):
    """warm_start.system1_stages: a stage names what it changes; everything else comes from
    warm_start.system1 and the rendered settings. Without stages: one stage of those."""
    path = tmp_path / "params.yaml"
    path.write_text(
        "warm_start:\n"
        "  system1: {steps: 7, batch_size: 4, learning_rate: 1.0e-3}\n"
        "  system1_rendered: 9\n"
        "  system1_rendered_kinds: [appearance, multi]\n"
    )
    (only,) = load_study_params(path).warm_start.system1_curriculum()
    assert only.finetune.steps == 7 and only.rendered == 9 and not only.filter_set
    assert list(only.kinds) == ["appearance", "multi"] and not only.words

    path.write_text(
        path.read_text()
        + "  system1_stages:\n"
        + "    - {steps: 3, words: [Red]}\n"
        + "    - {learning_rate: 5.0e-4, rendered: 0, kinds: [appearance]}\n"
        + "    - {kinds: [appearance, audio, temporal, multi]}\n"
    )
    first, second, third = load_study_params(path).warm_start.system1_curriculum()
    assert (first.finetune.steps, first.finetune.batch_size) == (3, 4)
    assert first.finetune.learning_rate == 1e-3 and first.rendered == 9
    assert list(first.kinds) == ["appearance", "multi"] and list(first.words) == ["Red"]
    assert (second.finetune.steps, second.finetune.learning_rate, second.rendered) == (7, 5e-4, 0)
    assert list(second.kinds) == ["appearance"] and first.filter_set and second.filter_set

    assert first.wants("the red circle", "appearance")  # words match in any case
    assert not first.wants("the blue circle", "appearance")
    assert not first.wants("the red circle", "temporal")
    assert not second.wants("the red circle", None)  # a real set's: its kind is unknown
    assert third.all_kinds and third.wants("the red circle", None)


@pytest.mark.parametrize(
    ("stage", "message"),
    [("{kinds: [smell]}", "kinds"), ("{steps: -1}", "steps"), ("{stepz: 1}", "stepz")],
)
def test_a_bad_system1_stage_names_its_field(tmp_path, stage, message):
    path = tmp_path / "params.yaml"
    path.write_text(f"warm_start:\n  system1_stages: [{stage}]\n")
    with pytest.raises(ConfigError, match=rf"system1_stages.*{message}"):
        load_study_params(path)
