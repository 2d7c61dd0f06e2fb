"""Evaluation protocols end to end on data sets on disk.

A hand-made ReVOS set (odd frame size, excluded and null expressions, a missing prediction
frame) checks every number against the definitions; the synthetic sets check the CLI with
predictions derived from their own ground truth.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omnir1.benchmarks.registry import load
from omnir1.cli import main
from omnir1.data import rle
from omnir1.errors import InputError
from omnir1.eval.protocols import evaluate
from omnir1.eval.reference import boundary_f_reference, jaccard_reference

H, W = 7, 9  # odd on purpose


def box(r0, r1, c0, c1) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[r0:r1, c0:c1] = True
    return m


A = box(1, 4, 1, 4)  # object 1: in every frame
B = box(4, 6, 6, 8)  # object 2: in frames 0 and 1 only
EMPTY = np.zeros((H, W), bool)


def save_png(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)


@pytest.fixture
def tiny_revos(tmp_path: Path) -> tuple[Path, Path]:
    data, pred = tmp_path / "revos", tmp_path / "pred"
    frames = ["00000", "00001", "00002"]
    for f in frames:
        (data / "JPEGImages" / "v1").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (W, H), (90, 90, 90)).save(data / "JPEGImages" / "v1" / f"{f}.jpg")
    meta = {
        "videos": {
            "v1": {
                "frames": frames,
                "expressions": {
                    "0": {"exp": "the square", "obj_id": [1], "anno_id": [11], "type_id": 0},
                    "1": {"exp": "both", "obj_id": [1, 2], "anno_id": [11, 12], "type_id": 1},
                    "2": {"exp": "excluded", "obj_id": [2], "anno_id": [12], "type_id": 2},
                    "3": {"exp": "the absent thing", "obj_id": [], "anno_id": [], "type_id": 0},
                },
            }
        }
    }
    (data / "meta_expressions_valid_.json").write_text(json.dumps(meta))
    mask_dict = {
        "11": [rle.encode(A)] * 3,
        "12": [rle.encode(B), rle.encode(B), None],
    }
    (data / "mask_dict.json").write_text(json.dumps(mask_dict))
    foreground = {"v1": {"masks_rle": [rle.encode(A | B), rle.encode(A | B), rle.encode(A)]}}
    (data / "mask_dict_foreground.json").write_text(json.dumps(foreground))
    # expression 0: perfect, empty, missing file
    save_png(pred / "v1" / "0" / "00000.png", A)
    save_png(pred / "v1" / "0" / "00001.png", EMPTY)
    # expression 1: only object 1 on every frame
    for f in frames:
        save_png(pred / "v1" / "1" / f"{f}.png", A)
    # expression 3 (null): one stray pixel on frame 1
    for i, f in enumerate(frames):
        save_png(pred / "v1" / "3" / f"{f}.png", box(0, 1, 0, 1) if i == 1 else EMPTY)
    return data, pred


def jf(preds: list[np.ndarray], gts: list[np.ndarray]) -> tuple[float, float]:
    j = np.mean([jaccard_reference(p, g) for p, g in zip(preds, gts, strict=True)])
    f = np.mean([boundary_f_reference(p, g) for p, g in zip(preds, gts, strict=True)])
    return float(j), float(f)


def test_revos_protocol_on_a_hand_made_set(tiny_revos):
    data, pred = tiny_revos
    ev = evaluate("revos", data, pred)
    by_id = {s.expression_id: s for s in ev.scores}
    assert set(by_id) == {"0", "1", "3"}  # type_id 2 is excluded, not scored
    assert ev.counts["excluded"] == 1
    assert ev.counts["missing_frames"] == 1 and ev.counts["partly_missing_predictions"] == 1

    e0 = by_id["0"]
    assert e0.frame_j == [1.0, 0.0, 0.0]
    assert (e0.J, e0.F) == pytest.approx(jf([A, EMPTY, EMPTY], [A, A, A]))
    assert e0.A == pytest.approx(np.mean([1.0, 54 / 63, 54 / 63]))
    assert e0.R == pytest.approx(1.0)  # no false positives

    e1 = by_id["1"]
    assert e1.J == pytest.approx((9 / 13 + 9 / 13 + 1.0) / 3)
    assert (e1.J, e1.F) == pytest.approx(jf([A, A, A], [A | B, A | B, A]))

    e3 = by_id["3"]
    # a null expression is scored frame by frame, as the official code does: one stray pixel
    # on frame 1 of 3 costs that frame only; the all-or-nothing rule is N_acc, its own figure
    assert (e3.J, e3.F) == pytest.approx((2 / 3, 2 / 3)) and e3.N_acc == 0.0
    assert e0.N_acc is None and e1.N_acc is None
    # R: 1 false-positive pixel against |FG| = 13 on frame 1
    assert e3.R == pytest.approx((1 + (1 - 1 / (13 + 1e-6)) + 1) / 3)

    summary = ev.summary()
    referring = (e0.JF + e3.JF) / 2
    assert summary["referring"]["JF"] == pytest.approx(referring)
    assert summary["reasoning"]["JF"] == pytest.approx(e1.JF)
    assert summary["overall"]["JF"] == pytest.approx((referring + e1.JF) / 2)
    assert summary["overall"]["J"] == pytest.approx(((e0.J + e3.J) / 2 + e1.J) / 2)
    assert summary["referring"]["N_acc"] == 0.0 and summary["reasoning"]["N_acc"] is None


@pytest.mark.parametrize("workers", [1, 2])
def test_official_png_handling_reproduces_the_official_revos_script(tiny_revos, workers):
    """--official-png: A and R from VISA's 0/255 PNG values (A counts only pixels both call
    background; one false-positive pixel weighs 255 in R) and an expression with a missing PNG
    scored [0, 0, 0, 0]; the same through the worker pool."""
    data, pred = tiny_revos
    ours = {s.expression_id: s for s in evaluate("revos", data, pred).scores}
    official = {
        s.expression_id: s
        for s in evaluate("revos", data, pred, official_png=True, workers=workers).scores
    }
    e0, e1, e3 = official["0"], official["1"], official["3"]
    assert (e0.J, e0.F, e0.A, e0.R) == (0.0, 0.0, 0.0, 0.0)  # frame 2's PNG is missing
    assert ours["0"].J > 0 and ours["0"].A > 0.9
    # expression 1 predicts A where the ground truth is A | B: agreement is the background only
    size = A.size
    background = [size - np.count_nonzero(A | B)] * 2 + [size - np.count_nonzero(A)]
    assert e1.A == pytest.approx(np.mean(background) / size)
    assert (e1.J, e1.F) == (ours["1"].J, ours["1"].F)  # J and F do not change
    # the null expression's stray pixel against |FG| = 13: max(1 - 255 / 13, 0) = 0
    assert e3.R == pytest.approx((1 + 0 + 1) / 3)
    assert ours["3"].R == pytest.approx((1 + (1 - 1 / (13 + 1e-6)) + 1) / 3)


def test_null_expression_with_an_empty_prediction_scores_one(tiny_revos):
    data, pred = tiny_revos
    save_png(pred / "v1" / "3" / "00001.png", EMPTY)
    e3 = next(s for s in evaluate("revos", data, pred).scores if s.expression_id == "3")
    assert (e3.J, e3.F, e3.R, e3.N_acc) == (1.0, 1.0, 1.0, 1.0)


def test_foreground_without_its_file_is_the_union_of_annotated_objects(tiny_revos):
    data, pred = tiny_revos
    with_file = evaluate("revos", data, pred).scores
    (data / "mask_dict_foreground.json").unlink()
    without = evaluate("revos", data, pred).scores
    assert [s.R for s in without] == [s.R for s in with_file]


def test_wrong_size_and_corrupt_predictions_name_the_file(tiny_revos):
    data, pred = tiny_revos
    bad = pred / "v1" / "1" / "00002.png"
    Image.new("L", (W + 1, H)).save(bad)
    with pytest.raises(InputError, match=r"00002\.png.*10x7 \(WxH\) but the frame is 9x7"):
        evaluate("revos", data, pred)
    bad.write_bytes(b"not a png")
    with pytest.raises(InputError, match=r"00002\.png.*cannot decode"):
        evaluate("revos", data, pred)
    good = (pred / "v1" / "1" / "00001.png").read_bytes()
    bad.write_bytes(good[: len(good) // 2])  # a PNG header, then nothing
    with pytest.raises(InputError, match=r"00002\.png.*cannot decode"):
        evaluate("revos", data, pred)


@pytest.mark.parametrize("mode", ["P", "I;16", "RGB", "1", "LA"])
def test_prediction_png_modes(tiny_revos, mode):
    data, pred = tiny_revos
    before = evaluate("revos", data, pred).scores
    for f in (pred / "v1" / "1").iterdir():
        mask = np.asarray(Image.open(f)) > 0
        if mode == "P":
            img = Image.fromarray(mask.astype(np.uint8), "L").convert("P")  # index 1 = object
        elif mode == "RGB":
            img = Image.fromarray(np.stack([mask * 0, mask * 0, mask * 200], -1).astype(np.uint8))
        elif mode == "LA":
            img = Image.fromarray(mask.astype(np.uint8) * 255).convert("LA")
        else:
            img = Image.fromarray(mask.astype(np.uint8) * 255).convert(mode)
        img.save(f)
    after = evaluate("revos", data, pred).scores
    assert [s.JF for s in after] == [s.JF for s in before]


# ------------------------------------------------------------------------ CLI on synth data


def write_predictions(fmt: str, data: Path, out: Path, transform) -> None:
    """One PNG per frame for every expression: transform(ground-truth union, other objects)."""
    for s in load(fmt, data):
        folder = out.joinpath(*s.video_id.split("/"), s.expression_id)
        h, w = s.frame_size()
        for t, objects in enumerate(s.masks()):
            gt = objects.any(axis=0) if len(objects) else np.zeros((h, w), bool)
            name = f"{t:05d}" if fmt == "refavs" else s.frame_names[t]
            save_png(folder / f"{name}.png", transform(gt, s, t))


def shift(mask: np.ndarray, dy: int = 3, dx: int = 5) -> np.ndarray:
    out = np.zeros_like(mask)
    out[max(dy, 0) : mask.shape[0] + min(dy, 0), max(dx, 0) : mask.shape[1] + min(dx, 0)] = mask[
        max(-dy, 0) : mask.shape[0] - max(dy, 0), max(-dx, 0) : mask.shape[1] - max(dx, 0)
    ]
    return out


def erode(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_erosion

    return binary_erosion(mask, iterations=2)


def expected_scores(fmt: str, data: Path, transform, splits) -> dict[str, tuple[float, float]]:
    """(J, F) per expression straight from the reference definitions (no-target expressions
    frame by frame, like any other)."""
    out = {}
    for s in load(fmt, data):
        if s.split not in splits or s.expression_type == "excluded":
            continue
        h, w = s.frame_size()
        gts = [o.any(axis=0) if len(o) else np.zeros((h, w), bool) for o in s.masks()]
        preds = [transform(g, s, t) for t, g in enumerate(gts)]
        out[s.expression_id] = jf(preds, gts)
    return out


SPLITS = {"revos": ["valid"], "mevis": ["valid_u"], "refavs": ["test_s", "test_u", "test_n"]}


def run_cli(fmt: str, data: Path, pred: Path, out: Path, *extra: str) -> dict:
    args = ["--benchmark", fmt, "--data", str(data), "--pred", str(pred), "--out", str(out)]
    code = main(["evaluate", *args, "--quiet", *extra])
    assert code == 0
    return json.loads(out.read_text())


def test_perfect_predictions_score_one(synth_sets, tmp_path):
    for fmt in ("revos", "mevis", "refavs"):
        pred = tmp_path / fmt
        write_predictions(fmt, synth_sets[fmt], pred, lambda gt, s, t: gt)
        result = run_cli(fmt, synth_sets[fmt], pred, tmp_path / f"{fmt}.json", "--workers", "1")
        summary = result["summary"]
        assert result["counts"]["missing_predictions"] == 0
        assert result["counts"]["unexpected_prediction_folders"] == 0
        if fmt == "refavs":
            for split in ("seen", "unseen"):
                assert summary[split]["official"]["mIoU"] == pytest.approx(1.0, abs=1e-6)
                assert summary[split]["official"]["F"] == 1.0
                assert summary[split]["davis"]["JF"] == 1.0
            assert summary["null"]["official"]["S"] == 0.0
        else:
            for key in ("J", "F", "JF", "A"):
                assert summary["overall"][key] == 1.0
        if fmt == "revos":
            assert summary["overall"]["R"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("name", "transform"),
    [
        ("shifted", lambda gt, s, t: shift(gt)),
        ("eroded", lambda gt, s, t: erode(gt)),
        ("empty", lambda gt, s, t: np.zeros_like(gt)),
    ],
)
def test_degraded_predictions_score_what_the_definitions_give(
    synth_sets, tmp_path, name, transform
):
    for fmt in ("revos", "refavs"):
        pred = tmp_path / fmt
        write_predictions(fmt, synth_sets[fmt], pred, transform)
        out = tmp_path / f"{fmt}.json"
        run_cli(fmt, synth_sets[fmt], pred, out)
        expected = expected_scores(fmt, synth_sets[fmt], transform, SPLITS[fmt])
        assert_csv_matches(out, expected)
        if name != "empty":
            assert any(0 < j < 1 for j, _ in expected.values())  # a real degradation


def csv_rows(out: Path) -> dict[str, dict]:
    with out.with_suffix(".csv").open() as fh:
        return {r["expression_id"]: r for r in csv.DictReader(fh)}


def assert_csv_matches(out: Path, expected: dict[str, tuple[float, float]]) -> None:
    rows = csv_rows(out)
    assert set(rows) == set(expected)
    for eid, (j, f) in expected.items():
        assert float(rows[eid]["J"]) == pytest.approx(j, abs=1e-9), eid
        assert float(rows[eid]["F"]) == pytest.approx(f, abs=1e-9), eid


def test_extra_object_costs_jaccard_and_robustness(synth_sets, tmp_path):
    data = synth_sets["revos"]
    samples = [s for s in load("revos", data) if s.split == "valid"]
    # every annotated object of the video, for each frame: the prediction takes them all
    video_union: dict[tuple[str, int], np.ndarray] = {}
    for s in samples:
        for t, objects in enumerate(s.masks()):
            if len(objects):
                key = (s.video_id, t)
                video_union[key] = video_union.get(key, False) | objects.any(axis=0)

    def everything(gt, s, t):
        return video_union.get((s.video_id, t), gt) | gt

    pred = tmp_path / "pred"
    write_predictions("revos", data, pred, everything)
    out = tmp_path / "out.json"
    result = run_cli("revos", data, pred, out)
    expected = expected_scores("revos", data, everything, ["valid"])
    assert_csv_matches(out, expected)
    single = [s for s in samples if len(s.object_ids) == 1]
    assert any(expected[s.expression_id][0] < 1 for s in single)  # extra objects cost J
    # R from its definition: false positives against all annotated pixels of the frame
    rows = csv_rows(out)
    for s in samples:
        h, w = s.frame_size()
        r = []
        for t, objects in enumerate(s.masks()):
            gt = objects.any(axis=0) if len(objects) else np.zeros((h, w), bool)
            fg = video_union.get((s.video_id, t), np.zeros((h, w), bool))
            false_pos = np.count_nonzero(everything(gt, s, t) & ~gt)
            r.append(max(1 - false_pos / (np.count_nonzero(fg) + 1e-6), 0.0))
        assert float(rows[s.expression_id]["R"]) == pytest.approx(np.mean(r), abs=1e-9)
    assert result["summary"]["overall"]["R"] < 1.0


def test_missing_predictions_are_counted_and_scored_empty(synth_sets, tmp_path):
    data = synth_sets["mevis"]
    pred = tmp_path / "pred"
    write_predictions("mevis", data, pred, lambda gt, s, t: gt)
    valid = [s for s in load("mevis", data) if s.split == "valid_u"]
    gone = [s for s in valid if not s.is_null][:2]
    for s in gone:
        shutil.rmtree(pred / s.video_id / s.expression_id)
    one_frame = next(s for s in valid if s not in gone)
    (
        pred / one_frame.video_id / one_frame.expression_id / f"{one_frame.frame_names[0]}.png"
    ).unlink()
    (pred / "not_a_video" / "0").mkdir(parents=True)
    save_png(pred / "not_a_video" / "0" / "00000.png", EMPTY)
    result = run_cli("mevis", data, pred, tmp_path / "out.json")
    counts = result["counts"]
    assert counts["missing_predictions"] == 2
    assert counts["partly_missing_predictions"] == 1
    assert counts["missing_frames"] == 2 * 60 + 1
    assert counts["unexpected_prediction_folders"] == 1
    assert result["summary"]["overall"]["JF"] < 1.0


def test_refavs_gt_mask_layout_and_shared_object_folders(synth_sets, tmp_path):
    data = synth_sets["refavs"]
    test_s = [s for s in load("refavs", data) if s.split == "test_s"]
    pred = tmp_path / "pred"
    write_predictions("refavs", data, pred, lambda gt, s, t: gt)
    # move every test_s prediction to the object's gt_mask-style folder fid_{fid}
    for s in test_s:
        own = pred / s.video_id / s.expression_id
        fid_dir = pred / s.video_id / f"fid_{s.refavs_fid}"
        if fid_dir.exists():
            shutil.rmtree(own)
        else:
            own.rename(fid_dir)
    result = run_cli("refavs", data, pred, tmp_path / "out.json", "--split", "test_s")
    fids = [(s.video_id, s.refavs_fid) for s in test_s]
    shared = sum(1 for k in fids if fids.count(k) > 1)
    assert shared > 0  # the synthetic set names some objects more than once
    assert result["counts"]["shared_fid_prediction_folders"] == shared
    assert result["counts"]["missing_predictions"] == 0


def test_two_workers_give_the_same_scores(synth_sets, tmp_path):
    data = synth_sets["revos"]
    pred = tmp_path / "pred"
    write_predictions("revos", data, pred, lambda gt, s, t: shift(gt, 2, -4))
    one = evaluate("revos", data, pred, workers=1)
    two = evaluate("revos", data, pred, workers=2)
    assert [s.to_dict() for s in two.scores] == [s.to_dict() for s in one.scores]
    assert two.summary() == one.summary()


def test_worker_errors_surface_with_the_file(synth_sets, tmp_path):
    data = synth_sets["revos"]
    pred = tmp_path / "pred"
    write_predictions("revos", data, pred, lambda gt, s, t: gt)
    last = [s for s in load("revos", data) if s.split == "valid"][-1]
    victim = pred / last.video_id / last.expression_id / f"{last.frame_names[-1]}.png"
    victim.write_bytes(b"garbage")
    with pytest.raises(InputError, match=victim.name):
        evaluate("revos", data, pred, workers=2)


def test_cli_outputs_csv_html_and_clear_errors(synth_sets, tmp_path, capsys):
    data = synth_sets["revos"]
    pred = tmp_path / "pred"
    write_predictions("revos", data, pred, lambda gt, s, t: shift(gt))
    out = tmp_path / "reports" / "revos.json"
    result = run_cli("revos", data, pred, out)
    assert result["per_expression_csv"] == "revos.csv"
    with out.with_suffix(".csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == result["counts"]["scored"]
    page = out.with_suffix(".html").read_text()
    assert page.count("<img") >= 8 and "Worst expressions" in page and "Best expressions" in page
    capsys.readouterr()
    # a split that does not exist, and a prediction folder that does not
    args = ["evaluate", "--benchmark", "revos", "--data", str(data), "--out", str(out)]
    assert main([*args, "--pred", str(pred), "--split", "nope"]) == 2
    assert "split(s) ['nope']" in capsys.readouterr().err
    assert main([*args, "--pred", str(tmp_path / "none")]) == 2
    assert "prediction folder not found" in capsys.readouterr().err


# ------------------------------------------------------------------- RefAVS, hand-made set


def test_refavs_official_protocol_on_a_hand_made_set(tmp_path):
    """Frames of 256x256, so the official resize is the identity and every number below is
    worked out by hand: 5 test_s expressions make batches of 4 + 1."""
    data, pred = tmp_path / "refavs", tmp_path / "pred"
    size = 256
    for i in range(2):
        (data / "media" / "a" / "frames").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (size, size)).save(data / "media" / "a" / "frames" / f"{i}.jpg")
    square = np.zeros((size, size), bool)
    square[:128, :128] = True
    quarter = np.zeros((size, size), bool)
    quarter[:64, :64] = True
    nothing, everything = np.zeros_like(square), np.ones_like(square)
    save_png(data / "gt_mask" / "a" / "fid_1" / "00000.png", square)
    save_png(data / "gt_mask" / "a" / "fid_1" / "00001.png", nothing)  # object gone
    rows = ["vid,uid,split,fid,exp"]
    rows += [f"a,a_1_{k},test_s,1,the square {k}" for k in range(5)]
    rows += ["a,a_2_0,test_n,2,the absent circle"]
    (data / "metadata.csv").write_text("\n".join(rows) + "\n")
    predictions = {
        "a_1_0": (square, nothing),  # perfect
        "a_1_1": (nothing, nothing),  # misses the object
        "a_1_2": (quarter, nothing),  # a quarter of it
        "a_1_3": (square, everything),  # everything where nothing is
        "a_1_4": (square, nothing),  # perfect, alone in the second batch
        "a_2_0": (quarter, nothing),  # something where nothing is (null split)
    }
    for uid, frames in predictions.items():
        for i, m in enumerate(frames):
            save_png(pred / "a" / uid / f"{i:05d}.png", m)

    summary = evaluate("refavs", data, pred).summary()
    seen, null = summary["seen"], summary["null"]
    # mIoU terms per frame: [1, 1], [0, 1], [0.25, 1], [1, 0] | [1, 1]
    assert seen["official"]["mIoU"] == pytest.approx((5.25 / 8 + 1) / 2, abs=1e-6)
    assert seen["pooled"]["mIoU"] == pytest.approx(7.25 / 10, abs=1e-6)
    # max-F over frame 0 only (frame 1 has no foreground): F at thresholds > 0 is 1, 0,
    # F(p=1, r=0.25), 1 | 1; at threshold 0 it is F(p=0.25, r=1) for all, which is lower
    f_quarter = 1.3 * 0.25 / (0.3 + 0.25)
    assert seen["official"]["F"] == pytest.approx(((2 + f_quarter) / 4 + 1) / 2)
    assert seen["official"]["batches"] == 2
    assert seen["pooled"]["F"] == pytest.approx((3 + f_quarter) / 5)
    # S on the null split: 64x64 predicted pixels over 2 frames of 256x256
    assert null["official"]["S"] == pytest.approx(np.sqrt(64 * 64 / (2 * size * size)))
    # per frame, as DAVIS scores an empty frame: foreground predicted on one frame of two;
    # the all-or-nothing no-target accuracy is its own figure
    assert null["davis"]["JF"] == 0.5 and null["davis"]["N_acc"] == 0.0
    assert null["empty_prediction_rate"] == 0.0


def test_unlabelled_mevis_split_is_not_scored(synth_sets, tmp_path):
    data = tmp_path / "mevis"
    shutil.copytree(synth_sets["mevis"], data)
    # the online split: expressions without objects and no mask_dict.json
    shutil.copytree(data / "valid_u", data / "valid")
    (data / "valid" / "mask_dict.json").unlink()
    meta = json.loads((data / "valid" / "meta_expressions.json").read_text())
    for video in meta["videos"].values():
        for e in video["expressions"].values():
            e.pop("obj_id", None), e.pop("anno_id", None)
    (data / "valid" / "meta_expressions.json").write_text(json.dumps(meta))
    pred = tmp_path / "pred"
    write_predictions("mevis", synth_sets["mevis"], pred, lambda gt, s, t: gt)
    assert evaluate("mevis", data, pred).splits == ["valid_u"]
    with pytest.raises(InputError, match=r"\['valid'\] have no ground-truth masks"):
        evaluate("mevis", data, pred, splits=["valid"])
