"""The Kubeflow pipelines (pipelines/, components/): both compile with `omnir1 pipeline
compile`, and the compiled packages say what the cluster needs: a short run form, GPU tasks on
the GPU pool with shared memory, Secrets and the data PVC where they are used, retries on
network steps, display names and deadlines on every task, each stage once, the fan-out, the
PyTorchJob branch joined with dsl.OneOf; and cache keys that a second submission with the same
inputs reuses for every cached task. Also the fan-out's library side: parts of preprocessing
and prediction merge back into exactly what one whole run makes."""

import dataclasses
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OMNIR1 = str(Path(sys.executable).parent / "omnir1")
GPU_TASKS = {"warm-start", "train", "predict-part", "probe"}
CPU_TASKS = {
    "resolve-params",
    "fetch-data",
    "validate-data",
    "part-indices",
    "preprocess-part",
    "merge-shards",
    "base-models",
    "fetch-model",
    "score",
    "register",
    "report",
    "train-pytorchjob",
}
NETWORK_TASKS = {"resolve-params", "fetch-data", "base-models", "fetch-model", "register"}
# what must run on every submission: resolve-params reads the sources to key them, register
# records a version, the training's report goes into that version's MLflow run
UNCACHED = {"training": {"resolve-params", "register", "report"}, "evaluation": {"resolve-params"}}
RUN_FORM = {
    "training": {
        "data_source": ("STRING", ""),
        "data_version": ("STRING", ""),
        "recipe": ("STRING", ""),
        "base_models": ("STRING", ""),
        "gpus_per_node": ("NUMBER_INTEGER", 0),
        "train_nodes": ("NUMBER_INTEGER", 1),
        "parts": ("NUMBER_INTEGER", 4),
        "device": ("STRING", "cuda"),
        "checkpoint_root": ("STRING", "/mnt/data/checkpoints"),
        "system2_url": ("STRING", ""),
        "overrides": ("STRING", "{}"),
    },
    "evaluation": {
        "model_uri": ("STRING", "models:/omnir1-system1@champion"),
        "baseline_uri": ("STRING", ""),
        "data_source": ("STRING", ""),
        "data_version": ("STRING", ""),
        "recipe": ("STRING", ""),
        "parts": ("NUMBER_INTEGER", 4),
        "device": ("STRING", "cuda"),
        "overrides": ("STRING", "{}"),
    },
}


def compile_all(out: Path, project: Path = ROOT) -> dict[str, tuple[dict, dict]]:
    run = subprocess.run(
        [OMNIR1, "pipeline", "compile", "--project", str(project), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    written = json.loads(run.stdout)
    return {
        name: tuple(yaml.safe_load_all(Path(path).read_text())) for name, path in written.items()
    }


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, tuple[dict, dict]]:
    packages = compile_all(tmp_path_factory.mktemp("compiled"))
    assert set(packages) == {"training", "evaluation"}
    return packages


def walk(spec: dict):
    """(path, task, component) of every task, in nested DAGs (sub-pipelines, loops,
    branches) too; path: the task names from the root."""

    def inner(dag: dict, prefix: tuple):
        for name, task in dag.get("tasks", {}).items():
            component = spec["components"][task["componentRef"]["name"]]
            yield (*prefix, name), task, component
            if "dag" in component:
                yield from inner(component["dag"], (*prefix, name))

    yield from inner(spec["root"]["dag"], ())


def base_name(name: str) -> str:
    """A task's name without the numeric suffix kfp adds to repeated components."""
    return name.rsplit("-", 1)[0] if name.rsplit("-", 1)[-1].isdigit() else name


def tasks(spec: dict) -> dict[str, dict]:
    """Every container task by base name, with its executor; the last one seen."""
    return {
        base_name(path[-1]): {**task, "executor": component["executorLabel"]}
        for path, task, component in walk(spec)
        if "executorLabel" in component
    }


def platform_of(platform: dict, task: dict) -> dict:
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    return executors.get(task["executor"], {})


# ------------------------------------------------------------------------------ cache keys


class CacheKeys:
    """Each container task's cache key in one submission, symbolically, as Kubeflow builds it:
    the executor (image, command), input parameters by value (a pipeline argument, a task's
    output parameter or a constant are the same in every submission with the same arguments
    and unchanged sources; a run-id placeholder is not), input artifacts by identity (a cached
    task's output is the artifact of its key; an uncached task's is new in every submission;
    a sub-DAG's output, dsl.OneOf's included, is that of the tasks it selects)."""

    PER_RUN = re.compile(r"\{\{\$\.(pipeline_job|pipeline_task)")

    def __init__(self, spec: dict, submission: str):
        self.spec, self.submission = spec, submission

    def component(self, path: tuple) -> dict:
        component = self.spec["root"]
        for name in path:
            component = self.spec["components"][
                component["dag"]["tasks"][name]["componentRef"]["name"]
            ]
        return component

    def task(self, path: tuple) -> dict:
        return self.component(path[:-1])["dag"]["tasks"][path[-1]]

    def parameter(self, path: tuple, source: dict):
        """The value of an input parameter of the task at `path`."""
        if "componentInputParameter" in source:
            name, owner = source["componentInputParameter"], path[:-1]
            if not owner:
                return ("argument", name)
            loop = self.task(owner).get("parameterIterator")
            if loop and loop["itemInput"] == name:
                items = {"componentInputParameter": loop["items"]["inputParameter"]}
                return ("loop item", self.parameter((*owner, "items"), items))
            return self.parameter(owner, self.task(owner)["inputs"]["parameters"][name])
        if "taskOutputParameter" in source:
            out = source["taskOutputParameter"]
            return ("output", (*path[:-1], out["producerTask"]), out["outputParameterKey"])
        constant = json.dumps(source["runtimeValue"]["constant"])
        if self.PER_RUN.search(constant):
            return ("this run's", self.submission, constant)
        return ("constant", constant)

    def artifact(self, path: tuple, source: dict):
        """The identity of an input artifact of the task at `path`."""
        if "componentInputArtifact" in source:
            owner = path[:-1]
            return self.artifact(
                owner, self.task(owner)["inputs"]["artifacts"][source["componentInputArtifact"]]
            )
        out = source["taskOutputArtifact"]
        return self.output((*path[:-1], out["producerTask"]), out["outputArtifactKey"])

    def output(self, producer: tuple, key: str):
        component = self.component(producer)
        if "dag" in component:
            selectors = component["dag"]["outputs"]["artifacts"][key]["artifactSelectors"]
            return [
                self.output((*producer, s["producerSubtask"]), s["outputArtifactKey"])
                for s in selectors
            ]
        if self.task(producer).get("cachingOptions", {}).get("enableCache"):
            return ("cached", self.key(producer), key)
        return ("new", self.submission, producer, key)

    def key(self, path: tuple) -> str:
        inputs = self.task(path).get("inputs", {})
        record = {
            "executor": self.spec["deploymentSpec"]["executors"][
                self.component(path)["executorLabel"]
            ],
            "parameters": {
                n: self.parameter(path, s) for n, s in inputs.get("parameters", {}).items()
            },
            "artifacts": {
                n: self.artifact(path, s) for n, s in inputs.get("artifacts", {}).items()
            },
        }
        return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def not_reused(spec: dict) -> set[str]:
    """The cached tasks whose key differs between two submissions with the same arguments."""
    first, second = CacheKeys(spec, "first"), CacheKeys(spec, "second")
    return {
        "/".join(path)
        for path, task, component in walk(spec)
        if "executorLabel" in component
        and task.get("cachingOptions", {}).get("enableCache")
        and first.key(path) != second.key(path)
    }


@pytest.mark.parametrize("name", ["training", "evaluation"])
def test_a_second_submission_with_the_same_inputs_reuses_every_cached_task(compiled, name):
    spec, _ = compiled[name]
    assert not not_reused(spec)
    cached = {
        base_name(path[-1])
        for path, task, component in walk(spec)
        if "executorLabel" in component and task.get("cachingOptions", {}).get("enableCache")
    }
    assert cached == set(tasks(spec)) - UNCACHED[name]
    if name == "training":  # GRPO and everything it feeds is reused too
        assert {"fetch-data", "base-models", "train", "train-pytorchjob", "probe"} <= cached


def test_the_cache_check_finds_a_cached_task_fed_by_an_uncached_one(tmp_path):
    """The check above on pipelines built to fail it: an artifact of an uncached task (as
    fetch-data was), and the run's id, each make a cached task's key new every submission."""
    from kfp import compiler, dsl
    from kfp.dsl import Dataset, Input, Output

    @dsl.component(base_image="python:3.11")
    def fetch(out: Output[Dataset]):
        pass

    @dsl.component(base_image="python:3.11")
    def use(data: Input[Dataset], tag: str):
        pass

    @dsl.pipeline(name="bad")
    def bad(tag: str = "x"):
        fetched = fetch().set_caching_options(False)
        use(data=fetched.outputs["out"], tag=tag).set_caching_options(True)
        again = fetch().set_caching_options(True)
        use(data=again.outputs["out"], tag=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
        use(data=again.outputs["out"], tag=tag)

    compiler.Compiler().compile(bad, str(tmp_path / "bad.yaml"))
    spec = yaml.safe_load((tmp_path / "bad.yaml").read_text())
    assert not_reused(spec) == {"use", "use-2"}


# ------------------------------------------------------------------------------ the run form


@pytest.mark.parametrize("name", ["training", "evaluation"])
def test_the_run_form_is_a_few_typed_settings_and_overrides(compiled, name):
    spec, _ = compiled[name]
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    form = {k: (v["parameterType"], v.get("defaultValue")) for k, v in inputs.items()}
    assert form == RUN_FORM[name]
    for key, value in inputs.items():
        assert len(value.get("description", "")) > 20, key  # the UI's help for each
    # the params values come from the image's params.yaml at run time, not the package
    assert "learning_rate" not in json.dumps(spec["root"]) and "tracking" not in str(form)


def test_resolve_params_outputs_each_stage_its_params_by_value(compiled):
    from omnir1.kube.params import RunParams, params_stages

    spec, _ = compiled["training"]
    outputs = spec["components"]["comp-resolve-params"]["outputDefinitions"]["parameters"]
    fields = [f.name for f in dataclasses.fields(RunParams)]
    assert list(outputs) == sorted(fields)  # kfp sorts them; the component returns fields' order
    component = (ROOT / "components" / "stages.py").read_text()
    declared = re.findall(r'\("(\w+)", (?:str|int)\)', component)
    assert declared == fields
    assert {s.name for s in params_stages()} <= set(fields)
    for name, value in outputs.items():
        assert value["parameterType"] == ("NUMBER_INTEGER" if name == "gpus_per_node" else "STRING")
    # each stage's task takes its own stage's values
    given = {
        base_name(path[-1]): task["inputs"]["parameters"]["params"]
        for path, task, component in walk(spec)
        if "params" in task.get("inputs", {}).get("parameters", {})
    }
    stage_of = {
        "fetch-data": "data",
        "validate-data": "validate",
        "base-models": "models",
        "warm-start": "warm_start",
        "train": "train",
        "train-pytorchjob": "train",
        "register": "register",
    }
    for task, stage in stage_of.items():
        source = json.dumps(given[task])
        assert f"resolve-params-{stage}" in source or f'"{stage}"' in source, (task, source)
    assert set(given) >= set(stage_of) | {"preprocess-part", "merge-shards", "predict-part"}


# ---------------------------------------------------------------------------- the graph


@pytest.mark.parametrize("name", ["training", "evaluation"])
def test_every_task_has_a_display_name_and_a_deadline(compiled, name):
    spec, platform = compiled[name]
    for path, task, component in walk(spec):
        shown = task["taskInfo"]["name"]  # kfp's defaults: for-loop-2, condition-branches-1
        assert not re.search(r"-\d+$", shown), (path, shown)
        if "executorLabel" in component:
            deadline = int(
                platform_of(platform, {"executor": component["executorLabel"]})[
                    "activeDeadlineSeconds"
                ]
            )
            kind = base_name(path[-1])
            if kind.startswith("train"):
                assert deadline >= 7 * 24 * 3600, path  # GRPO runs for days
            elif kind == "resolve-params":
                assert deadline <= 3600, path
            else:
                assert 60 <= deadline <= 24 * 3600, path


@pytest.mark.parametrize("name", ["training", "evaluation"])
def test_each_stage_appears_once(compiled, name):
    spec, _ = compiled[name]
    seen: dict[str, int] = {}
    for path, _task, component in walk(spec):
        if "executorLabel" in component:
            seen[base_name(path[-1])] = seen.get(base_name(path[-1]), 0) + 1
    twice = {"part-indices"}  # the two fan-outs each count their parts
    if name == "evaluation":
        twice.add("fetch-model")  # the model and its baseline
    assert {k for k, n in seen.items() if n > 1} == twice
    assert all(seen[k] == 2 for k in twice)


@pytest.mark.parametrize("name", ["training", "evaluation"])
def test_gpu_tasks_run_on_the_gpu_pool_and_the_rest_do_not(compiled, name):
    spec, platform = compiled[name]
    executors = spec["deploymentSpec"]["executors"]
    found = tasks(spec)
    for task_name, task in found.items():
        container = executors[task["executor"]]["container"]
        k8s = platform_of(platform, task)
        assert "pip install" not in " ".join(container["command"])  # the image has it all
        if task_name in GPU_TASKS:
            assert container["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
            assert container["image"].split("/")[-1].startswith("omnir1-gpu:"), task_name
            assert k8s["nodeSelector"]["labels"] == {"omnir1.io/pool": "gpu"}
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in k8s[
                "tolerations"
            ]
            (shm,) = k8s["emptyDirMounts"]
            assert shm["mountPath"] == "/dev/shm" and shm["medium"] == "Memory"
            assert container["resources"]["resourceMemoryRequest"]
        else:
            assert task_name in CPU_TASKS, task_name
            assert "accelerator" not in container.get("resources", {}), task_name
            assert "nodeSelector" not in k8s, task_name
            assert container["image"].split("/")[-1].startswith("omnir1:"), task_name
    if name == "training":
        assert set(found) == GPU_TASKS | CPU_TASKS - {"fetch-model"}
    else:
        assert set(found) == (GPU_TASKS | CPU_TASKS) - {
            "train",
            "train-pytorchjob",
            "warm-start",
            "base-models",
            "register",
        }


@pytest.mark.parametrize("name", ["training", "evaluation"])
def test_secrets_pvc_retries_and_caching(compiled, name):
    spec, platform = compiled[name]
    for task_name, task in tasks(spec).items():
        k8s = platform_of(platform, task)
        secrets = {s["secretName"]: s for s in k8s.get("secretAsEnv", [])}
        caching = task.get("cachingOptions", {}).get("enableCache", False)
        assert caching == (task_name not in UNCACHED[name]), task_name
        if task_name in NETWORK_TASKS:
            assert task["retryPolicy"]["maxRetryCount"] >= 2, task_name
            assert task["retryPolicy"]["backoffFactor"] > 1
            envs = {e["envVar"] for s in secrets.values() for e in s["keyToEnv"]}
            assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= envs, task_name
        if task_name in {"resolve-params", "register", "base-models", "fetch-model", "train"}:
            assert "omnir1-mlflow" in secrets, task_name
            assert k8s["podMetadata"]["labels"]["omnir1.io/role"] == "trainer"
        if task_name in {
            "resolve-params",
            "fetch-data",
            "validate-data",
            "train",
            "train-pytorchjob",
        }:
            assert k8s["pvcMount"][0]["constant"] == "omnir1-data", task_name
        if task_name == "validate-data":  # a failed validation's Data Docs kept on the PVC
            env = spec["deploymentSpec"]["executors"][task["executor"]]["container"]["env"]
            assert {"name": "OMNIR1_REPORT_COPY", "value": "/mnt/data/reports"} in env
        if task_name == "train":
            assert task["retryPolicy"]["maxRetryCount"] == 2  # resumes from its checkpoint
        # no credentials in the package itself
        text = json.dumps(spec) + json.dumps(platform)
        assert 'AWS_SECRET_ACCESS_KEY": "' not in text


@pytest.mark.parametrize("name", ["training", "evaluation"])
def test_preprocessing_and_prediction_fan_out_over_parts(compiled, name):
    spec, _ = compiled[name]
    loops = {}
    for _path, task, component in walk(spec):
        if "parameterIterator" in task:
            loops[task["taskInfo"]["name"]] = (
                task["parameterIterator"],
                set(component["dag"]["tasks"]),
            )
    assert {k: v[1] for k, v in loops.items()} == {
        "preprocess parts": {"preprocess-part"},
        "predict parts": {"predict-part"},
    }
    for iterator, _ in loops.values():
        assert "part-indices-Output" in iterator["items"]["inputParameter"]
    parts = spec["root"]["inputDefinitions"]["parameters"]["parts"]
    assert parts["parameterType"] == "NUMBER_INTEGER" and parts["defaultValue"] == 4


def test_multi_node_training_is_a_pytorchjob_branch_joined_with_one_of(compiled):
    """train_nodes > 1: the PyTorchJob; else one pod. dsl.OneOf joins the two trainers' model
    and run, so the stages after training are built once."""
    spec, platform = compiled["training"]
    executors = spec["deploymentSpec"]["executors"]
    found = tasks(spec)
    job = found["train-pytorchjob"]
    container = executors[job["executor"]]["container"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["OMNIR1_TRAINER_IMAGE"].split("/")[-1].startswith("omnir1-gpu:")
    assert platform_of(platform, job)["fieldPathAsEnv"] == [
        {"fieldPath": "metadata.uid", "name": "OMNIR1_POD_UID"}  # names each try's job
    ]
    (branches,) = [
        (path, component)
        for path, task, component in walk(spec)
        if task["taskInfo"]["name"] == "train" and "dag" in component
    ]
    _, component = branches
    conditions = {
        task["taskInfo"]["name"]: task["triggerPolicy"]["condition"]
        for task in component["dag"]["tasks"].values()
    }
    assert set(conditions) == {"multi-node", "one-node"}
    assert "train_nodes" in conditions["multi-node"] and "> 1" in conditions["multi-node"].replace(
        "int(", ""
    )
    joined = component["dag"]["outputs"]["artifacts"]
    producers = {
        json.dumps(sorted(s["outputArtifactKey"] for s in out["artifactSelectors"]))
        for out in joined.values()
    }
    assert producers == {
        json.dumps(["pipelinechannel--train-model", "pipelinechannel--train-pytorchjob-model"]),
        json.dumps(["pipelinechannel--train-pytorchjob-run", "pipelinechannel--train-run"]),
    }
    # the GPUs of the one-pod trainer are what resolve-params resolved (params or setting)
    one = found["train"]
    assert "{{$.inputs.parameters['pipelinechannel--resolve-params-gpus_per_node']}}" in json.dumps(
        executors[one["executor"]]["container"]["resources"]
    )


def test_grpo_can_take_its_rewards_from_the_charts_system2_service(compiled):
    """`system2_url` reaches both trainers; the one-pod trainer gets the service's token from
    the chart's Secret (optional: a run with System 2 in process never needs it)."""
    spec, platform = compiled["training"]
    setting = spec["root"]["inputDefinitions"]["parameters"]["system2_url"]
    assert setting["parameterType"] == "STRING" and setting["defaultValue"] == ""
    found = tasks(spec)
    for name in ("train", "train-pytorchjob"):
        given = found[name]["inputs"]["parameters"]["system2_url"]
        assert given["componentInputParameter"].endswith("system2_url"), name
    assert found["train"]["inputs"]["parameters"]["system2_root"]["runtimeValue"] == {
        "constant": "/mnt/data"
    }
    (token,) = [
        s
        for s in platform_of(platform, found["train"])["secretAsEnv"]
        if s["secretName"] == "omnir1-system2-token"
    ]
    assert token["keyToEnv"] == [
        {"secretKey": "OMNIR1_SYSTEM2_TOKEN", "envVar": "OMNIR1_SYSTEM2_TOKEN"}
    ]
    assert token["optional"] is True


def test_compile_refuses_a_folder_without_pipelines(tmp_path):
    out = subprocess.run(
        [OMNIR1, "pipeline", "compile", "--project", str(tmp_path), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "no pipelines/training.py here" in out.stderr


# ------------------------------------------------------------------ the fan-out's library side


def test_preprocessing_parts_merge_into_the_whole(tmp_path, synth_sets):
    from omnir1.config import load_params
    from omnir1.data.preprocess import merge_shards, preprocess

    system1 = load_params(ROOT / "params.yaml").system1
    whole = preprocess("revos", synth_sets["revos"], tmp_path / "whole", system1)
    parts = [tmp_path / f"part{i}" for i in range(3)]
    sizes = [
        preprocess("revos", synth_sets["revos"], p, system1, part=(i, 3))["videos"]
        for i, p in enumerate(parts)
    ]
    assert sum(sizes) == whole["videos"] and min(sizes) >= 1
    merged = merge_shards(parts, tmp_path / "merged")
    assert merged["videos"] == whole["videos"]
    index = json.loads((tmp_path / "merged" / "index.json").read_text())
    assert index == json.loads((tmp_path / "whole" / "index.json").read_text())
    for entry in index["shards"]:
        vid = entry["video_id"]
        for name in ("system1_frames.npy", "frames.npy"):
            a = np.load(tmp_path / "whole" / vid / name)
            assert np.array_equal(a, np.load(tmp_path / "merged" / vid / name)), (vid, name)
    # an unfinished part (no index.json) is refused, and nothing is written
    (parts[1] / "index.json").unlink()
    from omnir1.errors import DataError

    with pytest.raises(DataError, match="did not complete"):
        merge_shards(parts, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_benchmark_parts_merge_into_the_whole(tmp_path, synth_sets, tiny_models):
    from conftest import short_params

    params = str(short_params(tmp_path, ("videos_per_split: 2 #", "videos_per_split: 3 #")))
    common = [
        "--data",
        f"revos={synth_sets['revos']}",
        "--model",
        f"a={tiny_models}",
        "--params",
        params,
        "--quiet",
    ]

    def omnir1(*args):
        out = subprocess.run([OMNIR1, "benchmark", *common, *args], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-3000:]

    omnir1("--out", str(tmp_path / "whole"), "--metrics", str(tmp_path / "whole.json"))
    for i in range(2):
        omnir1("--out", str(tmp_path / f"p{i}"), "--part", f"{i}/2")
    omnir1(
        "--merge",
        str(tmp_path / "p0"),
        "--merge",
        str(tmp_path / "p1"),
        "--out",
        str(tmp_path / "merged"),
        "--metrics",
        str(tmp_path / "merged.json"),
    )
    whole = json.loads((tmp_path / "whole.json").read_text())
    merged = json.loads((tmp_path / "merged.json").read_text())
    assert merged["a"] == whole["a"] and whole["a"]["revos"]["expressions"] > 0
    answers = {
        name: sorted(
            (tmp_path / name / "revos/a/predictions/answers.jsonl").read_text().splitlines()
        )
        for name in ("whole", "merged")
    }
    assert answers["whole"] == answers["merged"]
    counts = [
        json.loads((tmp_path / n / "revos/a/predictions/predictions.json").read_text())["counts"]
        for n in ("whole", "merged")
    ]
    assert counts[0] == counts[1]
