"""The images cannot be built here (no Docker engine): their Dockerfiles are checked
statically. Multi-stage, bases pinned by digest (or listed in docker/unpinned-bases.txt until
their first build resolves one), a non-root final user, an entry point that the installed
packages provide, every COPY source present and inside the build context, every pip install
pinned and taken from the lock files (or the same pins as scripts/setup.sh), the locked
dependencies in a layer of their own below the project's code, the git revision as a label,
a GPU image that can compile the kernels built at run time and never compiles flash-attn, a
CPU image on the CPU build of torch, and an Airflow image that extends the official one for the
official chart (its entrypoint, the locked pins, the settings where the DAGs look for them)."""

from __future__ import annotations

import fnmatch
import importlib.metadata
import os
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))
AIRFLOW_DOCKERFILE = ROOT / "docker" / "airflow.Dockerfile"
# images with an entry point of their own (the Airflow image keeps the official image's)
OWN_ENTRY_POINT = [p for p in DOCKERFILES if p != AIRFLOW_DOCKERFILE]
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
# what the CUDA build of torch pulls in and the CPU image leaves out
CUDA_ONLY = re.compile(r"^(nvidia-.*|cuda-.*|triton)$")
# docker/cpu-lock.sh writes these from main.lock inside the CPU image's build stage
CPU_LOCKS = ("cpu-torch.txt", "cpu-deps.txt")
VALUE_OPTIONS = {"-r", "-c", "-i", "-f", "--index-url", "--find-links", "--wheel-dir"}


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


@dataclass
class Stage:
    name: str | None
    base: str  # an image reference (ARG defaults substituted) or an earlier stage's name
    steps: list[tuple[str, str]] = field(default_factory=list)


def stages(path: Path) -> list[Stage]:
    steps = instructions(path)
    args = dict(a.split("=", 1) for kind, a in steps if kind == "ARG" and "=" in a)
    out: list[Stage] = []
    for kind, a in steps:
        if kind == "FROM":
            words = a.split()
            base = words[0]
            if base.startswith("$"):
                base = args.get(base.strip("${}"), base)
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            out.append(Stage(name, base))
        elif out:
            out[-1].steps.append((kind, a))
    return out


def base_images(path: Path) -> list[str]:
    found = stages(path)
    names = {s.name for s in found}
    return [s.base for s in found if s.base not in names and s.base != "scratch"]


def unpinned_bases() -> list[str]:
    text = (ROOT / "docker/unpinned-bases.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def strip_digests(text: str) -> str:
    return re.sub(r"@sha256:[0-9a-f]{64}$", "", text, flags=re.M)


def locked(name: str) -> dict[str, str]:
    return pins((ROOT / "requirements" / name).read_text(), name)


def pins(text: str, name: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if line:
            package, sep, version = line.partition("==")
            assert sep, f"{name}: {line!r} is not pinned with =="
            out[package.lower()] = version
    return out


def run_cpu_lock(out: Path) -> dict[str, dict[str, str]]:
    script, lock = ROOT / "docker/cpu-lock.sh", ROOT / "requirements/main.lock"
    subprocess.run(["sh", str(script), str(lock), str(out)], check=True)
    return {name: pins((out / name).read_text(), name) for name in CPU_LOCKS}


@cache
def cpu_locks() -> dict[str, dict[str, str]]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return run_cpu_lock(Path(tmp))


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


def commands(run: str) -> list[list[str]]:
    """The simple commands of a RUN's shell text, as words (split at ;, &&, ||, |, and
    without the if/then/do keywords that open them)."""
    lexer = shlex.shlex(run, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    out: list[list[str]] = [[]]
    for word in lexer:
        if word and set(word) <= set(";&|(){}"):
            out.append([])
        elif out[-1] or word not in ("if", "then", "else", "fi", "do", "done", "!"):
            out[-1].append(word)
    return [c for c in out if c]


def pip_installs(steps: list[tuple[str, str]]) -> list[list[str]]:
    """The arguments of every `pip install` that the RUN steps run."""
    found = []
    for kind, a in steps:
        if kind != "RUN":
            continue
        for words in commands(re.sub(r"^(--\S+\s+)+", "", a)):
            for i in range(len(words) - 1):
                if words[i].endswith("pip") and words[i + 1] == "install":
                    found.append(words[i + 2 :])
    return found


def requirement_files(args: list[str]) -> list[str]:
    return [Path(args[i + 1]).name for i, word in enumerate(args[:-1]) if word == "-r"]


def test_there_are_three_images():
    assert {p.name for p in DOCKERFILES} == {
        "component.Dockerfile",
        "trainer-gpu.Dockerfile",
        "airflow.Dockerfile",
    }


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile(dockerfile):
    steps = instructions(dockerfile)
    assert len(stages(dockerfile)) >= 2, "multi-stage: a build stage and a small final stage"
    final = stages(dockerfile)[-1].steps
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
    if dockerfile == AIRFLOW_DOCKERFILE:  # the official entrypoint runs the chart's args
        assert not entry and not [a for kind, a in final if kind == "CMD"]
    else:
        assert entry, "an entry point"
        program = shlex.split(entry[-1].strip("[]").replace(",", " "))[0].strip('"')
        assert program == "omnir1"
        assert 'omnir1 = "omnir1.cli:main"' in (ROOT / "pyproject.toml").read_text()
    for kind, a in steps:
        if kind == "COPY" and "--from=" not in a:
            parts = [p for p in a.split() if not p.startswith("--")]
            for source in parts[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
                assert in_context(source), f"COPY {source}: excluded by .dockerignore"
        if kind == "RUN" and "apt-get install" in a:
            assert "--no-install-recommends" in a and "rm -rf /var/lib/apt/lists" in a
    expected = {"pip": setup_pin("PIP_VERSION"), "sam2": setup_pin("SAM2_VERSION")}
    for args in pip_installs(steps):
        assert "--extra-index-url" not in args, "one index per install: no confusion"
        words = iter(args)
        for word in words:
            if word in VALUE_OPTIONS:
                value = next(words)
                if word == "-r":
                    lock = Path(value).name
                    if lock in CPU_LOCKS:
                        assert cpu_locks()[lock]
                    else:
                        assert (ROOT / "requirements" / lock).is_file(), lock
                        locked(lock)  # every line pinned
            elif not word.startswith(("-", "/")):
                package, sep, version = word.partition("==")
                assert sep, f"{dockerfile.name}: unpinned {word}"
                if package in expected:
                    assert version == expected[package], word
                else:
                    assert locked("main.lock").get(package.lower()) == version, word


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_bases_are_pinned_by_digest_or_listed_as_not_yet_resolved(dockerfile):
    waiting = unpinned_bases()
    for image in base_images(dockerfile):
        tag = DIGEST.sub("", image).rsplit(":", 1)[-1]
        assert re.search(r"\d+\.\d+", tag) and "latest" not in tag, f"unpinned base {image}"
        assert DIGEST.search(image) or image in waiting, (
            f"{image}: pin it by digest (docker/pin-base-images.sh) or list it in "
            "docker/unpinned-bases.txt"
        )


def test_the_list_of_bases_without_a_digest_is_current():
    used = {image for path in DOCKERFILES for image in base_images(path)}
    for image in unpinned_bases():
        assert image in used, f"docker/unpinned-bases.txt: {image} is no base any more"
        assert not DIGEST.search(image)
    assert "docker/pin-base-images.sh" in (ROOT / "docker/README.md").read_text()


def test_the_pinning_script_pins_every_listed_base(tmp_path):
    """docker/pin-base-images.sh on a copy of docker/, with a stand-in `crane` that answers a
    digest per reference: every base ends up pinned and the list empty; a rerun changes
    nothing."""
    copy = tmp_path / "docker"
    copy.mkdir()
    for path in (ROOT / "docker").iterdir():
        copy.joinpath(path.name).write_bytes(path.read_bytes())
    fake = tmp_path / "bin" / "crane"
    fake.parent.mkdir()
    fake.write_text(
        '#!/bin/sh\nprintf "sha256:%s\\n" "$(printf %s "$2" | sha256sum | cut -c1-64)"\n'
    )
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"}
    script = copy / "pin-base-images.sh"
    subprocess.run(["bash", str(script)], check=True, env=env, capture_output=True)
    pinned = {p.name: p.read_text() for p in copy.glob("*.Dockerfile")}
    for path in copy.glob("*.Dockerfile"):
        for image in base_images(path):
            assert DIGEST.search(image), image
        # nothing changed but the digests appended to the ARG defaults
        original = (ROOT / "docker" / path.name).read_text()
        assert strip_digests(pinned[path.name]) == strip_digests(original)
    listed = (copy / "unpinned-bases.txt").read_text().splitlines()
    assert listed and not [line for line in listed if line and not line.startswith("#")]
    subprocess.run(["bash", str(script)], check=True, env=env, capture_output=True)
    assert {p.name: p.read_text() for p in copy.glob("*.Dockerfile")} == pinned


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_git_revision_is_a_label_and_reaches_registered_versions(dockerfile):
    final = stages(dockerfile)[-1].steps
    kinds = [kind for kind, _ in final]
    assert ("ARG", "GIT_REVISION=") in final
    assert ("LABEL", 'org.opencontainers.image.revision="$GIT_REVISION"') in final
    env = " ".join(a for kind, a in final if kind == "ENV")
    assert 'OMNIR1_GIT_REVISION="$GIT_REVISION"' in env  # omnir1.registry.git_commit reads it
    # declared after every layer: a new commit changes the image's metadata, no layer
    arg = final.index(("ARG", "GIT_REVISION="))
    assert all(kind not in ("RUN", "COPY", "ADD") for kind in kinds[arg:])


@pytest.mark.parametrize("dockerfile", OWN_ENTRY_POINT, ids=lambda p: p.name)
def test_the_locked_dependencies_are_a_layer_below_the_code(dockerfile):
    found = stages(dockerfile)
    by_name = {s.name: s for s in found}
    final = found[-1].steps
    venv = [i for i, (kind, a) in enumerate(final) if kind == "COPY" and "venv" in a]
    assert len(venv) == 1, "the dependencies in one layer"
    source = by_name[re.search(r"--from=(\S+)", final[venv[0]][1]).group(1)]
    # the stage that installs them never sees the code, so a code change leaves it cached
    for kind, a in source.steps:
        if kind == "COPY":
            assert all(p.startswith(("requirements/", "docker/")) for p in a.split()[:-1]), a
    code = [
        i
        for i, (kind, a) in enumerate(final)
        if (kind == "COPY" and "--from=" not in a) or (kind == "RUN" and "from=package" in a)
    ]
    assert code and min(code) > venv[0]
    for args in pip_installs([s for s in final if s[0] == "RUN"]):
        # the project alone, from the package stage's wheel: no dependency comes along
        assert "--no-deps" in args and "--no-index" in args and "--no-cache-dir" in args
        assert [w for w in args if not w.startswith("-")] == ["/wheels/omnir1-*.whl"]
    if "package" in by_name:
        assert by_name["package"].base == source.name
        assert any("from=package" in a for kind, a in final if kind == "RUN")


def env_of(steps: list[tuple[str, str]]) -> dict[str, str]:
    return dict(pair.split("=", 1) for kind, a in steps if kind == "ENV" for pair in shlex.split(a))


def test_the_airflow_image_extends_the_official_one_for_the_official_chart():
    """The official image's entrypoint, user and environment (the chart's default args work);
    the locked pins installed into it in one layer, as its docs do, below the code."""
    found = stages(AIRFLOW_DOCKERFILE)
    final = found[-1]
    airflow = locked("airflow.lock")["apache-airflow"]
    python = re.search(r"python(3\.\d+)", setup_pin("PYTHON"))[1]  # .venv-airflow's
    assert DIGEST.sub("", final.base) == f"apache/airflow:{airflow}-python{python}"
    users = [a for kind, a in final.steps if kind == "USER"]
    assert users[-1] in ("airflow", "50000", "50000:0")
    installs = pip_installs(final.steps)
    assert installs == [["--no-cache-dir", "-r", "/tmp/airflow.lock"]]
    kinds = [(kind, a) for kind, a in final.steps if kind in ("COPY", "RUN")]
    install = next(i for i, (kind, a) in enumerate(kinds) if "pip install" in a)
    # before the pins: only the lock itself (and the DAGs folder made root's)
    assert [a for kind, a in kinds[:install] if kind == "COPY"] == [
        "requirements/airflow.lock /tmp/airflow.lock"
    ]
    assert all(kind == "COPY" for kind, _ in kinds[install + 1 :]), "the code above the pins"
    env = env_of(final.steps)
    # the chart sets the DAGs folder (its default, git-sync or a volume): the image leaves it
    assert not [k for k in env if k.startswith("AIRFLOW__CORE__DAGS")]
    assert "/opt/omnir1/src" in env["PYTHONPATH"].split(":")


def test_the_airflow_image_holds_what_the_dags_default_to():
    """The DAGs in the chart's default DAGs folder; omnir1's code on PYTHONPATH; params.yaml and
    the pipeline packages (compiled in a stage of their own with main.lock's kfp, for the
    images the build names) in OMNIR1_PROJECT, where omnir1.airflow_tasks looks when no
    Variable says otherwise."""
    found = stages(AIRFLOW_DOCKERFILE)
    final = found[-1].steps
    copies = [a for kind, a in final if kind == "COPY"]
    project = env_of(final)["OMNIR1_PROJECT"]
    assert "dags /opt/airflow/dags" in copies
    assert "src/omnir1 /opt/omnir1/src/omnir1" in copies
    assert f"params.yaml {project}/params.yaml" in copies
    (compiled,) = [a for a in copies if a.startswith("--from=")]
    stage, source, target = re.fullmatch(r"--from=(\S+) (\S+) (\S+)", compiled).groups()
    assert target == f"{project}/pipelines/compiled"
    build = {s.name: s for s in found}[stage]
    (compile_run,) = [a for kind, a in build.steps if kind == "RUN" and "pipeline compile" in a]
    words = next(w for w in commands(compile_run) if "compile" in w)
    assert words[words.index("--out") + 1] == source
    assert words[words.index("--project") + 1] == "/project"
    assert {"OMNIR1_IMAGE", "OMNIR1_GPU_IMAGE"} <= {
        a for kind, a in build.steps if kind == "ARG"
    }, "the packages name the images the builder passes"
    (deps,) = pip_installs([s for s in build.steps if s[0] == "RUN"])[1:]
    assert deps[:2] == ["-c", "/tmp/main.lock"]
    assert {w.split("==")[0] for w in deps[2:]} >= {"kfp", "kfp-kubernetes"}
    source_code = (ROOT / "src/omnir1/airflow_tasks.py").read_text()
    assert 'os.environ.get("OMNIR1_PROJECT")' in source_code
    assert '"pipelines" / "compiled"' in source_code


def test_the_gpu_runtime_can_compile_triton_and_deepspeed_kernels():
    final = stages(ROOT / "docker/trainer-gpu.Dockerfile")[-1].steps
    packages = set()
    for kind, a in final:
        for words in commands(a) if kind == "RUN" else []:
            if words[:2] == ["apt-get", "install"]:
                packages |= {w for w in words[2:] if not w.startswith("-")}
    assert "python3.11-dev" in packages  # Python.h: Triton's driver, torch's C++ extensions
    assert "build-essential" in packages or {"gcc", "g++"} <= packages
    # CPU Adam's JIT build needs ninja (on PATH from the venv) and py-cpuinfo, both locked
    assert {"ninja", "py-cpuinfo", "deepspeed"} <= set(locked("main.lock"))
    env = " ".join(a for kind, a in final if kind == "ENV")
    assert "PATH=/opt/venv/bin:" in env and "HOME=/home/omnir1" in env


def test_flash_attn_is_never_compiled_and_sdpa_is_the_default():
    assert set(locked("gpu.lock")) == {"flash-attn"}
    assert "einops" in locked("main.lock")
    for path in DOCKERFILES:
        text = path.read_text()
        for kind, a in instructions(path):
            assert not (kind == "ENV" and "FLASH_ATTENTION" in a)
        for args in pip_installs(instructions(path)):
            if "gpu.lock" in requirement_files(args) or any("flash" in w for w in args):
                assert path.name == "trainer-gpu.Dockerfile"
                # a prebuilt wheel from the flash-attn build context, nothing else
                assert {"--only-binary=:all:", "--no-index", "--no-deps"} <= set(args)
                assert args[args.index("--find-links") + 1] == "/flash-attn"
                assert "--no-build-isolation" not in args
        if path.name == "trainer-gpu.Dockerfile":
            assert "FROM scratch AS flash-attn" in text, "empty unless a wheel is passed"
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert params["system1"]["attn_implementation"] == "sdpa"


def test_the_cpu_image_has_the_cpu_build_of_the_locked_torch(tmp_path):
    main = locked("main.lock")
    split = run_cpu_lock(tmp_path)
    assert split["cpu-torch.txt"] == {
        "torch": main["torch"] + "+cpu",
        "torchvision": main["torchvision"] + "+cpu",
    }
    deps = split["cpu-deps.txt"]
    assert not [p for p in deps if CUDA_ONLY.match(p) or p in ("torch", "torchvision")]
    dropped = {p for p in main if p not in deps}
    assert dropped == {p for p in main if CUDA_ONLY.match(p)} | {"torch", "torchvision"}
    assert all(main[p] == v for p, v in deps.items()), "every other pin as locked"
    # nothing but the CUDA torch needs what is left out (read from the venv built from the lock)
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"].lower()
        if name not in main or name == "torch" or CUDA_ONLY.match(name):
            continue
        for requirement in dist.requires or []:
            wanted = re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0].lower()
            if "extra ==" not in requirement:
                assert not CUDA_ONLY.match(wanted), f"{name} needs {requirement}"

    steps = instructions(ROOT / "docker/component.Dockerfile")
    installs = pip_installs(steps)
    files = [f for args in installs for f in requirement_files(args)]
    assert "main.lock" not in files and sorted(files) == sorted(CPU_LOCKS)
    torch = next(args for args in installs if "cpu-torch.txt" in requirement_files(args))
    assert "--no-deps" in torch and torch[torch.index("--index-url") + 1] == "$TORCH_INDEX_URL"
    deps_install = next(args for args in installs if "cpu-deps.txt" in requirement_files(args))
    assert "--index-url" not in deps_install  # the rest from the default index
    assert installs.index(torch) < installs.index(deps_install)
    assert ("ARG", "TORCH_INDEX_URL") in steps


def test_no_index_host_is_written_into_the_images():
    for path in [*DOCKERFILES, ROOT / "docker/README.md", ROOT / "docker/pin-base-images.sh"]:
        assert "://" not in path.read_text(), path.name
