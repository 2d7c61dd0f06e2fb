"""The Kubeflow pipelines (pipelines/, components/): both compile with `omnir1 pipeline
compile`, and the compiled packages say what the cluster needs: every params.yaml key a
parameter with its default, GPU tasks on the GPU pool with shared memory, Secrets and the data
PVC where they are used, retries and no cache on network steps, the fan-out, the PyTorchJob
branch. Also the fan-out's library side: parts of preprocessing and prediction merge back into
exactly what one whole run makes."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from omnir1.kube.params import pipeline_parameters

ROOT = Path(__file__).resolve().parents[2]
OMNIR1 = str(Path(sys.executable).parent / "omnir1")
GPU_TASKS = {"warm-start", "train", "predict-part", "probe"}
CPU_TASKS = {
    "render-params",
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
NETWORK_TASKS = {"fetch-data", "base-models", "fetch-model", "register"}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, tuple[dict, dict]]:
    out = tmp_path_factory.mktemp("compiled")
    run = subprocess.run(
        [OMNIR1, "pipeline", "compile", "--out", str(out)], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]
    written = json.loads(run.stdout)
    assert set(written) == {"training", "evaluation"}
    return {
        name: tuple(yaml.safe_load_all(Path(path).read_text())) for name, path in written.items()
    }


def tasks(spec: dict) -> dict[str, dict]:
    """Every task of the pipeline, nested DAGs (loops, branches) included, by name with the
    numeric suffix kfp adds to repeated components removed; the spec of the last one seen."""
    out: dict[str, dict] = {}

    def walk(dag: dict) -> None:
        for name, task in dag.get("tasks", {}).items():
            component = spec["components"][task["componentRef"]["name"]]
            if "dag" in component:
                walk(component["dag"])
            else:
                base = name.rsplit("-", 1)[0] if name.rsplit("-", 1)[-1].isdigit() else name
                out[base] = {**task, "executor": component["executorLabel"]}

    walk(spec["root"]["dag"])
    return out


def platform_of(platform: dict, task: dict) -> dict:
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    return executors.get(task["executor"], {})


@pytest.mark.parametrize("name", ["training", "evaluation"])
def test_every_params_yaml_key_is_a_pipeline_parameter_with_its_default(compiled, name):
    spec, _ = compiled[name]
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    for p in pipeline_parameters(ROOT / "params.yaml"):
        assert p.name in inputs, p.name
        default = inputs[p.name].get("defaultValue")
        if isinstance(p.default, int | float) and not isinstance(p.default, bool):
            assert default == pytest.approx(p.default), p.name
        else:
            assert default == p.default, p.name
    # and the first task renders them all into the params.yaml every stage reads
    render = spec["components"]["comp-render-params"]["inputDefinitions"]["parameters"]
    assert set(render) == {p.name for p in pipeline_parameters(ROOT / "params.yaml")}


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
    expected = GPU_TASKS | CPU_TASKS - {"fetch-model"} if name == "training" else None
    if expected:
        assert set(found) == expected
    else:
        assert {"fetch-model", "predict-part", "score", "probe", "report"} <= set(found)
        assert not {"train", "register", "warm-start"} & set(found)


@pytest.mark.parametrize("name", ["training", "evaluation"])
def test_secrets_pvc_retries_and_caching(compiled, name):
    spec, platform = compiled[name]
    for task_name, task in tasks(spec).items():
        k8s = platform_of(platform, task)
        secrets = {s["secretName"]: s for s in k8s.get("secretAsEnv", [])}
        caching = task.get("cachingOptions", {}).get("enableCache", False)
        if task_name in NETWORK_TASKS:
            assert task["retryPolicy"]["maxRetryCount"] >= 2, task_name
            assert task["retryPolicy"]["backoffFactor"] > 1
            assert not caching, task_name  # the source may change under the same inputs
            envs = {e["envVar"] for s in secrets.values() for e in s["keyToEnv"]}
            assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= envs, task_name
        elif task_name in {"validate-data", "preprocess-part", "merge-shards", "score"}:
            assert caching, task_name
        if task_name in {"register", "base-models", "fetch-model", "train"}:
            assert "omnir1-mlflow" in secrets, task_name
            assert k8s["podMetadata"]["labels"]["omnir1.io/role"] == "trainer"
        if task_name in {"fetch-data", "validate-data", "train", "train-pytorchjob"}:
            assert k8s["pvcMount"][0]["constant"] == "omnir1-data", task_name
        if task_name == "validate-data":  # a failed validation's Data Docs kept on the PVC
            env = spec["deploymentSpec"]["executors"][task["executor"]]["container"]["env"]
            assert {"name": "OMNIR1_REPORT_COPY", "value": "/mnt/data/reports"} in env
        if task_name == "train":
            assert not caching and task["retryPolicy"]["maxRetryCount"] == 2
        # no credentials in the package itself
        text = json.dumps(spec) + json.dumps(platform)
        assert 'AWS_SECRET_ACCESS_KEY": "' not in text


@pytest.mark.parametrize("name", ["training", "evaluation"])
def test_preprocessing_and_prediction_fan_out_over_parts(compiled, name):
    spec, _ = compiled[name]
    loops = {}

    def walk(dag: dict) -> None:
        for task_name, task in dag.get("tasks", {}).items():
            component = spec["components"][task["componentRef"]["name"]]
            if "parameterIterator" in task:
                inner = set(component["dag"]["tasks"])
                loops[task_name] = (task["parameterIterator"], inner)
            if "dag" in component:
                walk(component["dag"])

    walk(spec["root"]["dag"])
    bodies = [inner for _, inner in loops.values()]
    assert {"preprocess-part"} in bodies
    assert any(b and all(t.startswith("predict-part") for t in b) for b in bodies)
    for iterator, _ in loops.values():
        assert "part-indices-Output" in iterator["items"]["inputParameter"]
    parts = spec["root"]["inputDefinitions"]["parameters"]["parts"]
    assert parts["parameterType"] == "NUMBER_INTEGER" and parts["defaultValue"] == 4


def test_multi_node_training_is_a_pytorchjob_branch(compiled):
    spec, _ = compiled["training"]
    executors = spec["deploymentSpec"]["executors"]
    job = tasks(spec)["train-pytorchjob"]
    container = executors[job["executor"]]["container"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["OMNIR1_TRAINER_IMAGE"].split("/")[-1].startswith("omnir1-gpu:")
    branches = json.dumps(spec["components"]["comp-condition-branches-2"])
    assert "train_nodes" in branches and "> 1" in branches.replace("int(", "")
    one = tasks(spec)["train"]
    assert "{{$.inputs.parameters['pipelinechannel--train__gpus_per_node']}}" in json.dumps(
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


def test_null_params_are_parameters_on_the_cluster_and_left_to_params_yaml_locally():
    from omnir1.kube.pipeline import load_pipeline

    release = ROOT / "configs" / "params" / "release.yaml"  # evaluate.videos_per_split: null
    cluster = load_pipeline("training", ROOT, release).component_spec.inputs
    local = load_pipeline("training", ROOT, release, local=True).component_spec.inputs
    assert "evaluate__videos_per_split" in cluster and "evaluate__videos_per_split" not in local
    assert cluster["evaluate__videos_per_split"].optional
    assert set(cluster) - set(local) == {
        p.name for p in pipeline_parameters(release) if p.default is None
    }


def test_params_values_reach_the_render_params_source_as_literals_only(tmp_path, monkeypatch):
    """components/stages.py exec()s the source of the render-params component it writes (kfp
    needs one argument per parameter): names come from the Params model and every default is
    written with repr(), so a params value that looks like code stays a string."""
    from components import stages

    monkeypatch.chdir(tmp_path)
    evil = "x'); open('PWNED', 'w'); ('"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"tracking": {"experiment": evil}}))
    component = stages.render_params_component(pipeline_parameters(params))
    assert component.component_spec.inputs["tracking__experiment"].default == evil
    assert not (tmp_path / "PWNED").exists()
    bad = pipeline_parameters(params)
    bad[0] = type(bad[0])("x=1) or (y", bad[0].path, bad[0].annotation, bad[0].default)
    with pytest.raises(ValueError, match="not a name with a literal default"):
        stages.render_params_component(bad)
