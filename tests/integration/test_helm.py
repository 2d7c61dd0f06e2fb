"""The Helm chart with the real helm binary: lint --strict and template for every values file,
every rendered manifest validated against the Kubernetes schemas (kubernetes-validate
--strict), and what the chart promises checked on the rendered objects: System 2 on the GPU
pool with probes on /health, non-root everywhere, secrets only by reference, least-privilege
RBAC, and NetworkPolicies that let only the trainer reach System 2."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "omni-r1"
HELM = ROOT / ".tools" / "bin" / "helm"
VALUES = {
    "default": [],
    "staging": ["-f", str(CHART / "values-staging.yaml")],
    "production": ["-f", str(CHART / "values-production.yaml")],
}

pytestmark = pytest.mark.skipif(not HELM.exists(), reason="make setup installs helm")


def helm(*args: str) -> str:
    out = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def render(env: str, *extra: str) -> dict[tuple[str, str], dict]:
    text = helm("template", "rel", str(CHART), "--namespace", "ml", *VALUES[env], *extra)
    docs = [d for d in yaml.safe_load_all(text) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


@pytest.mark.parametrize("env", list(VALUES))
def test_lint_render_and_validate(env, tmp_path):
    helm("lint", "--strict", str(CHART), *VALUES[env])
    rendered = tmp_path / f"{env}.yaml"
    rendered.write_text(helm("template", "rel", str(CHART), "--namespace", "ml", *VALUES[env]))
    out = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "kubernetes-validate"), "--strict", str(rendered)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "passed for resource deployment/rel-omni-r1-system2" in out.stdout + out.stderr


@pytest.mark.parametrize("env", list(VALUES))
def test_what_the_chart_promises(env):
    objects = render(env)
    system2 = objects["Deployment", "rel-omni-r1-system2"]["spec"]["template"]["spec"]
    (container,) = system2["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert system2["nodeSelector"]["omnir1.io/pool"] == "gpu"
    assert any(t["key"] == "nvidia.com/gpu" for t in system2["tolerations"])
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
    assert {"name": "shm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    token = next(e for e in container["env"] if e["name"] == "OMNIR1_SYSTEM2_TOKEN")
    assert "secretKeyRef" in token["valueFrom"]  # by reference, never a literal
    # every workload: non-root, no escalation, read-only root, no API token mounted
    for kind, name in objects:
        if kind != "Deployment":
            continue
        pod = objects[kind, name]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
            for e in c.get("env", []):
                assert "value" not in e or not e["name"].startswith(("AWS_SECRET", "OMNIR1_SYS"))
    # least privilege: one namespaced Role, no wildcards, no Secrets
    assert not any(kind == "ClusterRole" for kind, _ in objects)
    role = objects["Role", "rel-omni-r1-pipeline-runner"]
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert "secrets" not in rule["resources"]
        assert set(rule["verbs"]) <= {"get", "list", "watch", "create", "delete"}
        if "configmaps" in rule["resources"]:  # the KFP launcher's own, no other
            assert rule["resourceNames"] == ["kfp-launcher"] and rule["verbs"] == ["get"]
    binding = objects["RoleBinding", "rel-omni-r1-pipeline-runner"]
    assert binding["subjects"][0] == {
        "kind": "ServiceAccount",
        "name": "omnir1-pipeline-runner",
        "namespace": "ml",
    }
    # only the trainer's pods reach System 2, on its port
    policy = objects["NetworkPolicy", "rel-omni-r1-system2"]["spec"]
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "system2"
    (rule,) = policy["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"omnir1.io/role": "trainer"}}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]
    autoscaled = ("HorizontalPodAutoscaler", "rel-omni-r1-system2") in objects
    assert autoscaled is (env != "staging")


def test_mlflow_store_follows_the_backend_secret():
    sqlite = render("default")
    assert ("PersistentVolumeClaim", "rel-omni-r1-mlflow") in sqlite
    args = sqlite["Deployment", "rel-omni-r1-mlflow"]["spec"]["template"]["spec"]
    assert "--backend-store-uri=sqlite:////mlflow/mlflow.db" in args["containers"][0]["args"]
    postgres = render("production")
    assert ("PersistentVolumeClaim", "rel-omni-r1-mlflow") not in postgres
    (c,) = postgres["Deployment", "rel-omni-r1-mlflow"]["spec"]["template"]["spec"]["containers"]
    backend = next(e for e in c["env"] if e["name"] == "MLFLOW_BACKEND_STORE_URI")
    assert backend["valueFrom"]["secretKeyRef"]["name"] == "omnir1-mlflow-backend"


def test_params_configmap_carries_the_params_file():
    objects = render("default", "--set-file", f"params.yaml={ROOT / 'params.yaml'}")
    data = objects["ConfigMap", "rel-omni-r1-params"]["data"]["params.yaml"]
    assert yaml.safe_load(data) == yaml.safe_load((ROOT / "params.yaml").read_text())
    assert ("ConfigMap", "rel-omni-r1-params") not in render("default")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # mlflow.server imports
def test_mlflow_answers_its_service_names_and_no_other_host():
    """MLflow 3 refuses Host headers outside --allowed-hosts (DNS-rebinding protection); its
    default (localhost, private IPs) would refuse the trainers calling it by Service name. The
    chart lists the Service's names, never "*"; checked with MLflow's own matcher."""
    from mlflow.server.security_utils import is_allowed_host_header

    def allowed_hosts(*extra: str) -> list[str]:
        objects = render("default", *extra)
        (c,) = objects["Deployment", "rel-omni-r1-mlflow"]["spec"]["template"]["spec"]["containers"]
        (arg,) = [a for a in c["args"] if a.startswith("--allowed-hosts=")]
        return arg.removeprefix("--allowed-hosts=").split(",")

    hosts = allowed_hosts()
    assert "*" not in hosts
    for host in (
        "rel-omni-r1-mlflow:5000",
        "rel-omni-r1-mlflow.ml:5000",
        "rel-omni-r1-mlflow.ml.svc.cluster.local:5000",
        "localhost:5000",  # kubectl port-forward
    ):
        assert is_allowed_host_header(hosts, host), host
    for host in ("evil.example.com", "rel-omni-r1-mlflow.ml.evil.example.com:5000", "10.0.0.7"):
        assert not is_allowed_host_header(hosts, host), host
    extra = allowed_hosts("--set", "mlflow.allowedHosts={mlflow.example.com}")
    assert is_allowed_host_header(extra, "mlflow.example.com")


def test_system2_scales_on_its_queue_and_is_started_with_arguments_the_cli_takes():
    from omnir1.cli import build_parser

    objects = render("production")
    hpa = objects["HorizontalPodAutoscaler", "rel-omni-r1-system2"]["spec"]
    (metric,) = hpa["metrics"]  # GPU-bound work: not CPU
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "omnir1_system2_queue_depth"
    # Prometheus scrapes /metrics with the token, from the Service that fronts the pods
    monitor = objects["ServiceMonitor", "rel-omni-r1-system2"]["spec"]
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    assert endpoint["authorization"]["credentials"] == {
        "name": "omnir1-system2-token",
        "key": "OMNIR1_SYSTEM2_TOKEN",
    }
    service_labels = objects["Service", "rel-omni-r1-system2"]["metadata"]["labels"]
    assert monitor["selector"]["matchLabels"].items() <= service_labels.items()
    assert ("ServiceMonitor", "rel-omni-r1-system2") not in render("default")  # needs the CRDs
    # every argument the chart passes is one `omnir1 serve-system2` accepts
    pod = objects["Deployment", "rel-omni-r1-system2"]["spec"]["template"]["spec"]
    args = build_parser().parse_args(pod["containers"][0]["args"])
    assert (args.workers, args.queue_size, args.queue_timeout) == (1, 8, 120.0)
    assert (args.work_timeout, args.max_connections) == (600.0, 64)
