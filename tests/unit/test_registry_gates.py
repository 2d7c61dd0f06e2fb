"""The promotion gates of `omnir1 register` on hand-made metrics, and the commit its versions are
tagged with (no MLflow)."""

import json
import subprocess

import pytest

from omnir1.config import RegisterParams
from omnir1.errors import DataError
from omnir1.registry import (
    Gate,
    decide,
    flatten_metrics,
    gates_of,
    git_commit,
    load_metrics,
    parse_metrics_arg,
    public_uri,
    start_figures,
    start_metric,
    summary_line,
)

JF = Gate("eval.JF", "higher", 0.01)
HR = Gate("probe.hr", "lower", 0.0, hallucination=True)
YES = Gate("probe.yes_ratio", "target", 0.0, target=0.5, hallucination=True)
GATES = [JF, HR, YES]
CHAMPION = {"eval.JF": 0.70, "probe.hr": 0.20, "probe.yes_ratio": 0.55}


def by_metric(checks):
    return {c.metric: c for c in checks}


def test_no_champion_promotes_the_first_version():
    promoted, checks = decide(GATES, CHAMPION, None)
    assert promoted and all(c.result == "pass" and c.note == "no champion yet" for c in checks)
    assert summary_line(promoted, checks, first=True) == "promoted: first version"


def test_equal_or_better_passes_and_small_regressions_stay_within_tolerance():
    better = {"eval.JF": 0.75, "probe.hr": 0.10, "probe.yes_ratio": 0.48}
    promoted, checks = decide(GATES, better, CHAMPION)
    assert promoted and {c.note for c in checks} == {"not worse"}
    assert by_metric(checks)["eval.JF"].delta == pytest.approx(0.05)
    assert by_metric(checks)["probe.yes_ratio"].worse_by == pytest.approx(0.02 - 0.05)
    # 0.70 - 0.69 is 0.010000000000000009 in floats: still within a 0.01 tolerance
    promoted, checks = decide(GATES, {**CHAMPION, "eval.JF": 0.69}, CHAMPION)
    assert promoted and by_metric(checks)["eval.JF"].note == "worse, within tolerance"


def test_regression_beyond_tolerance_fails_and_says_by_how_much():
    promoted, checks = decide(GATES, {**CHAMPION, "eval.JF": 0.65}, CHAMPION)
    jf = by_metric(checks)["eval.JF"]
    assert not promoted and jf.result == "fail" and jf.worse_by == pytest.approx(0.05)
    assert jf.note == "worse beyond tolerance"
    line = summary_line(promoted, checks, first=False)
    assert line == "not promoted: eval.JF worse by 0.05 (tolerance 0.01)"


@pytest.mark.parametrize(
    ("metric", "value"),
    [("probe.hr", 0.2000001), ("probe.yes_ratio", 0.40), ("probe.yes_ratio", 0.62)],
)
def test_any_hallucination_regression_fails(metric, value):
    promoted, checks = decide(GATES, {**CHAMPION, "eval.JF": 0.9, metric: value}, CHAMPION)
    failed = [c for c in checks if c.result == "fail"]
    assert not promoted and [c.metric for c in failed] == [metric]
    assert failed[0].note == "hallucination metric worse" and failed[0].tolerance == 0.0


def test_missing_on_the_challenger_fails_and_missing_on_the_champion_is_ignored():
    promoted, checks = decide(GATES, {"eval.JF": 0.9, "probe.hr": 0.1}, CHAMPION)
    assert not promoted
    assert by_metric(checks)["probe.yes_ratio"].note == "missing on the challenger"
    promoted, checks = decide(GATES, {"eval.JF": 0.9, "probe.hr": float("nan")}, None)
    assert not promoted  # NaN counts as missing, also for a first version
    promoted, checks = decide(GATES, CHAMPION, {"eval.JF": 0.7})
    assert promoted
    assert [c.result for c in checks] == ["pass", "ignored", "ignored"]


def test_flatten_keeps_finite_numbers_under_mlflow_safe_dotted_names():
    data = {
        "summary": {"overall": {"J&F": 0.5, "R": None, "n": 3}},
        "benchmark": "revos",
        "splits": ["valid"],
        "ok": True,
        "nan": float("nan"),
    }
    assert flatten_metrics(data, "eval.") == {
        "eval.summary.overall.J_F": 0.5,
        "eval.summary.overall.n": 3.0,
    }
    with pytest.raises(ValueError, match="'a_b'"):
        flatten_metrics({"a&b": 1, "a_b": 2})


def test_metrics_files_name_themselves_in_errors(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"x": {"y": 1}}))
    b.write_text(json.dumps({"x": {"y": 2}}))
    assert load_metrics([("eval", a), ("probe", b)]) == {"eval.x.y": 1.0, "probe.x.y": 2.0}
    with pytest.raises(DataError, match=r"b\.json: metric 'x\.y' also comes from .*a\.json"):
        load_metrics([(None, a), (None, b)])
    b.write_text("[1, 2]")
    with pytest.raises(DataError, match="expected a JSON object"):
        load_metrics([(None, b)])
    b.write_text('{"name": "x"}')
    with pytest.raises(DataError, match="no numeric metrics"):
        load_metrics([(None, b)])
    with pytest.raises(DataError, match="file not found"):
        load_metrics([(None, tmp_path / "none.json")])


def test_metrics_arguments_and_uris():
    assert parse_metrics_arg("eval=m/e.json") == ("eval", parse_metrics_arg("m/e.json")[1])
    assert parse_metrics_arg("m/a=b.json")[0] is None
    assert public_uri("postgresql://u:secret@db:5432/ml") == "postgresql://u:***@db:5432/ml"
    assert public_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_params_map_to_gates_with_hallucination_metrics_at_tolerance_zero():
    cfg = RegisterParams(
        tolerance=0.02,
        tolerances={"b": 0.1},
        higher_is_better=["a", "b"],
        lower_is_better=["hr"],
        closer_to={"yes": 0.5},
        hallucination=["hr", "yes"],
    )
    assert gates_of(cfg) == [
        Gate("a", "higher", 0.02),
        Gate("b", "higher", 0.1),
        Gate("hr", "lower", 0.0, hallucination=True),
        Gate("yes", "target", 0.0, target=0.5, hallucination=True),
    ]
    with pytest.raises(ValueError, match="take no tolerance"):
        RegisterParams(lower_is_better=["hr"], hallucination=["hr"], tolerances={"hr": 0.1})


TRAINED_JF = Gate("eval.trained.revos.JF", "higher", 0.01)
TRAINED_HR = Gate("probe.trained.cmm.hr", "higher", 0.0, hallucination=True)
STARTED = {
    "eval.untrained.revos.JF": 0.29,
    "eval.trained.revos.JF": 0.30,
    "probe.untrained.cmm.hr": 0.75,
    "probe.trained.cmm.hr": 0.75,
}


def test_the_starting_models_figures_are_read_under_its_label():
    assert start_metric("eval.trained.revos.JF", "trained", "untrained") == (
        "eval.untrained.revos.JF"
    )
    assert start_metric("eval.JF", "trained", "untrained") is None
    gates = [TRAINED_JF, TRAINED_HR, JF]
    assert start_figures(gates, STARTED, "trained", "untrained") == {
        "eval.trained.revos.JF": 0.29,
        "probe.trained.cmm.hr": 0.75,
    }
    assert start_figures(gates, {}, "trained", "untrained") == {
        "eval.trained.revos.JF": None,
        "probe.trained.cmm.hr": None,
    }


def test_a_challenger_worse_than_its_starting_model_is_not_promoted_even_without_a_champion():
    gates = [TRAINED_JF, TRAINED_HR]
    worse = {**STARTED, "eval.trained.revos.JF": 0.015}
    start = start_figures(gates, worse, "trained", "untrained")
    promoted, checks = decide(gates, worse, None, start)
    assert not promoted
    failed = [c for c in checks if c.result == "fail"]
    assert [(c.metric, c.against) for c in failed] == [("eval.trained.revos.JF", "start")]
    assert failed[0].worse_by == pytest.approx(0.275)
    assert failed[0].note == "worse beyond tolerance than its starting model"
    line = summary_line(promoted, checks, first=True)
    assert line == (
        "not promoted: eval.trained.revos.JF worse than its starting model by 0.275 "
        "(tolerance 0.01)"
    )
    # against a champion too: each reference has its own check per gate
    promoted, checks = decide(gates, worse, dict(worse), start)
    assert not promoted and [c.against for c in checks] == ["champion"] * 2 + ["start"] * 2


def test_a_challenger_as_good_as_its_start_is_promoted_and_missing_start_figures_are_ignored():
    gates = [TRAINED_JF, TRAINED_HR, JF]
    start = start_figures(gates, {**STARTED, "eval.JF": 0.5}, "trained", "untrained")
    promoted, checks = decide(gates, {**STARTED, "eval.JF": 0.5}, None, start)
    assert promoted
    by = {(c.metric, c.against): c for c in checks}
    assert by[("eval.trained.revos.JF", "start")].note == "not worse than its starting model"
    assert ("eval.JF", "start") not in by  # no starting model's name: the champion only
    metrics = {"eval.trained.revos.JF": 0.3, "probe.trained.cmm.hr": 0.7}
    start = start_figures(gates, metrics, "trained", "untrained")
    promoted, checks = decide(gates[:2], metrics, None, start)
    assert promoted
    assert {c.note for c in checks if c.against == "start"} == {"no starting figure"}
    assert summary_line(promoted, checks, first=True) == (
        "promoted: first version, not worse than its starting model"
    )
    # a hallucination gate allows no loss against the start either
    start = start_figures(gates, STARTED, "trained", "untrained")
    promoted, checks = decide(
        gates, {**STARTED, "eval.JF": 0.5, "probe.trained.cmm.hr": 0.74}, None, start
    )
    assert not promoted


def test_versions_are_tagged_with_the_images_revision_else_the_checkouts_commit(
    tmp_path, monkeypatch
):
    checkout, plain = tmp_path / "checkout", tmp_path / "plain"
    plain.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(checkout)]
    subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    monkeypatch.delenv("OMNIR1_GIT_REVISION", raising=False)
    assert git_commit(checkout) == head
    assert git_commit(plain) is None  # not a checkout, no image revision: no tag
    image = "ab" * 20  # docker/*.Dockerfile: ENV OMNIR1_GIT_REVISION from --build-arg
    monkeypatch.setenv("OMNIR1_GIT_REVISION", image)
    assert git_commit(plain) == image and git_commit(checkout) == image
    for unusable in ("", "main", "abc1234"):  # an unset build arg is empty; not a full commit
        monkeypatch.setenv("OMNIR1_GIT_REVISION", unusable)
        assert git_commit(checkout) == head


def test_gates_follow_the_data_sets_the_run_evaluates():
    """data.formats [revos]: the MeViS and RefAVS gates of the release's list do not refuse a
    version that was never evaluated on them; metrics without a data set stay gated."""
    from omnir1.registry import Gate, evaluated_gates

    gates = [
        Gate("eval.trained.revos.JF", "higher", 0.01),
        Gate("eval.trained.mevis.JF", "higher", 0.01),
        Gate("eval.trained.refavs.seen.mIoU", "higher", 0.01),
        Gate("probe.trained.cmm.hr", "lower", 0.0, hallucination=True),
    ]
    kept = [g.metric for g in evaluated_gates(gates, ["revos"])]
    assert kept == ["eval.trained.revos.JF", "probe.trained.cmm.hr"]
    assert evaluated_gates(gates, ["refavs", "revos", "mevis"]) == gates
