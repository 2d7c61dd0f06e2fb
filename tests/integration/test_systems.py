"""The two systems with real (tiny, randomly initialised) models on real encoded videos."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from omnir1.cli import main
from omnir1.config import System1Params
from omnir1.errors import ConfigError, InputError
from omnir1.experimental.params import StudySystem1Params
from omnir1.media import inspect
from omnir1.models.loading import Manifest, load_models
from omnir1.models.tiny import TinySizes, build_tiny
from omnir1.systems.grounding import Grounder, GroundingRequest
from omnir1.systems.parsing import parse_answer
from omnir1.systems.reasoning import GlobalReasoner, load_clip
from omnir1.systems.segmentation import BoxPrompt, SAM2Frames, segment

SIZES = TinySizes(sam2_image_size=128)  # as the tiny_models fixture (conftest.py)
ANSWER = (
    "<think>it whistles, then it is on the left.</think><answer>["
    '{"start_time": "00:01.00", "end_time": "00:01.40", "description": "the grey shape"}, '
    '{"start_time": "00:06.00", "end_time": "00:06.40", "description": "the grey shape"}]</answer>'
)
BOXES = '```json\n[{"bbox_2d": [40, 30, 120, 100], "label": "shape"}]\n```'


@pytest.fixture(scope="module")
def loaded(tiny_models):
    return load_models(tiny_models)


def test_init_tiny_round_trip_gives_identical_outputs(tiny_models, loaded, media_files):
    built = build_tiny(seed=0, sizes=SIZES)
    clip = load_clip(media_files["mp4"], cfg=System1Params(max_frames=4))
    inputs = GlobalReasoner(built.model, built.processor).inputs(clip, "x", random.Random(0))
    reloaded = GlobalReasoner(loaded.system1, loaded.system1_processor).inputs(
        clip, "x", random.Random(0)
    )
    assert torch.equal(inputs["input_ids"], reloaded["input_ids"])  # same tokenizer, processor
    with torch.no_grad():
        a = built.model(**inputs, use_audio_in_video=True).logits
        b = loaded.system1(**reloaded, use_audio_in_video=True).logits
    assert torch.equal(a, b)
    # SAM2: same weights, same image features
    image = torch.rand(1, 3, SIZES.sam2_image_size, SIZES.sam2_image_size)
    with torch.no_grad():
        fa = built.sam2.forward_image(image)["vision_features"]
        fb = loaded.sam2.forward_image(image)["vision_features"]
    assert torch.equal(fa, fb)
    manifest = json.loads((tiny_models / "models.json").read_text())
    assert manifest["grounder"] == manifest["system1"]  # a frozen copy of the base model
    assert not any(p.requires_grad for p in loaded.grounder.parameters())


def test_manifest_errors_name_the_file_and_field(tiny_models, tmp_path):
    with pytest.raises(ConfigError, match=r"models\.json: model manifest not found"):
        Manifest.read(tmp_path)
    bad = json.loads((tiny_models / "models.json").read_text())
    bad["system1"] = "../elsewhere"
    (tmp_path / "models.json").write_text(json.dumps(bad))
    with pytest.raises(InputError, match=r"models\.json: system1: invalid path component"):
        Manifest.read(tmp_path)


def test_system1_prompt_interleaves_audio_and_video(loaded, media_files):
    reasoner = GlobalReasoner(loaded.system1, loaded.system1_processor)
    tok = loaded.system1_processor.tokenizer
    with_audio = load_clip(media_files["mp4"])
    silent = load_clip(media_files["silent_mp4"])
    assert silent.audio is None and with_audio.audio is not None
    assert with_audio.num_frames == 20  # 10 s at 2 fps
    assert with_audio.frames.shape[1] % 28 == 0 and with_audio.frames.shape[2] % 28 == 0
    ids = reasoner.inputs(with_audio, "the whistle", random.Random(0))["input_ids"][0].tolist()
    audio_id, video_id = (tok.convert_tokens_to_ids(t) for t in ("<|AUDIO|>", "<|VIDEO|>"))
    first_audio = ids.index(audio_id)
    last_video = len(ids) - 1 - ids[::-1].index(video_id)
    assert first_audio < last_video  # chunks of video and audio alternate
    silent_ids = reasoner.inputs(silent, "x", random.Random(0))["input_ids"][0].tolist()
    assert audio_id not in silent_ids
    # the example times in the instructions are random
    a = reasoner.messages(with_audio, "x", random.Random(1))[1]["content"][1]["text"]
    b = reasoner.messages(with_audio, "x", random.Random(2))[1]["content"][1]["text"]
    assert a != b
    # system1.prompt: compact asks the same in ~180 fewer tokens, with no example
    compact = GlobalReasoner(
        loaded.system1, loaded.system1_processor, System1Params(prompt="compact")
    )
    short = compact.inputs(with_audio, "the whistle", random.Random(0))["input_ids"][0].tolist()
    assert video_id in short and audio_id in short and len(short) < len(ids) - 150
    text = compact.messages(with_audio, 'the "red" ball', random.Random(1))[1]["content"][1]["text"]
    assert "the 'red' ball" in text and "00:10.00" in text and "mm:ss.ff" in text
    assert (
        text
        == compact.messages(with_audio, 'the "red" ball', random.Random(2))[1]["content"][1]["text"]
    )


def test_system1_frames_as_timed_images(loaded, media_files):
    """system1.frames: images puts each frame after its time in text, then the audio block."""
    cfg = StudySystem1Params(frames="images", prompt="compact", max_new_tokens=8, max_pixels=1568)
    reasoner = GlobalReasoner(loaded.system1, loaded.system1_processor, cfg)
    tok = loaded.system1_processor.tokenizer
    clip = load_clip(media_files["mp4"], cfg=cfg)
    ids = reasoner.inputs(clip, "the whistle", random.Random(0))["input_ids"][0].tolist()
    image_id, video_id, audio_id, bos_id = (
        tok.convert_tokens_to_ids(t)
        for t in ("<|IMAGE|>", "<|VIDEO|>", "<|AUDIO|>", "<|vision_bos|>")
    )
    assert video_id not in ids and ids.count(bos_id) == clip.num_frames
    assert ids.index(audio_id) > len(ids) - 1 - ids[::-1].index(image_id)  # audio after frames
    text = tok.decode(ids)
    assert text.index("00:09.50") < text.rindex("<|IMAGE|>")  # the last frame's time
    silent = load_clip(media_files["silent_mp4"], cfg=cfg)
    assert audio_id not in reasoner.inputs(silent, "x", random.Random(0))["input_ids"][0]
    for c in (clip, silent):  # with and without the audio block
        assert len(reasoner.generate(c, "the circle", num_return_sequences=2)) == 2

    # audio_first: the same tokens with the audio block moved before the first frame
    first = GlobalReasoner(
        loaded.system1, loaded.system1_processor, cfg.model_copy(update={"audio_first": True})
    )
    moved = first.inputs(clip, "the whistle", random.Random(0))["input_ids"][0].tolist()
    assert sorted(moved) == sorted(ids)
    assert len(ids) - 1 - moved[::-1].index(audio_id) < moved.index(image_id)
    assert first.inputs(silent, "x", random.Random(0))["input_ids"].shape[1] == len(
        reasoner.inputs(silent, "x", random.Random(0))["input_ids"][0]
    )

    # audio false: a clip with a soundtrack gets a prompt with its frames and no audio block
    deaf = GlobalReasoner(
        loaded.system1, loaded.system1_processor, cfg.model_copy(update={"audio": False})
    )
    frames_only = deaf.inputs(clip, "the whistle", random.Random(0))
    assert "input_features" not in frames_only and not deaf.hears(clip)
    only_ids = frames_only["input_ids"][0].tolist()
    assert audio_id not in only_ids and only_ids.count(bos_id) == clip.num_frames
    assert [t for t in only_ids if t == image_id] == [t for t in ids if t == image_id]
    assert len(deaf.generate(clip, "the circle", num_return_sequences=2)) == 2


def test_generation_is_parsed_whatever_the_model_writes(loaded, media_files):
    cfg = System1Params(max_new_tokens=24)
    clip = load_clip(media_files["silent_mp4"], cfg=cfg)
    texts = GlobalReasoner(loaded.system1, loaded.system1_processor, cfg).generate(
        clip, "the circle", num_return_sequences=3, seed=0
    )
    assert len(texts) == 3
    for text in texts:  # a random model writes garbage: parsed, with reasons, never raised
        parsed = parse_answer(text, clip.frame_times)
        assert isinstance(parsed.problems, list)


def test_grounder_deduplicates_and_scales_boxes(loaded):
    grounder = Grounder(loaded.grounder, loaded.grounder_processor)
    calls = []
    generate = grounder._generate
    grounder._generate = lambda batch: calls.append(len(batch)) or generate(batch)
    image = np.zeros((360, 640, 3), np.uint8)
    requests = [
        GroundingRequest(0, image, "the dog"),
        GroundingRequest(0, image, "the dog"),  # same frame, same description
        GroundingRequest(1, image, "the dog"),
    ]
    results = grounder.ground(requests)
    assert calls == [2]  # two unique requests, one batch
    assert results[0] is results[1]
    # boxes come back in native pixels: the grounder saw a resized image
    shown_h, shown_w = grounder._shown_size(image)
    parsed = grounder.result(requests[0], '[{"bbox_2d": [0, 0, 28, 28]}]')
    assert parsed.boxes == [[0.0, 0.0, 28 * 640 / shown_w, 28 * 360 / shown_h]]


def assert_equal_up_to_rounding(got: np.ndarray, expected: np.ndarray, what: str) -> None:
    """Objects prompted on the same frames run through SAM2 as one batch; a batched matrix
    product may round differently from a single row's, so a mask may differ from a call of
    its own in a few pixels where SAM2's logit is all but zero: on a mask's edge, never more
    than 1 in 10,000."""
    from scipy.ndimage import maximum_filter, minimum_filter

    differ = got != expected
    if not differ.any():
        return
    edges = np.zeros_like(differ)
    for m in (got, expected):
        edges |= maximum_filter(m, size=3) != minimum_filter(m, size=3)
    assert not (differ & ~edges).any(), f"{what}: pixels away from any edge differ"
    assert differ.sum() <= max(2, differ.size // 10_000), f"{what}: {differ.sum()} pixels differ"


def masks_per_frame(predictor, frames, prompts, **kwargs) -> dict[int, dict]:
    """`segment`'s parts merged: {frame: {object: mask}}, each object once per frame."""
    merged: dict[int, dict] = {}
    for frame, part in segment(predictor, frames, prompts, **kwargs):
        assert not merged.get(frame, {}).keys() & part.keys(), frame  # exactly once
        merged.setdefault(frame, {}).update(part)
    return merged


def test_sam2_tracks_objects_together_as_it_does_alone(loaded, media_files):
    info = inspect(media_files["odd_mp4"])
    frames = SAM2Frames(media_files["odd_mp4"], loaded.sam2.image_size)
    try:
        assert len(frames) == 30
        assert (frames.video_height, frames.video_width) == (info.height, info.width)
        a = [BoxPrompt("a", 5, (20, 20, 120, 90)), BoxPrompt("a", 12, (30, 20, 130, 90))]
        b = [BoxPrompt("b", 20, (200, 60, 300, 170))]
        # prompted on a's frames: tracked in one batch with a
        c = [BoxPrompt("c", 5, (150, 40, 260, 150)), BoxPrompt("c", 12, (160, 40, 270, 150))]
        d = [BoxPrompt("d", 0, (10, 100, 90, 170))]  # starts on frame 0: no backward pass
        twin = [BoxPrompt("twin", p.frame, p.box) for p in a]  # identical prompts: tracked once
        together = masks_per_frame(loaded.sam2, frames, a + b + c + d + twin)
        objects = {"a": a, "b": b, "c": c, "d": d}
        alone = {o: masks_per_frame(loaded.sam2, frames, x) for o, x in objects.items()}
    finally:
        frames.close()
    assert sorted(together) == list(range(30))
    for t in range(30):
        assert sorted(together[t]) == ["a", "b", "c", "d", "twin"]
        assert together[t]["a"].shape == (info.height, info.width)
        for o in "bd":  # tracked on their own either way: identical
            np.testing.assert_array_equal(together[t][o], alone[o][t][o], err_msg=f"{o} {t}")
        for o in "ac":  # one batch
            assert_equal_up_to_rounding(together[t][o], alone[o][t][o], f"{o} frame {t}")
        np.testing.assert_array_equal(together[t]["twin"], together[t]["a"])
    assert any(alone["c"][t]["c"].any() for t in range(30))


def test_a_request_gets_the_masks_it_would_get_alone(loaded, media_files):
    """A GRPO group's completions start at different keyframes: batching them into one call
    must not change any completion's masks (each box is tracked from its own keyframe; a
    state shared from the earliest prompt once gave later-starting requests other masks)."""
    from omnir1.data import rle
    from omnir1.systems.system2 import KeyframeRequest, System2Request, collect_rle, run_system2

    def request(rid: str, *frames_boxes) -> System2Request:
        keys = tuple(KeyframeRequest(f, "it", (box,)) for f, box in frames_boxes)
        return System2Request(rid, keys)

    group = [
        request("early", (5, (20, 20, 120, 90)), (12, (30, 20, 130, 90))),
        request("late", (20, (200, 60, 300, 170))),
        request("late_too", (20, (40, 40, 140, 120)), (25, (60, 40, 160, 120))),
        System2Request("no_box", (KeyframeRequest(8, "it", ()),)),  # grounded to nothing
    ]
    sink, batched = collect_rle()
    run_system2(loaded, media_files["odd_mp4"], group, sink)
    for r in group:
        sink, alone = collect_rle()
        run_system2(loaded, media_files["odd_mp4"], [r], sink)
        assert sorted(batched[r.id]) == sorted(alone[r.id]) == list(range(30)), r.id
        for t in range(30):
            a, b = rle.decode(batched[r.id][t]), rle.decode(alone[r.id][t])
            assert_equal_up_to_rounding(a, b, f"{r.id} frame {t}")
    assert not any(rle.decode(m).any() for m in batched["no_box"].values())
    assert any(rle.decode(m).any() for m in batched["late"].values())


def test_sam2_computes_each_frames_features_once(loaded, media_files):
    frames = SAM2Frames(media_files["odd_mp4"], loaded.sam2.image_size)
    sam2 = loaded.sam2
    computed = []
    forward_image = sam2.forward_image
    sam2.forward_image = lambda image: computed.append(1) or forward_image(image)
    try:
        # keyframes 5 and 20 of two objects: the backward sweep runs 20..0, the forward sweep
        # 5..29; frames 6..19 are kept between the sweeps, so none is computed twice (within
        # the call alone: no features from earlier calls, test_sam2_features.py has those)
        prompts = [BoxPrompt("a", 5, (20, 20, 120, 90)), BoxPrompt("b", 20, (30, 20, 130, 90))]
        assert len(masks_per_frame(sam2, frames, prompts, features=None)) == 30
    finally:
        del sam2.forward_image
        frames.close()
    assert len(computed) == 30


def run_infer(models: Path, video: Path, out: Path, *extra: str) -> dict:
    args = ["infer", "--video", str(video), "--expression", "the grey shape"]
    assert main([*args, "--models", str(models), "--out", str(out), *extra]) == 0
    return json.loads((out / "result.json").read_text())


def check_outputs(video: Path, out: Path, report: dict) -> list[np.ndarray]:
    info = inspect(video)
    masks = sorted((out / "masks").glob("*.png"))
    assert len(masks) == info.num_frames == report["masks"]["frames"]
    arrays = [np.asarray(Image.open(m)) for m in masks]
    assert all(a.shape == (info.height, info.width) for a in arrays)
    overlay = inspect(out / "overlay.mp4")
    assert overlay.num_frames == info.num_frames
    assert (overlay.height, overlay.width) == (
        info.height + info.height % 2,
        info.width + info.width % 2,
    )
    return arrays


@pytest.mark.slow
@pytest.mark.parametrize("video", ["mp4", "silent_mp4", "odd_mp4", "webm"])
def test_infer_writes_a_mask_per_frame_and_the_overlay(tiny_models, media_files, tmp_path, video):
    path = media_files[video]
    out = tmp_path / "out"
    report = run_infer(
        tiny_models, path, out, "--system1-answer", ANSWER, "--grounder-answer", BOXES
    )
    arrays = check_outputs(path, out, report)
    keyframes = report["keyframes"]
    duration = inspect(path).duration_s
    # 1.00-1.40 s -> frame 2, 6.00-6.40 s -> frame 12, where the clip is that long (a 1 s
    # clip has 2 frames: both moments lie beyond it and there is nothing to segment)
    expected = [t for t, end in ((2, 1.4), (12, 6.4)) if end <= duration]
    assert [k["sample_index"] for k in keyframes] == expected
    assert all(k["boxes"] for k in keyframes)
    assert any(a.any() for a in arrays) == bool(expected)  # SAM2 segmented from the boxes
    for stage in ("load_models", "decode_system1", "decode_system2", "grounder", "sam2"):
        assert report["timings_s"][stage] >= 0
    assert report["replayed"] == {"system1": True, "grounder": True}
    assert report["models"]["name"] == "omnir1-tiny-seed0"


@pytest.mark.slow
def test_infer_on_odd_sized_frames_with_a_separate_audio_file(tiny_models, media_files, tmp_path):
    # JPEG frames keep odd sizes (encoded H.264 pads them to even ones)
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):
        Image.fromarray(rng.integers(0, 255, (181, 333, 3), np.uint8)).save(folder / f"{i}.jpg")
    wav = tmp_path / "track.wav"
    import soundfile

    soundfile.write(wav, np.sin(np.arange(16000 * 4) / 9.0).astype(np.float32), 16000)
    out = tmp_path / "out"
    answer = ANSWER.replace("00:06.00", "00:03.00").replace("00:06.40", "00:03.40")
    report = run_infer(
        tiny_models,
        folder,
        out,
        "--fps",
        "4",
        "--audio",
        str(wav),
        "--system1-answer",
        answer,
        "--grounder-answer",
        BOXES,
    )
    masks = sorted((out / "masks").glob("*.png"))
    assert len(masks) == 16
    assert all(np.asarray(Image.open(m)).shape == (181, 333) for m in masks)
    assert [k["frame"] for k in report["keyframes"]] == [4, 12]  # 1.0 s and 3.0 s at 4 fps
    assert inspect(out / "overlay.mp4").num_frames == 16


@pytest.mark.slow
def test_infer_generating_with_a_random_model_gives_empty_masks_and_reasons(
    tiny_models, media_files, tmp_path
):
    path = media_files["odd_mp4"]
    report = run_infer(tiny_models, path, tmp_path / "out", "--max-new-tokens", "16")
    arrays = check_outputs(path, tmp_path / "out", report)
    assert report["answer"]["problems"]  # garbage is data: reasons, not a crash
    if not report["keyframes"]:
        assert not any(a.any() for a in arrays)


def test_infer_on_an_unreadable_video_is_a_clear_error(tiny_models, media_files, tmp_path, capsys):
    args = ["infer", "--video", str(media_files["corrupt"]), "--expression", "x"]
    assert main([*args, "--models", str(tiny_models), "--out", str(tmp_path / "o")]) == 2
    assert "corrupt.mp4" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_full_omni_checkpoint_loads_as_system1(hub_snapshot):
    # A Qwen2.5-Omni snapshot (thinker + talker + token2wav) as the Hub ships it: the thinker
    # loads from it unchanged
    from transformers import Qwen2_5OmniForConditionalGeneration

    from omnir1.models.loading import load_thinker

    full = Qwen2_5OmniForConditionalGeneration.from_pretrained(hub_snapshot)
    thinker, processor = load_thinker(hub_snapshot)
    expected = dict(full.thinker.named_parameters())
    got = dict(thinker.named_parameters())
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in got)
    assert processor.tokenizer.video_token == "<|VIDEO|>"


def test_pruning_sam2_state_keeps_results_identical(loaded, media_files):
    frames = SAM2Frames(media_files["mp4"], loaded.sam2.image_size)  # 60 frames
    try:
        prompts = [BoxPrompt("a", 30, (40, 30, 200, 120)), BoxPrompt("a", 44, (60, 30, 220, 120))]
        pruned = masks_per_frame(loaded.sam2, frames, prompts, prune=True)
        full = masks_per_frame(loaded.sam2, frames, prompts, prune=False)
    finally:
        frames.close()
    assert sorted(pruned) == list(range(60))
    for t in range(60):
        np.testing.assert_array_equal(pruned[t]["a"], full[t]["a"])


def test_sam2_runs_in_float32_on_cpu(loaded, media_files):
    # The first frame tracked from a keyframe reads only that keyframe's stored (bfloat16)
    # memory, which fails without CUDA autocast unless it is handed back as float32.
    frames = SAM2Frames(media_files["odd_mp4"], loaded.sam2.image_size)
    prompts = [BoxPrompt("a", 0, (20, 20, 120, 90)), BoxPrompt("b", 3, (30, 20, 130, 90))]
    try:
        masks = masks_per_frame(loaded.sam2, frames, prompts)
    finally:
        frames.close()
    assert sorted(masks) == list(range(30))
    assert "_run_memory_encoder" not in vars(loaded.sam2)  # the predictor is left as it was


def test_init_tiny_refuses_a_bad_sam2_size(tmp_path, capsys):
    assert main(["models", "init-tiny", "--out", str(tmp_path / "m"), "--sam2-size", "100"]) == 2
    assert "--sam2-size: SAM2 image size must be a multiple of 16" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
