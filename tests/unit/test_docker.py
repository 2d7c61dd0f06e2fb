"""The images cannot be built here (no Docker engine): their Dockerfiles are checked
statically. Multi-stage, pinned base images, a non-root final user, an entry point that the
installed packages provide, every COPY source present and inside the build context, and every
pip install pinned and taken from the lock files (or the same pins as scripts/setup.sh)."""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))
ENTRY_POINTS = {"omnir1": "main.lock", "airflow": "airflow.lock"}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def locked(name: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements" / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            package, sep, version = line.partition("==")
            assert sep, f"{name}: {line!r} is not pinned with =="
            pins[package.lower()] = version
    return pins


def setup_pin(variable: str) -> str:
    match = re.search(rf'^{variable}="([^"]+)"', (ROOT / "scripts/setup.sh").read_text(), re.M)
    assert match, variable
    return match.group(1)


def in_context(source: str) -> bool:
    """Whether .dockerignore lets `source` into the build context (it excludes everything,
    then re-includes)."""
    included = False
    for rule in (ROOT / ".dockerignore").read_text().splitlines():
        rule = rule.strip()
        if not rule or rule.startswith("#"):
            continue
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(source.rstrip("/"), pattern) or source.startswith(pattern + "/"):
            included = negate
    return included


def test_there_are_three_images():
    assert {p.name for p in DOCKERFILES} == {
        "component.Dockerfile",
        "trainer-gpu.Dockerfile",
        "airflow.Dockerfile",
    }


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile(dockerfile):
    steps = instructions(dockerfile)
    args = dict(a.split("=", 1) for kind, a in steps if kind == "ARG" and "=" in a)
    bases = [a.split()[0] for kind, a in steps if kind == "FROM"]
    assert len(bases) >= 2, "multi-stage: a build stage and a small final stage"
    for base in bases:
        image = args.get(base.strip("${}"), base) if base.startswith("$") else base
        if ":" not in image and "/" not in image:
            continue  # an earlier stage's name
        tag = image.rsplit(":", 1)[-1]
        assert re.search(r"\d+\.\d+", tag) and "latest" not in tag, f"unpinned base {image}"
    final = steps[max(i for i, (kind, _) in enumerate(steps) if kind == "FROM") :]
    users = [a for kind, a in final if kind == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "runs as non-root"
    # least privilege: the code and configuration copied in stay root-owned (not writable by
    # the user that runs them), and no secret is baked into the image
    for kind, a in final:
        assert not (kind == "COPY" and "--chown" in a), f"{a}: writable by the runtime user"
        if kind in ("ENV", "ARG"):
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", a)
            assert not [n for n in names if re.search(r"PASSWORD|SECRET|TOKEN|KEY", n)], a
    entry = [a for kind, a in final if kind == "ENTRYPOINT"]
    assert entry, "an entry point"
    program = shlex.split(entry[-1].strip("[]").replace(",", " "))[0].strip('"')
    assert program in ENTRY_POINTS
    if program == "omnir1":
        assert 'omnir1 = "omnir1.cli:main"' in (ROOT / "pyproject.toml").read_text()
    else:
        assert "apache-airflow" in locked(ENTRY_POINTS[program])
    for kind, a in steps:
        if kind == "COPY" and "--from=" not in a:
            parts = [p for p in a.split() if not p.startswith("--")]
            for source in parts[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
                assert in_context(source), f"COPY {source}: excluded by .dockerignore"
        if kind == "RUN" and "pip install" in a:
            for command in a.split("&&"):
                if "pip install" not in command:
                    continue
                words = shlex.split(command.split("pip install", 1)[1])
                it = iter(words)
                for word in it:
                    if word == "-r":
                        lock = Path(next(it)).name
                        assert (ROOT / "requirements" / lock).is_file(), lock
                        locked(lock)  # every line pinned
                    elif word.startswith("-") or word.startswith("/"):
                        continue
                    else:
                        package, sep, version = word.partition("==")
                        assert sep, f"{dockerfile.name}: unpinned {word}"
                        expected = {
                            "pip": setup_pin("PIP_VERSION"),
                            "sam2": setup_pin("SAM2_VERSION"),
                        }
                        if package in expected:
                            assert version == expected[package], word
                        else:
                            assert locked("main.lock").get(package.lower()) == version, word
        if kind == "RUN" and "apt-get install" in a:
            assert "--no-install-recommends" in a and "rm -rf /var/lib/apt/lists" in a


def test_gpu_extras_are_pinned_and_their_dependencies_locked():
    extras = locked("gpu.lock")
    assert "flash-attn" in extras
    main = locked("main.lock")
    for package in ("torch", "deepspeed", "einops", "ninja", "packaging", "psutil"):
        assert package in main, package
