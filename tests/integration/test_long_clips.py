"""Real time on clips of any length (docs/design.md §2): System 1 sees at most
`system1.max_frames` frames, 2 fps on short clips and spread evenly over longer ones, and the
processor, the prompt, the parser, the keyframe rewards and System 2's frame lookup all use the
times the frames were really sampled at. Real encoded videos of 5, 30 and 90 s at 6, 25 and
30 fps, a variable-frame-rate file and a frame folder with its --fps."""

from __future__ import annotations

import json
import math
import random
from fractions import Fraction

import numpy as np
import pytest

from omnir1.config import System1Params
from omnir1.media import write_video
from omnir1.rl.rewards import RewardTarget, video_accuracy_reward
from omnir1.systems.parsing import parse_answer
from omnir1.systems.prompts import format_time
from omnir1.systems.reasoning import GlobalReasoner, load_clip

S1 = System1Params()  # the product's System 1: 2 fps, at most 24 frames
CLIPS = [(5, 6), (30, 25), (90, 30)]  # (seconds, frames per second)


def frame_answer(*moments: tuple[float, float]) -> str:
    items = [
        {"start_time": format_time(a), "end_time": format_time(b), "description": "the dot"}
        for a, b in moments
    ]
    return f"<think>x</think><answer>{json.dumps(items)}</answer>"


@pytest.fixture(scope="module")
def long_videos(tmp_path_factory) -> dict:
    """Videos of 32x32 px whose frame i has brightness i % 200 (small: a 90 s clip encodes in
    a few seconds)."""
    root = tmp_path_factory.mktemp("long")
    out = {}
    for seconds, fps in CLIPS:
        frames = (np.full((32, 32, 3), i % 200, np.uint8) for i in range(seconds * fps))
        out[(seconds, fps)] = write_video(root / f"clip_{seconds}s_{fps}fps.mp4", frames, fps=fps)
    return out


@pytest.mark.parametrize(("seconds", "fps"), CLIPS)
def test_every_sampled_frames_time_maps_back_to_it_and_the_end_of_the_clip_bounds_answers(
    long_videos, seconds, fps
):
    clip = load_clip(long_videos[(seconds, fps)], cfg=S1)
    times = clip.frame_times
    assert clip.duration_s == pytest.approx(seconds, abs=1 / fps)
    assert times.num_frames == min(math.ceil(seconds * S1.fps), S1.max_frames)
    # 2 fps where it fits, else max_frames spread over the clip: 24 frames over 90 s is 1 per 3.75 s
    expected_rate = S1.fps if seconds * S1.fps <= S1.max_frames else S1.max_frames / seconds
    assert times.rate == pytest.approx(expected_rate, rel=0.01)
    # the source frame shown at each sample time is the last one at or before it
    assert clip.source_indices.tolist() == [math.floor(t * fps + 1e-6) for t in clip.times]
    for k, t in enumerate(clip.times):
        parsed = parse_answer(frame_answer((t, t)), times, max_keyframes=1)
        assert parsed.keyframes == [k], (k, t)
    # any time inside the clip falls on the last frame sampled by then; past the end: rejected
    middle = 0.77 * seconds
    parsed = parse_answer(frame_answer((middle, middle)), times)
    assert parsed.keyframes == [int(np.searchsorted(clip.times, middle, side="right")) - 1]
    assert parse_answer(frame_answer((0, clip.duration_s)), times).valid_moments == 1
    late = parse_answer(frame_answer((0, clip.duration_s + 0.02)), times)
    assert late.valid_moments == 0 and late.moments[0].problems == ["beyond_duration"]


def test_a_perfect_answer_on_a_90_s_clip_earns_the_full_keyframe_reward(long_videos):
    clip = load_clip(long_videos[(90, 30)], cfg=S1)
    visible = [19, 20, 22, 23]  # the last quarter of the clip: 71 s to 86 s
    n = clip.num_frames
    areas = [[100 if f in visible else 0] for f in range(n)]
    boxes = [[[0.0, 0.0, 10.0, 10.0]] if f in visible else [] for f in range(n)]
    target = RewardTarget(n, areas, [a[0] for a in areas], boxes)
    answer = frame_answer(*[(clip.times[f], clip.times[f]) for f in visible])
    parsed = parse_answer(answer, clip.frame_times)
    assert parsed.keyframes == visible
    reward = video_accuracy_reward(parsed, target, None)
    # per moment 0.2 present + 0.2 parsed + 0.2 valid + 1.0 visible; 4 frames: 0.4 * 4
    assert reward.components["cumulated"] == pytest.approx(1.6)
    assert reward.components["frame"] == pytest.approx(1.6)
    assert reward.components["overlap"] == 0


def test_variable_frame_rate_video_maps_answer_times_to_the_frames_shown(tmp_path):
    """A file whose frames come at irregular times (a phone recording): the frame shown at a
    sample time is the last one whose timestamp is not after it."""
    import av

    path = tmp_path / "vfr.mkv"
    rng = np.random.default_rng(0)
    stamps = np.cumsum(rng.uniform(0.02, 0.3, 200))  # 200 frames over ~32 s
    stamps -= stamps[0]
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(stamps):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i % 200, np.uint8), "rgb24")
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            out.mux(stream.encode(frame.reformat(format="yuv420p")))
        out.mux(stream.encode(None))
    clip = load_clip(path, cfg=S1)
    assert clip.num_frames == S1.max_frames and clip.duration_s > 30
    shown = [int(np.searchsorted(stamps, t + 1e-6, side="right")) - 1 for t in clip.times]
    assert clip.source_indices.tolist() == shown
    for k, t in enumerate(clip.times):
        assert parse_answer(frame_answer((t, t)), clip.frame_times).keyframes == [k]


def test_a_frame_folder_runs_on_its_given_rate(tmp_path):
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(90):  # 90 s at 1 fps
        Image.fromarray(np.full((16, 16, 3), i, np.uint8)).save(folder / f"{i:05d}.png")
    clip = load_clip(folder, cfg=S1, folder_fps=1.0)
    assert clip.duration_s == 90 and clip.num_frames == 24
    assert clip.frame_times.rate == pytest.approx(24 / 90)
    assert clip.source_indices.tolist() == [math.floor(t + 1e-9) for t in clip.times]
    t = clip.times[-1]
    assert parse_answer(frame_answer((t, t)), clip.frame_times).keyframes == [23]


def test_the_processor_places_the_frames_at_their_real_seconds(tiny_models, long_videos):
    """Qwen2.5-Omni's temporal positions are `video_second_per_grid` (2 frames per grid) times
    25 per second: they must say 3.75 s per frame on a 90 s clip, 0.5 s at 2 fps, and the audio
    interleaved in 2-second chunks must follow them."""
    from omnir1.models.loading import load_models

    models = load_models(tiny_models, system2=False)
    reasoner = GlobalReasoner(models.system1, models.system1_processor, S1)
    for seconds, fps in [(5, 6), (90, 30)]:
        clip = load_clip(long_videos[(seconds, fps)], cfg=S1)
        inputs = reasoner.inputs(clip, "the dot", random.Random(0))
        per_grid = float(inputs["video_second_per_grid"][0])
        spacing = float(np.diff(clip.times).mean())
        assert per_grid == pytest.approx(2 * spacing, rel=1e-4), (seconds, per_grid)
        # the prompt states the clip's real length
        prompt = reasoner.chat_prompt(reasoner.messages(clip, "the dot", random.Random(0)))
        assert f"({format_time(clip.duration_s)} long)" in prompt
