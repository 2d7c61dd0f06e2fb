"""omnir1.kube.steps: how a component's step calls the CLI and reports."""

import pytest

from omnir1.kube.steps import StepError, flat_metrics, omnir1


def test_a_failing_command_raises_naming_the_whole_command(tmp_path, capsys):
    with pytest.raises(StepError) as err:
        omnir1("data", "check", tmp_path / "missing", format="revos", out=None, quiet=False)
    message = str(err.value)
    assert message.startswith("`omnir1 data check ")
    assert "--format revos" in message and "exited with status 2" in message
    assert "--out" not in message and "--quiet" not in message  # None and False: left out
    assert "missing" in capsys.readouterr().err  # the CLI's own error names the folder


def test_options_repeat_for_lists_and_true_is_a_bare_flag(tmp_path):
    with pytest.raises(StepError) as err:
        omnir1("benchmark", model=["a=x", "b=y"], data_root=tmp_path / "none", quiet=True)
    assert "--model a=x --model b=y" in str(err.value) and str(err.value).count("--quiet") == 1


def test_metrics_are_flattened_to_numbers():
    nested = {"trained": {"revos": {"JF": 0.5, "n": 3}}, "name": "x", "ok": True}
    assert flat_metrics(nested) == {"trained.revos.JF": 0.5, "trained.revos.n": 3.0}
