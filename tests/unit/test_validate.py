"""The validate stage's suites on small hand-built manifests: a good pair passes, and each family
of expectations fails on a frame broken for it, naming the check and counting the rows."""

import json
from pathlib import Path

import numpy as np
import pytest

from omnir1.config import ValidateParams, load_params
from omnir1.data.records import Sample
from omnir1.data.validate import (
    EXPRESSION_SCHEMA,
    VIDEO_SCHEMA,
    Manifests,
    ValidationError,
    make_report,
    manifest_frame,
    mask_stats,
    raise_on_failure,
    run_suites,
    write_report,
)
from omnir1.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[2]


def video(vid: str, split: str = "train", **changes) -> dict:
    row = dict(
        split=split,
        video_id=vid,
        source=f"Videos/{vid}.mp4",
        num_frames=60,
        annotated_frames=60,
        frame_files=60,
        width=320,
        height=180,
        fps=6.0,
        duration_s=10.0,
        has_audio=True,
        audio_sample_rate=16_000,
        audio_duration_s=10.0,
        av_drift_s=0.0,
    )
    return {**row, **changes}


def expression(vid: str, eid: str, split: str = "train", null: bool = False, **changes) -> dict:
    row = dict(
        dataset="revos",
        split=split,
        video_id=vid,
        expression_id=eid,
        expression="the red circle",
        expression_type="null" if null else "referring",
        is_null=null,
        n_objects=0 if null else 1,
        num_frames=60,
        mask_coverage=0.0 if null else 0.5,
        mask_area_mean=0.0 if null else 0.1,
    )
    return {**row, **changes}


def rows() -> tuple[list[dict], list[dict]]:
    """Three training videos and one valid video, each with a referring and a null expression."""
    splits = {"v0": "train", "v1": "train", "v2": "train", "v3": "valid"}
    videos = [video(v, s) for v, s in splits.items()]
    exps = [expression(v, str(k), s, null=k == 1) for v, s in splits.items() for k in range(2)]
    return videos, exps


def manifests(videos: list[dict], exps: list[dict]) -> Manifests:
    return Manifests(manifest_frame(exps, EXPRESSION_SCHEMA), manifest_frame(videos, VIDEO_SCHEMA))


def failed(outcomes: list[dict]) -> dict[str, dict]:
    return {o["key"]: o for o in outcomes if not o["success"]}


def test_good_manifests_pass():
    outcomes = run_suites(manifests(*rows()), "revos")
    assert not failed(outcomes)
    keys = {o["key"] for o in outcomes}
    assert {"expressions.null_empty", "videos.audio_rate", "splits.train_fraction"} <= keys


def _set(rows: list[dict], i: int, **changes) -> None:
    rows[i].update(changes)


# each case: how to break the good rows, and the checks (with failing row counts) that must fail
CASES = {
    "null expression with a mask": (
        lambda v, e: _set(e, 1, mask_coverage=0.3),
        {"expressions.null_empty": 1},
    ),
    "referent without a mask": (
        lambda v, e: _set(e, 2, mask_coverage=0.0),
        {"expressions.mask_present": 1},
    ),
    "inverted mask": (lambda v, e: _set(e, 0, mask_area_mean=0.99), {"expressions.mask_area": 1}),
    "duplicated expression id": (
        lambda v, e: _set(e, 1, expression_id="0"),
        {"expressions.ids_unique": 2},
    ),
    "expression of an unknown video": (
        lambda v, e: _set(e, 0, video_id="ghost"),
        {"expressions.video_known": 1},
    ),
    "unknown expression type": (
        lambda v, e: _set(e, 0, expression_type="sarcastic"),
        {"expressions.type_known": 1},
    ),
    "unreadable mask": (
        lambda v, e: _set(
            e, 2, error="mask_dict.json: 7[3]: RLE does not decode", mask_coverage=np.nan
        ),
        {"expressions.readable": 1},
    ),
    "video in two splits": (
        lambda v, e: v.append(video("v0", "valid")),
        {"videos.ids_unique": 2},
    ),
    "truncated video": (lambda v, e: _set(v, 1, num_frames=30), {"videos.frames_match_video": 1}),
    "frames missing from the folder": (
        lambda v, e: _set(v, 2, frame_files=58),
        {"videos.frames_match_folder": 1},
    ),
    "too few frames": (
        lambda v, e: _set(v, 0, num_frames=1, annotated_frames=1, frame_files=1),
        {"videos.frames": 1},
    ),
    "tiny frames": (
        lambda v, e: _set(v, 0, width=32, height=18),
        {"videos.width": 1, "videos.height": 1},
    ),
    "frame rate": (lambda v, e: _set(v, 3, fps=500.0), {"videos.fps": 1}),
    "too long": (lambda v, e: _set(v, 3, duration_s=4000.0), {"videos.duration": 1}),
    "audio at 8 kHz": (lambda v, e: _set(v, 2, audio_sample_rate=8000), {"videos.audio_rate": 1}),
    "no audio": (
        lambda v, e: _set(v, 2, has_audio=False, audio_sample_rate=0),
        {"videos.audio_present": 1},
    ),
    "audio shorter than the video": (
        lambda v, e: _set(v, 1, av_drift_s=4.0),
        {"videos.av_drift": 1},
    ),
    "unreadable video": (
        lambda v, e: _set(v, 1, error="Videos/v1.mp4: cannot open media", num_frames=0, width=0),
        {"videos.readable": 1},
    ),
    "missing split": (
        lambda v, e: (v.pop(3), e.pop(7), e.pop(6)),
        {"splits.present": None, "splits.train_fraction": 1},
    ),
    "train split too small": (
        lambda v, e: [_set(v, i, split="valid") for i in (0, 1)],
        {"splits.train_fraction": 1},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_family_fails_on_its_broken_frame(case):
    videos, exps = rows()
    breaks, expected = CASES[case]
    breaks(videos, exps)
    bad = failed(run_suites(manifests(videos, exps), "revos"))
    assert {k: o["rows_failed"] for k, o in bad.items()} == expected


def test_schema_missing_column_and_wrong_type():
    videos, exps = rows()
    m = manifests(videos, exps)
    m.expressions = m.expressions.drop(columns="mask_area_mean")
    m.videos["num_frames"] = m.videos["num_frames"].astype("float64")
    bad = failed(run_suites(m, "revos"))
    assert bad["expressions.columns"]["details"]["details"]["mismatched"]["missing"] == [
        "mask_area_mean"
    ]
    assert bad["videos.type.num_frames"]["observed"] == "float64"
    assert "mask_area_mean" in bad["expressions.mask_area"]["exception"]  # could not run
    assert set(bad) == {
        "expressions.columns",
        "expressions.type.mask_area_mean",
        "expressions.mask_area",
        "videos.type.num_frames",
    }


def test_empty_manifests_fail_without_crashing():
    bad = failed(run_suites(manifests([], []), "mevis"))
    assert {"expressions.rows", "videos.rows", "splits.present"} <= set(bad)


def test_bounds_come_from_the_config():
    videos, exps = rows()
    # RefAVS clips have exactly 10 frames: 60 is out of bounds there, not for ReVOS
    bad = failed(run_suites(manifests(videos, exps), "refavs", ValidateParams()))
    assert bad["videos.frames"]["rows_failed"] == 4
    loose = ValidateParams(
        frames_per_video={},
        splits={"refavs": ["train"]},
        audio_sample_rate=8000,
        require_audio=False,
    )
    bad = failed(run_suites(manifests(videos, exps), "refavs", loose))
    assert set(bad) == {"videos.audio_rate"}
    assert not any(
        o["key"] == "videos.audio_present" for o in run_suites(manifests(*rows()), "refavs", loose)
    )


def test_report_names_the_check_counts_rows_and_shows_examples(tmp_path):
    videos, exps = rows()
    for i in (0, 1, 2):
        videos[i]["audio_sample_rate"] = 8000
    m = manifests(videos, exps)
    outcomes = run_suites(m, "revos", ValidateParams(examples=2))
    report = make_report("revos", "/data/revos", m, outcomes, ValidateParams(examples=2))
    assert not report["ok"] and report["failed"] == 1
    (line,) = report["failures"]
    assert line == (
        "videos.audio_rate (expect_column_values_to_be_in_set audio_sample_rate): 3 of 4 rows"
    )
    rate = next(o for o in report["results"] if o["key"] == "videos.audio_rate")
    assert rate["where"] == "has_audio == True"
    assert rate["kwargs"]["value_set"] == [16000]
    assert rate["examples"] == [
        {"split": "train", "video_id": "v0", "audio_sample_rate": 8000, "has_audio": True},
        {"split": "train", "video_id": "v1", "audio_sample_rate": 8000, "has_audio": True},
    ]
    json.dumps(report)  # plain JSON
    assert report["data_docs"] == "data_docs/index.html"

    paths = write_report(report, m, tmp_path / "validation")
    assert json.loads(paths["json"].read_text())["failures"] == [line]
    assert paths["videos"].read_text().splitlines()[0].startswith("split,video_id,source")
    assert not list((tmp_path / "validation").glob(".*.tmp"))  # atomic writes left nothing

    with pytest.raises(
        ValidationError, match=r"1 of \d+ expectations failed: videos.audio_rate"
    ) as err:
        raise_on_failure(report, tmp_path / "validation")
    assert isinstance(err.value, DataError) and err.value.exit_code == 2
    assert str(tmp_path / "validation" / "data_docs" / "index.html") in str(err.value)
    raise_on_failure({**report, "ok": True}, tmp_path)  # passes silently


def test_checkpoints_build_data_docs_pass_or_fail(tmp_path):
    """Each table's Checkpoint adds its validation result to the local Data Docs site: the
    index lists all three, and a failing check's page names it and its failing rows."""
    videos, exps = rows()
    videos[2]["audio_sample_rate"] = 8000
    docs = tmp_path / "data_docs"
    bad = failed(run_suites(manifests(videos, exps), "revos", docs=docs))
    assert set(bad) == {"videos.audio_rate"}
    pages = {p.parts[-4]: p for p in (docs / "validations").rglob("*.html")}
    assert set(pages) == {"expressions", "videos", "splits"}  # validations/SUITE/RUN/TIME/
    index = (docs / "index.html").read_text()
    assert all(str(p.relative_to(docs)) in index for p in pages.values())
    page = pages["videos"].read_text()
    assert "Failed" in page and "8000" in page  # the bad value, with its row number
    assert "Succeeded" in pages["splits"].read_text()
    suite = (docs / "expectations" / "videos.html").read_text()
    assert "<code>videos.audio_rate</code>: the audio has the expected sample rate" in suite


class _Masks:
    """Frame t of a 2x4 image: 0 empty, 1 one object on 2 px, 2 two objects on 3 px (unioned)."""

    def frame_masks(self, frame: int, height: int, width: int) -> np.ndarray:
        out = np.zeros((2, height, width), bool)
        if frame == 1:
            out[0, 0, :2] = True
        if frame == 2:
            out[0, 0, :2] = True
            out[1, 0, 1:3] = True
        return out


def test_mask_stats_union_objects_frame_by_frame():
    frames = tuple(Path(f"{i}.jpg") for i in range(4))
    sample = Sample(
        dataset="revos",
        split="train",
        video_id="v",
        expression_id="0",
        expression="both shapes",
        expression_type="referring",
        type_id=0,
        object_ids=("1", "2"),
        frame_names=tuple(p.stem for p in frames),
        frame_paths=frames,
        fps=6.0,
        mask_source=_Masks(),
    )
    coverage, area = mask_stats(sample, 2, 4)
    assert coverage == 0.5  # frames 1 and 2 of 4
    assert area == pytest.approx((2 / 8 + 3 / 8) / 2)


def test_params_section_is_the_library_default():
    params = load_params(ROOT / "params.yaml")
    assert params.validation == ValidateParams()


def test_inconsistent_bounds_are_config_errors(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("validate: {min_fps: 30, max_fps: 5}\n")
    with pytest.raises(
        ConfigError, match=r"params\.yaml: validate: .*min_fps 30.0 is above max_fps"
    ):
        load_params(path)
    path.write_text("validate: {splits: {davis: [train]}}\n")
    with pytest.raises(ConfigError, match=r"validate\.splits\.davis"):
        load_params(path)
