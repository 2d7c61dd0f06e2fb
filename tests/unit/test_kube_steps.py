"""omnir1.kube.steps: how a component's step calls the library and reports."""

import pytest

from omnir1.errors import DataError
from omnir1.kube.steps import flat_metrics, validate


def test_bad_input_fails_the_step_naming_the_file(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("data: {formats: [revos]}\n")
    with pytest.raises(DataError, match=r"revos"):
        validate(str(params), str(tmp_path / "none"), str(tmp_path / "reports"))


def test_metrics_are_flattened_to_numbers():
    nested = {"trained": {"revos": {"JF": 0.5, "n": 3}}, "name": "x", "ok": True}
    assert flat_metrics(nested) == {"trained.revos.JF": 0.5, "trained.revos.n": 3.0}


@pytest.mark.parametrize("url", ["", "http://rel-omni-r1-system2:8080"])
def test_multi_node_training_calls_system2_where_the_pipeline_says(tmp_path, monkeypatch, url):
    """The PyTorchJob's `omnir1 train` gets --system2-url and the PVC as the service's data
    root (the inputs are staged there), and its pods the token from the chart's Secret."""
    import kubernetes

    from omnir1.kube import pytorchjob, steps

    for name in ("datasets/revos", "shards/revos", "models"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "params.yaml").write_text("data: {train_format: revos, formats: [revos]}\n")
    namespace = tmp_path / "namespace"
    namespace.write_text("ml\n")
    manifests = []

    def run(self, manifest, timeout_s):
        manifests.append(manifest)
        raise RuntimeError("stop here")  # what follows copies the job's outputs back

    monkeypatch.setattr(steps, "SERVICE_ACCOUNT_NAMESPACE", str(namespace))
    monkeypatch.setattr(kubernetes.config, "load_incluster_config", lambda: None)
    monkeypatch.setattr(pytorchjob.PyTorchJobRunner, "run", run)
    monkeypatch.setenv("OMNIR1_TRAINER_IMAGE", "registry/omnir1-gpu:1")
    with pytest.raises(RuntimeError, match="stop here"):
        steps.train_multi_node(
            str(tmp_path / "params.yaml"),
            str(tmp_path / "datasets"),
            str(tmp_path / "shards"),
            str(tmp_path / "models"),
            str(tmp_path / "run"),
            str(tmp_path / "model"),
            nodes=2,
            gpus_per_node=8,
            job_id="nightly",
            workdir_root=str(tmp_path / "work"),
            system2_url=url,
        )
    (master,) = manifests[0]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"][
        "containers"
    ]
    command = master["command"][-1]
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in master["env"] if "valueFrom" in e}
    if url:
        assert f"--system2-url {url} --system2-root /mnt/data" in command
        assert secrets["OMNIR1_SYSTEM2_TOKEN"]["name"] == "omnir1-system2-token"
    else:
        assert "--system2-url" not in command and "OMNIR1_SYSTEM2_TOKEN" not in secrets


def test_an_empty_model_uri_leaves_an_artifact_that_holds_no_model(tmp_path):
    """The evaluation pipeline without a baseline: its "fetch baseline" step leaves a model
    artifact that the later steps read as no model at all."""
    from types import SimpleNamespace

    from omnir1.kube import steps

    params = tmp_path / "params.yaml"
    params.write_text("{}\n")
    steps.fetch_model(str(params), "", str(tmp_path / "baseline"))
    assert steps.path_of(SimpleNamespace(path=str(tmp_path / "baseline"))) is None
    assert steps.path_of(None) is None
    (tmp_path / "model").mkdir()
    assert steps.path_of(SimpleNamespace(path=str(tmp_path / "model"))) == str(tmp_path / "model")
    assert steps._models(None, str(tmp_path / "model")) == {"trained": str(tmp_path / "model")}
