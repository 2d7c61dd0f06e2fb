"""`omnir1 evaluate` against the official ReVOS and MeViS scripts, on seeded predictions.

The reference below restates how the published scripts score (VISA `tools/eval_revos.py`,
MeViS `tools/eval_mevis.py`, both on the DAVIS-2017 `db_eval_iou` / `db_eval_boundary`),
independently of omnir1's loaders: it reads the data set's JSON files itself, decodes the RLE
with pycocotools and reads the 0/255 prediction PNGs with OpenCV, in uint8 as those scripts do:

- per expression, the ground truth of a frame is the uint8 sum of its objects' masks, the
  prediction the greyscale PNG; J = |P & G| / |P | G| (1 when both are empty) and F the DAVIS
  boundary measure, each averaged over the video's frames (no-target expressions too);
- ReVOS also A = mean(gt == pred) and R = max(1 - ((1 - gt) * pred).sum() / (|FG| + 1e-6), 0)
  on those raw values; a missing video folder or PNG scores the expression [0, 0, 0, 0];
  per-expression percentages are rounded to 2 decimals, averaged per type_id (referring 0,
  reasoning 1), and overall is the mean of the two types;
- MeViS: J and F averaged over all expressions (a missing PNG stops the official script, so
  MeViS predictions here are complete).

Predictions are drawn per expression from every kind the issue names: exact, dilated, eroded,
shifted, empty, full-frame, scattered noise and (ReVOS) a missing frame; the data sets hold
no-target expressions, which get the same kinds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as cocomask
from scipy.ndimage import binary_dilation, binary_erosion

from omnir1.data.synth import SynthConfig, synthesize
from omnir1.eval.protocols import evaluate
from omnir1.eval.reference import boundary_f_toolkit
from omnir1.eval.scoring import official_false_positives

KINDS = ("exact", "dilated", "eroded", "shifted", "empty", "full", "noise", "missing")


# ------------------------------------------------------------------- the official scripts


def official_expression(gts, preds, foreground=None) -> list[float]:
    """[J, F] (and A, R when `foreground` is given) of one expression, from uint8 frames."""
    j, f, a, r = [], [], [], []
    for t, (gt, pred) in enumerate(zip(gts, preds, strict=True)):
        g, p = gt.astype(bool), pred.astype(bool)
        union = np.sum(g | p)
        j.append(1.0 if union == 0 else np.sum(g & p) / union)
        f.append(boundary_f_toolkit(p, g))
        if foreground is not None:
            a.append(np.mean(gt == pred))
            neg = ((1 - gt) * pred).sum()  # uint8: wraps as in the script
            r.append(max(1 - neg / (foreground[t].sum() + 1e-6), 0.0))
    scores = [float(np.mean(j)), float(np.mean(f))]
    if foreground is not None:
        scores += [float(np.mean(a)), float(np.mean(r))]
    return scores


def official_scores(meta: Path, mask_dict: Path, pred: Path, fg_file: Path | None) -> dict:
    """{(video, expression): [J, F(, A, R)]} as the official script's worker computes them."""
    videos = json.loads(meta.read_text())["videos"]
    masks = json.loads(mask_dict.read_text())
    fg = json.loads(fg_file.read_text()) if fg_file is not None else None
    out = {}
    for vid, video in videos.items():
        for exp, expression in video["expressions"].items():
            folder = pred / vid / exp
            files = [folder / f"{name}.png" for name in video["frames"]]
            if not (pred / vid).exists() or not all(f.exists() for f in files):
                out[vid, exp] = [0.0, 0.0, 0.0, 0.0]  # ReVOS: missing -> [0, 0, 0, 0]
                continue
            preds = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]
            gts = []
            for t in range(len(files)):
                gt = np.zeros(preds[0].shape, np.uint8)
                for anno in expression["anno_id"]:
                    rle = masks[str(anno)][t]
                    if rle:
                        gt += cocomask.decode(rle)
                gts.append(gt)
            foreground = None
            if fg is not None:
                foreground = []
                for rle in fg[vid]["masks_rle"]:
                    m = cocomask.decode(rle)
                    foreground.append(m.sum(axis=2).astype(np.uint8) if m.ndim == 3 else m)
            out[vid, exp] = official_expression(gts, preds, foreground)
    return out


def official_revos_summary(meta: Path, scores: dict) -> dict:
    """The ReVOS script's summary: rounded percentages averaged per type, then overall."""
    videos = json.loads(meta.read_text())["videos"]
    rows = {0: [], 1: []}
    for (vid, exp), (j, f, a, r) in scores.items():
        rounded = [round(100 * v, 2) for v in (j, f, (j + f) / 2, a, r)]
        rows[videos[vid]["expressions"][exp]["type_id"]].append(rounded)
    types = {t: np.mean(v, axis=0) / 100 for t, v in rows.items()}
    blocks = {"referring": types[0], "reasoning": types[1], "overall": (types[0] + types[1]) / 2}
    blocks["overall"][2] = (blocks["overall"][0] + blocks["overall"][1]) / 2
    for t in (0, 1):  # JF of a type is (J + F) / 2 of its means
        blocks[("referring", "reasoning")[t]][2] = (types[t][0] + types[t][1]) / 2
    return {k: dict(zip(("J", "F", "JF", "A", "R"), v, strict=True)) for k, v in blocks.items()}


# --------------------------------------------------------------------- seeded predictions


def predicted(kind: str, gt: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """A prediction of `kind` for one frame's ground truth (None: the PNG is not written)."""
    if kind == "exact":
        return gt
    if kind == "dilated":
        return binary_dilation(gt, iterations=3)
    if kind == "eroded":
        return binary_erosion(gt, iterations=2)
    if kind == "shifted":
        return np.roll(gt, (4, -6), axis=(0, 1))
    if kind == "empty":
        return np.zeros_like(gt)
    if kind == "full":
        return np.ones_like(gt)
    if kind == "noise":
        return gt | (rng.random(gt.shape) < 0.002)
    raise AssertionError(kind)


def write_predictions(meta: Path, mask_dict: Path, out: Path, seed: int, kinds) -> dict:
    """0/255 PNGs, as VISA writes them, for every expression of `meta`; returns each
    expression's kind. Kinds go round in a seeded order, so every kind is drawn; no-target
    expressions take their turn like any other."""
    rng = np.random.default_rng(seed)
    order = [str(k) for k in rng.permutation(kinds)]
    videos = json.loads(meta.read_text())["videos"]
    masks = json.loads(mask_dict.read_text())
    drawn = {}
    for vid, video in videos.items():
        for exp, expression in video["expressions"].items():
            kind = drawn[vid, exp] = order[len(drawn) % len(order)]
            skip = int(rng.integers(len(video["frames"]))) if kind == "missing" else -1
            folder = out / vid / exp
            folder.mkdir(parents=True)
            shape = frame_shape(meta, vid, video["frames"][0])  # a video's frames share it
            for t, name in enumerate(video["frames"]):
                gt = np.zeros(shape, bool)
                for anno in expression["anno_id"]:
                    if rle := masks[str(anno)][t]:
                        gt |= cocomask.decode(rle).astype(bool)
                if t == skip:
                    continue
                mask = predicted("exact" if kind == "missing" else kind, gt, rng)
                cv2.imwrite(str(folder / f"{name}.png"), mask.astype(np.uint8) * 255)
    return drawn


def frame_shape(meta: Path, vid: str, name: str) -> tuple[int, int]:
    image = cv2.imread(str(meta.parent / "JPEGImages" / vid / f"{name}.jpg"))
    return image.shape[:2]


# --------------------------------------------------------------------------------- tests


@dataclass
class Run:
    data: Path
    meta: Path
    pred: Path
    drawn: dict  # (video, expression) -> kind
    official: dict  # (video, expression) -> the official [J, F, A, R]


@pytest.fixture(scope="module")
def revos(tmp_path_factory) -> Run:
    # 16 videos: 4 in the valid split, 28 expressions (4 of them no-target)
    data = tmp_path_factory.mktemp("official") / "revos"
    synthesize(SynthConfig(format="revos", videos=16, seed=29), data, progress=False)
    meta, mask_dict = data / "meta_expressions_valid_.json", data / "mask_dict.json"
    pred = data.parent / "pred"
    drawn = write_predictions(meta, mask_dict, pred, seed=29, kinds=KINDS)
    official = official_scores(meta, mask_dict, pred, data / "mask_dict_foreground.json")
    return Run(data, meta, pred, drawn, official)


def by_key(evaluation) -> dict:
    return {(s.video_id, s.expression_id): s for s in evaluation.scores}


def test_the_seeded_predictions_cover_every_kind(revos):
    videos = json.loads(revos.meta.read_text())["videos"]
    null = [k for k in revos.drawn if not videos[k[0]]["expressions"][k[1]]["anno_id"]]
    assert set(revos.drawn.values()) == set(KINDS)
    assert len({revos.drawn[k] for k in null}) > 1  # no-target expressions of several kinds
    assert any(0 < v[0] < 1 for v in revos.official.values())


@pytest.mark.parametrize("workers", [1, 2])
def test_official_png_gives_the_official_revos_figures(revos, workers):
    evaluation = evaluate("revos", revos.data, revos.pred, official_png=True, workers=workers)
    ours = by_key(evaluation)
    assert ours.keys() == revos.official.keys()
    for key, (j, f, a, r) in revos.official.items():
        s, kind = ours[key], revos.drawn[key]
        assert [s.J, s.F, s.A, s.R] == pytest.approx([j, f, a, r], abs=1e-9), (key, kind)
    # the script averages per-expression percentages rounded to 2 decimals: within 0.005 %
    summary = evaluation.summary()
    for block, figures in official_revos_summary(revos.meta, revos.official).items():
        for name, value in figures.items():
            assert summary[block][name] == pytest.approx(value, abs=5e-5 + 1e-9), (block, name)


def test_default_revos_j_and_f_are_the_official_ones_where_nothing_is_missing(revos):
    ours = by_key(evaluate("revos", revos.data, revos.pred))
    for key, (j, f, _, _) in revos.official.items():
        if revos.drawn[key] == "missing":  # ours: the frame scored as an empty mask and counted
            assert ours[key].missing_frames == 1 and ours[key].J > 0
            continue
        assert (ours[key].J, ours[key].F) == pytest.approx((j, f), abs=1e-9), key


def test_mevis_figures_are_the_official_ones(synth_sets, tmp_path):
    data = synth_sets["mevis"] / "valid_u"
    meta, mask_dict = data / "meta_expressions.json", data / "mask_dict.json"
    pred = tmp_path / "pred"
    complete = tuple(k for k in KINDS if k != "missing")  # the script has no missing rule
    drawn = write_predictions(meta, mask_dict, pred, seed=31, kinds=complete)
    official = official_scores(meta, mask_dict, pred, None)
    evaluation = evaluate("mevis", synth_sets["mevis"], pred)
    ours = by_key(evaluation)
    assert ours.keys() == official.keys()
    for key, (j, f) in official.items():
        assert (ours[key].J, ours[key].F) == pytest.approx((j, f), abs=1e-9), (key, drawn[key])
    overall = evaluation.summary()["overall"]
    j, f = np.mean([v[0] for v in official.values()]), np.mean([v[1] for v in official.values()])
    assert (overall["J"], overall["F"], overall["JF"]) == pytest.approx((j, f, (j + f) / 2))


def test_official_false_positives_wrap_as_the_scripts_uint8_arithmetic():
    # Overlapping objects: the script's ground truth is 2 there, and ((1 - gt) * pred) wraps.
    rng = np.random.default_rng(5)
    objects = np.zeros((3, 40, 50), bool)
    objects[0, 5:25, 5:30] = objects[1, 15:35, 20:45] = objects[2, 18:22, 22:28] = True
    pred = rng.random((40, 50)) < 0.5
    gt = objects.astype(np.uint8).sum(axis=0, dtype=np.uint8)
    script = int(((1 - gt) * (pred.astype(np.uint8) * 255)).sum())
    assert (gt >= 2).any() and (gt == 3).any()
    assert official_false_positives(objects, pred) == script
    assert official_false_positives(objects[:0], pred) == 255 * int(pred.sum())
