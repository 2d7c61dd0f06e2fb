"""The house rules the layout promises (docs/design.md §5): documents cited exist in the
repository, with the sections cited."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return [ROOT / p for p in out.stdout.split() if (ROOT / p).is_file()]


def test_citations_name_documents_and_sections_of_the_repository():
    sections = {
        int(m) for m in re.findall(r"^## (\d+)\.", (ROOT / "docs/design.md").read_text(), re.M)
    }
    assert sections >= {1, 2, 3, 4, 5, 6, 7}
    files = tracked("*.py", "*.yaml", "*.md", "*.sh", "Makefile")
    assert len(files) > 100
    for path in files:
        text = path.read_text(encoding="utf-8")
        # the workspace's own design notes are not in the repository: users cannot read them
        outside = "DESIGN" + ".md"  # spelled apart so that this file does not cite it
        assert outside not in text, path
        for cited in re.findall(r"design\.md §(\d+)", text):
            assert int(cited) in sections, f"{path}: docs/design.md §{cited}"


def _package_imports() -> dict[str, set[str]]:
    """Module -> the package's modules it imports, at module level, inside functions or for
    types only: every edge shows in the layout's direction."""
    import ast

    src = ROOT / "src"
    modules = {}
    for path in (src / "omnir1").rglob("*.py"):
        name = ".".join(path.relative_to(src).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for alias in node.names:
                    targets.add(resolve(f"{node.module}.{alias.name}") or resolve(node.module))
            elif isinstance(node, ast.Import):
                targets.update(resolve(alias.name) for alias in node.names)
        graph[name] = {t for t in targets if t and t.startswith("omnir1") and t != name}
    return graph


def test_no_import_cycles_and_the_cli_is_a_leaf():
    graph = _package_imports()

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                if nxt == goal:
                    return True
                seen.add(nxt)
                todo.append(nxt)
        return False

    cycles = sorted(m for m in graph if reaches(m, m))
    assert not cycles, f"modules on an import cycle: {cycles}"
    outside = [m for m in graph if not m.startswith("omnir1.cli")]
    assert not [m for m in outside if any(t.startswith("omnir1.cli") for t in graph[m])]


def test_the_product_never_imports_research_code():
    graph = _package_imports()
    product = [m for m in graph if not m.startswith(("omnir1.experimental", "omnir1.cli"))]
    leaks = {m: sorted(t for t in graph[m] if t.startswith("omnir1.experimental")) for m in product}
    assert not {m: t for m, t in leaks.items() if t}
    # config is the bottom layer: at module level it imports only the errors it raises
    import ast

    tree = ast.parse((ROOT / "src/omnir1/config.py").read_text(encoding="utf-8"))
    top = [n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module]
    assert [m for m in top if m.startswith("omnir1")] == ["omnir1.errors"]


def test_research_code_leaves_the_product_stages_alone():
    """dvc.yaml's stages depend on product code only: editing a study reruns nothing."""
    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    for name, stage in stages.items():
        deps = (stage.get("do") or stage).get("deps", [])
        for dep in deps:
            assert not dep.startswith(("research", "src/omnir1/experimental")), (name, dep)
            if dep in ("src", "src/omnir1"):
                raise AssertionError(f"{name} depends on the whole package, research included")
