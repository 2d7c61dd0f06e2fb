"""The pipeline's stages, in order: the one list that dvc.yaml, the Kubeflow components and the
CLI follow (tests/unit/test_stages.py holds each of them to it).

A stage is one `omnir1` command under `dvc repro` (dvc.yaml, whose stage of the same name runs
it and declares the params keys and library code below), and one or more functions of
omnir1.kube.steps under Kubeflow (components/stages.py wraps each in a component). Adding a
stage: an entry here, its library function and CLI command, its dvc.yaml stage, its step and
component (README "Extending").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str  # dvc.yaml's stage name
    command: tuple[str, ...]  # the omnir1 command the DVC stage runs
    steps: tuple[str, ...]  # the omnir1.kube.steps functions the Kubeflow components run
    params: tuple[str, ...]  # the params.yaml keys it reads (dvc.yaml `params`)
    code: tuple[str, ...]  # the library code it runs (dvc.yaml `deps` under src/)
    per_format: bool = False  # once per data set of data.formats (dvc.yaml `foreach`)


DATA_CODE = ("src/omnir1/benchmarks", "src/omnir1/data", "src/omnir1/media")
# the warm start (supervised), evaluation and probes never sample: System 1's sampling settings
# do not make them stale
SAMPLING = ("temperature", "top_p")


def _greedy_system1() -> tuple[str, ...]:
    from omnir1.config import System1Params

    return tuple(f"system1.{k}" for k in System1Params.model_fields if k not in SAMPLING)


GREEDY_SYSTEM1 = _greedy_system1()
MODEL_CODE = ("src/omnir1/systems",)

STAGES: tuple[Stage, ...] = (
    # what an external source holds now (DVC runs it every time; Kubeflow keys its cached data
    # fetch on the same digest)
    Stage(
        "source",
        ("data", "source"),
        (),
        ("data.source", "data.sources", "data.synth"),
        ("src/omnir1/data",),
        per_format=True,
    ),
    Stage(
        "data",
        ("data", "fetch"),
        ("fetch_data",),
        ("data.source", "data.sources", "data.synth"),
        DATA_CODE,
        per_format=True,
    ),
    Stage("validate", ("data", "validate"), ("validate",), ("validate",), DATA_CODE, True),
    Stage(
        "preprocess",
        ("data", "preprocess"),
        ("preprocess", "merge_shards"),
        ("system1.fps", "system1.max_frames", "system1.max_pixels", "preprocess"),
        DATA_CODE,
        per_format=True,
    ),
    Stage(
        "models",
        ("models", "base"),
        ("base_models",),
        ("models",),
        ("src/omnir1/models", "src/omnir1/registry.py"),
    ),
    Stage(
        "warm_start",
        ("warm-start",),
        ("warm_start",),
        (*GREEDY_SYSTEM1, "grounder", "warm_start", "data.train_format"),  # supervised
        ("src/omnir1/benchmarks", "src/omnir1/rl", *MODEL_CODE),
    ),
    Stage(
        "train",
        ("train",),
        ("train", "train_multi_node"),
        ("system1", "grounder", "rewards", "train", "data.train_format"),
        ("src/omnir1/benchmarks", "src/omnir1/rl", *MODEL_CODE),
    ),
    Stage(
        "evaluate",
        ("benchmark",),
        ("predict", "score"),
        ("data.formats", *GREEDY_SYSTEM1, "grounder", "evaluate", "train.seed"),
        ("src/omnir1/benchmarks", "src/omnir1/eval", *MODEL_CODE),
    ),
    Stage(
        "probe",
        ("probe",),
        ("probe",),
        (
            "data.formats",
            *GREEDY_SYSTEM1,
            "grounder",
            "probe",
            "evaluate.system1_batch_size",
            "train.seed",
        ),
        ("src/omnir1/benchmarks", "src/omnir1/eval", *MODEL_CODE),
    ),
    Stage(
        "register",
        ("register",),
        ("register",),
        ("register", "tracking"),
        ("src/omnir1/registry.py", "src/omnir1/mlflow_model.py"),
    ),
    Stage("report", ("report",), ("report",), ("tracking",), ("src/omnir1/report.py",)),
)
