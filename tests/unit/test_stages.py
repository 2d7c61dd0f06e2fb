"""The stage list of omnir1.stages is the one that dvc.yaml, the Kubeflow components and the
CLI follow: same stages, commands, params keys and library code."""

import ast
from pathlib import Path

import yaml

from omnir1.stages import STAGES

ROOT = Path(__file__).resolve().parents[2]


def _dvc_stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def test_dvc_yaml_has_the_stages_in_order_each_running_its_command():
    dvc = _dvc_stages()
    assert list(dvc) == [s.name for s in STAGES]
    for s in STAGES:
        entry = dvc[s.name]
        assert ("foreach" in entry) == s.per_format, s.name
        body = entry.get("do", entry)
        assert body["cmd"].split()[: 1 + len(s.command)] == ["omnir1", *s.command], s.name
        assert tuple(body.get("params", ())) == s.params, s.name
        code = tuple(d for d in body["deps"] if d.startswith("src/"))
        assert code == s.code, s.name
        if s.per_format:
            assert entry["foreach"] == "${data.formats}", s.name  # the formats come from params


def test_every_stage_has_its_cli_command_kfp_steps_and_components():
    from omnir1.cli import build_parser
    from omnir1.kube import steps

    parser = build_parser()
    components = (ROOT / "components" / "stages.py").read_text(encoding="utf-8")
    called = {
        node.func.attr
        for node in ast.walk(ast.parse(components))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and getattr(node.func.value, "id", None) == "steps"
    }
    multi_node = (ROOT / "components" / "pytorchjob.py").read_text(encoding="utf-8")
    for s in STAGES:
        args = [*s.command, "--help"]
        try:
            parser.parse_args(args)
        except SystemExit as exc:  # --help exits 0 when the command exists
            assert exc.code == 0, s.command
        for step in s.steps:
            assert callable(getattr(steps, step)), step
            assert step in called or f"steps.{step}(" in multi_node, step


def test_the_evaluation_stages_read_every_format_of_params():
    dvc = _dvc_stages()
    for name in ("evaluate", "probe"):
        deps = dvc[name]["deps"]
        assert "data/sets" in deps and not [d for d in deps if d.startswith("data/sets/")], name
