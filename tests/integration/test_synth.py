"""The synthetic generator: ground truth agrees with the files, expressions are true of the
scene they describe, and the soundtrack carries the events that expressions name."""

import csv
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omnir1.benchmarks.registry import load
from omnir1.data.synth import SynthConfig, synthesize
from omnir1.data.synth.expressions import expression_kind
from omnir1.data.synth.generate import video_scene
from omnir1.data.synth.scene import COLORS, SIZES, SOUND_BANDS, SOUNDS, UNSEEN_SHAPES, render
from omnir1.errors import ConfigError
from omnir1.media import load_audio

FORMATS = ("refavs", "revos", "mevis")
SR = 16_000


def cfg(fmt: str) -> SynthConfig:
    return SynthConfig(format=fmt, videos=6, seed=3)  # as in the synth_sets fixture


def scenes(fmt: str) -> dict:
    out = {}
    for i in range(cfg(fmt).videos):
        vid, split, scene, _ = video_scene(cfg(fmt), i)
        out[vid] = (split, scene)
    return out


def band_energy(audio: np.ndarray, band: tuple[float, float], win_s: float = 0.1) -> np.ndarray:
    """Energy in a frequency band for consecutive windows of `win_s` seconds."""
    n = int(win_s * SR)
    frames = audio[: len(audio) // n * n].reshape(-1, n) * np.hanning(n)
    spec = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(n, 1 / SR)
    return spec[:, (freqs >= band[0]) & (freqs <= band[1])].sum(axis=1)


def first_visible(sample) -> float:
    for t, masks in enumerate(sample.masks()):
        if masks.any():
            return t / sample.fps
    raise AssertionError("never visible")


@pytest.mark.parametrize("fmt", FORMATS)
def test_masks_agree_with_files_and_frames(synth_sets, fmt):
    truth = {vid: render(scene)[1] for vid, (_, scene) in scenes(fmt).items()}
    checked = 0
    for sample in load(fmt, synth_sets[fmt]):
        for t, (masks, frame_path) in enumerate(
            zip(sample.masks(), sample.frame_paths, strict=True)
        ):
            frame = np.asarray(Image.open(frame_path).convert("RGB")).astype(float)
            for obj_id, mask in zip(sample.object_ids, masks, strict=True):
                np.testing.assert_array_equal(mask, truth[sample.video_id][int(obj_id)][t])
                if mask.sum() > 40:  # the pixels under the mask show the object's colour
                    _, scene = scenes(fmt)[sample.video_id]
                    color = next(o.color for o in scene.objects if o.obj_id == int(obj_id))
                    inner = (
                        mask
                        & np.roll(mask, 2, 0)
                        & np.roll(mask, -2, 0)
                        & np.roll(mask, 2, 1)
                        & np.roll(mask, -2, 1)
                    )
                    if inner.sum() > 10:
                        assert np.abs(frame[inner].mean(0) - COLORS[color]).max() < 30
                checked += 1
    assert checked > 50


def test_revos_foreground_is_union_of_objects(synth_sets):
    from omnir1.data import rle
    from omnir1.fsutil import read_json

    fg = read_json(synth_sets["revos"] / "mask_dict_foreground.json")
    for vid, (_, scene) in scenes("revos").items():
        masks = render(scene)[1]
        union = np.any(np.stack(list(masks.values())), axis=0)
        decoded = np.stack([rle.decode(r) for r in fg[vid]["masks_rle"]])
        np.testing.assert_array_equal(decoded, union)


def _attributes(text: str) -> dict:
    words = set(re.findall(r"[a-z]+", text))
    return {
        "color": words & set(COLORS),
        "shape": words & set(SOUNDS),
        "size": words & set(SIZES),
    }


@pytest.mark.parametrize("fmt", FORMATS)
def test_expressions_are_true_of_their_scene(synth_sets, fmt):
    all_scenes = scenes(fmt)
    kinds = set()
    for sample in load(fmt, synth_sets[fmt]):
        split, scene = all_scenes[sample.video_id]
        text, ids = sample.expression, {int(i) for i in sample.object_ids}
        if sample.is_null:
            kinds.add("null")
            attrs = _attributes(text)
            (color,), (shape,) = attrs["color"], attrs["shape"]
            assert not any(o.color == color and o.shape == shape for o in scene.objects), text
            assert not any(m.any() for m in sample.masks())
        elif "making the" in text:
            kinds.add("audio")
            (target,) = [o for o in scene.objects if o.obj_id in ids]
            assert SOUNDS[target.shape] in text and target.sound_intervals
            assert sum(o.shape == target.shape for o in scene.objects) == 1
        elif text.startswith("all the") or " and the " in text:
            kinds.add("multi")
            assert len(ids) >= 2
        elif re.search(r"enters|appears|leaves|never", text):
            kinds.add("temporal")
            if fmt == "revos":
                assert sample.type_id == 1 and sample.expression_type == "reasoning"
        else:
            kinds.add("appearance")
            attrs = _attributes(text)
            matching = {
                o.obj_id
                for o in scene.objects
                if all(getattr(o, k) in v for k, v in attrs.items() if v)
            }
            assert matching == ids, text
        if split == "test_u" and not sample.is_null:
            assert all(o.shape in UNSEEN_SHAPES for o in scene.objects if o.obj_id in ids)
        if split == "test_n":
            assert sample.is_null and sample.expression_type == "null"
    expected = {"appearance", "audio", "temporal", "null"} | (
        {"multi"} if fmt != "refavs" else set()
    )
    assert expected <= kinds


@pytest.mark.parametrize("fmt", FORMATS)
def test_expression_kind_reads_the_kind_back_from_the_text(synth_sets, fmt):
    """Data sets keep only an expression's text: its kind read back from the words gives the
    generator's own count of every kind."""
    counts: dict[str, int] = {}
    for sample in load(fmt, synth_sets[fmt]):
        kind = "null" if sample.is_null else expression_kind(sample.expression)
        counts[kind] = counts.get(kind, 0) + 1
    summary = json.loads((synth_sets[fmt] / "synth_summary.json").read_text())
    assert counts == summary["expressions_by_kind"]


@pytest.mark.parametrize(("fmt", "source"), [("refavs", "wav"), ("revos", "wav"), ("mevis", "mp4")])
def test_audio_events_line_up_with_expressions(synth_sets, fmt, source):
    all_scenes = scenes(fmt)
    checked = 0
    for sample in load(fmt, synth_sets[fmt]):
        if "making the" not in sample.expression and "starts" not in sample.expression:
            continue
        _, scene = all_scenes[sample.video_id]
        shape = next(s for s, name in SOUNDS.items() if name in sample.expression)
        path = sample.audio_path if source == "wav" else sample.video_path
        energy = band_energy(load_audio(path), SOUND_BANDS[shape])
        sounding = np.zeros(len(energy), bool)
        for obj in scene.objects:
            if obj.shape == shape:
                for s, e in obj.sound_intervals:
                    sounding[int(np.ceil(s / 0.1)) : int(e / 0.1)] = True
        assert sounding.any()
        # the named sound is loud exactly when its object sounds
        assert energy[sounding].mean() > 20 * energy[~sounding].mean()
        if "starts" in sample.expression:  # "enters after the X starts": check from the files
            onset = np.flatnonzero(energy > 0.05 * energy[sounding].mean())[0] * 0.1
            assert first_visible(sample) > onset, sample.expression
        checked += 1
    assert checked >= 1


def test_refavs_layout(synth_sets):
    root = synth_sets["refavs"]
    rows = list(csv.DictReader((root / "metadata.csv").open()))
    assert list(rows[0]) == ["vid", "uid", "split", "fid", "exp"]  # official header order
    assert {r["split"] for r in rows} == {"train", "test_s", "test_u", "test_n"}
    for r in rows:
        frames = sorted((root / "media" / r["vid"] / "frames").iterdir())
        assert [f.name for f in sorted(frames, key=lambda p: int(p.stem))] == [
            f"{i}.jpg" for i in range(10)
        ]
        masks = root / "gt_mask" / r["vid"] / f"fid_{r['fid']}"
        assert sorted(p.name for p in masks.iterdir()) == [f"{i:05d}.png" for i in range(10)]
        if r["split"] == "test_n":
            assert all(not np.asarray(Image.open(p)).any() for p in masks.iterdir())
    with (root / "media" / rows[0]["vid"] / "audio.wav").open("rb") as fh:
        import wave

        with wave.open(fh) as w:
            assert (w.getframerate(), w.getnchannels(), w.getnframes()) == (SR, 1, 10 * SR)


def test_deterministic_and_seed_sensitive(tmp_path: Path):
    def build(name: str, seed: int) -> Path:
        synthesize(
            SynthConfig(format="revos", videos=3, seed=seed), tmp_path / name, progress=False
        )
        return tmp_path / name

    a, b, c = build("a", 7), build("b", 7), build("c", 8)
    for rel in (
        "meta_expressions_train_.json",
        "mask_dict.json",
        "JPEGImages/syn0001/00010.jpg",
        "Audio/syn0002.wav",
    ):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert (a / "mask_dict.json").read_bytes() != (c / "mask_dict.json").read_bytes()


def test_refuses_to_overwrite_without_flag(tmp_path: Path):
    out = tmp_path / "set"
    synthesize(SynthConfig(format="mevis", videos=1), out, progress=False)
    with pytest.raises(ConfigError, match="exists and is not empty"):
        synthesize(SynthConfig(format="mevis", videos=1), out, progress=False)
    synthesize(SynthConfig(format="mevis", videos=2), out, overwrite=True, progress=False)
    assert len(list((out / "train" / "JPEGImages").iterdir())) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["set"]  # no staging or old folders left


def test_position_background_codes_x_in_red_and_y_in_green_and_keeps_the_objects():
    base = SynthConfig(format="revos", videos=2, seed=3)
    coded = SynthConfig(format="revos", videos=2, seed=3, background="position")
    _, _, plain, _ = video_scene(base, 0)
    _, _, scene, _ = video_scene(coded, 0)
    assert [o.start for o in scene.objects] == [o.start for o in plain.objects]
    from omnir1.data.synth.scene import background, render_frame

    bg = background(scene)
    assert np.all(np.diff(bg[..., 0], axis=1) > 0) and np.allclose(np.diff(bg[..., 0], axis=0), 0)
    assert np.all(np.diff(bg[..., 1], axis=0) > 0) and np.allclose(np.diff(bg[..., 1], axis=1), 0)
    frames, masks = render(scene)
    frame, drawn = render_frame(scene, scene.frame_time(7))
    assert np.array_equal(frame, frames[7])
    for obj_id, m in masks.items():
        assert np.array_equal(drawn.get(obj_id, np.zeros_like(m[7])), m[7])


def test_object_scale_and_visits():
    big = SynthConfig(format="revos", videos=4, seed=3, object_scale=2.0, visit_fraction=1.0)
    for i in range(big.videos):
        _, _, scene, _ = video_scene(big, i)
        for o in scene.objects:
            assert scene.radius(o) == pytest.approx(2 * SIZES[o.size] * 180)
            assert 2.0 <= o.t_out - o.t_in <= 3.5  # every object visits
    with pytest.raises(ConfigError):
        SynthConfig(background="checkerboard")


@pytest.mark.parametrize("duration", [10.0, 4.0])
def test_turns_layout_shows_at_most_one_object_at_a_time(duration):
    cfg = SynthConfig(format="revos", videos=6, seed=5, layout="turns", duration_s=duration)
    for i in range(cfg.videos):
        _, _, scene, _ = video_scene(cfg, i)
        assert 2 <= len(scene.objects) <= 3
        assert scene.num_frames == round(duration * 6)
        windows = sorted((o.t_in, o.t_out) for o in scene.objects)
        assert all(0.0 <= a < b <= scene.duration_s for a, b in windows)
        assert all(b - a >= 0.5 for a, b in windows)  # System 1's 2 fps sees every turn
        assert all(prev[1] <= nxt[0] for prev, nxt in itertools.pairwise(windows))
        _, masks = render(scene)
        in_view = np.stack([m.any(axis=(1, 2)) for m in masks.values()])  # (objects, frames)
        assert in_view.sum(axis=0).max() == 1 and in_view.any(axis=1).all()
    with pytest.raises(ConfigError, match="layout"):
        SynthConfig(layout="grid")
    with pytest.raises(ConfigError, match="duration must be in"):
        SynthConfig(duration_s=1.0)


def test_timecode_background_says_when_in_blue():
    cfg = SynthConfig(format="revos", videos=1, seed=3, background="timecode", layout="turns")
    _, _, scene, _ = video_scene(cfg, 0)
    frames, masks = render(scene)
    free = ~np.any(np.stack(list(masks.values())), axis=0)  # (T, H, W) background pixels
    blue = [frames[t, ..., 2][free[t]].mean() for t in range(len(frames))]
    assert np.all(np.diff(blue) > 0) and blue[0] < 60 and blue[-1] > 200
    red = frames[0, ..., 0].astype(int)
    assert np.all(np.diff(red[free[0].all(axis=1)], axis=1) >= 0)  # x still in red
