"""The Helm chart with the real helm binary: lint --strict and template for every values file,
every rendered manifest validated against the Kubernetes schemas (kubernetes-validate
--strict), and what the chart promises checked on the rendered objects: System 2 on the GPU
pool with startup, readiness and liveness probes on /health, non-root everywhere, secrets only
by reference, least-privilege RBAC, NetworkPolicies that let only the trainer reach System 2,
values refused by values.schema.json, the NOTES, the `helm test` pod (its script run against
local servers), the data PVC, the names pipelines/cluster.py expects, and the READMEs'
`helm install` as written. The install-time check
of the Secrets runs `helm install --dry-run=server` against a stand-in Kubernetes API on
127.0.0.1 (discovery, Secrets and PVCs: what `lookup` and the install read)."""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


def run_helm(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120, env=env)


def helm(*args: str, env: dict | None = None) -> str:
    out = run_helm(*args, env=env)
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
    assert "passed for resource pod/rel-omni-r1-test-health" in out.stdout + out.stderr


@pytest.mark.parametrize("env", list(VALUES))
def test_what_the_chart_promises(env):
    objects = render(env)
    system2 = objects["Deployment", "rel-omni-r1-system2"]["spec"]["template"]["spec"]
    (container,) = system2["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert system2["nodeSelector"]["omnir1.io/pool"] == "gpu"
    assert any(t["key"] == "nvidia.com/gpu" for t in system2["tolerations"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
    assert {"name": "shm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    token = next(e for e in container["env"] if e["name"] == "OMNIR1_SYSTEM2_TOKEN")
    assert "secretKeyRef" in token["valueFrom"]  # by reference, never a literal
    # every workload and the test pod: non-root, no escalation, read-only root, no API token
    assert ("Pod", "rel-omni-r1-test-health") in objects
    for kind, name in objects:
        if kind not in ("Deployment", "Pod"):
            continue
        spec = objects[kind, name]["spec"]
        pod = spec["template"]["spec"] if kind == "Deployment" else spec
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


def test_system2_reads_the_grounder_settings_of_the_params_configmap(tmp_path):
    """The params ConfigMap is System 2's `--params`: the service shows keyframes to the
    grounder as the trainers do; without params.yaml there is neither ConfigMap nor flag."""
    from omnir1.cli import build_parser
    from omnir1.config import load_params

    objects = render("default", "--set-file", f"params.yaml={ROOT / 'params.yaml'}")
    data = objects["ConfigMap", "rel-omni-r1-params"]["data"]["params.yaml"]
    assert yaml.safe_load(data) == yaml.safe_load((ROOT / "params.yaml").read_text())
    pod = objects["Deployment", "rel-omni-r1-system2"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    args = build_parser().parse_args(container["args"])
    mount = next(m for m in container["volumeMounts"] if m["name"] == "params")
    assert Path(args.params).parent == Path(mount["mountPath"]) and mount["readOnly"] is True
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "params")
    assert volume["configMap"]["name"] == "rel-omni-r1-params"
    assert "checksum/params" in pod["metadata"]["annotations"]  # a new file restarts the pods
    mounted = tmp_path / Path(args.params).name  # what the service reads from the mount
    mounted.write_text(data)
    assert load_params(mounted).grounder == load_params(ROOT / "params.yaml").grounder

    bare = render("default")
    assert ("ConfigMap", "rel-omni-r1-params") not in bare
    (container,) = bare["Deployment", "rel-omni-r1-system2"]["spec"]["template"]["spec"][
        "containers"
    ]
    assert build_parser().parse_args(container["args"]).params is None


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


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("system2.replicas=two", "at '/system2/replicas': got string, want integer"),
        ("system2.replica=2", "at '/system2': additional properties 'replica' not allowed"),
        ("mlflow.workrs=4", "at '/mlflow': additional properties 'workrs' not allowed"),
        ("system2.port=0", "at '/system2/port': minimum: got 0, want 1"),
        ("mlflow.port=70000", "at '/mlflow/port': maximum: got 70,000, want 65,535"),
        ("system2.workers=0", "at '/system2/workers': minimum: got 0, want 1"),
        ("system2.queueSize=-1", "at '/system2/queueSize': minimum: got -1, want 0"),
        ("system2.queueTimeoutS=0", "at '/system2/queueTimeoutS': exclusiveMinimum"),
        ("system2.startupProbe.failureThreshold=0", "at '/system2/startupProbe/failureThreshold'"),
        ("image.pullPolicy=Sometimes", "at '/image/pullPolicy': value must be one of"),
        ("data.accessModes={ReadWriteAll}", "at '/data/accessModes/0': value must be one of"),
        ("secrets.s3=My_Secret", "at '/secrets/s3'"),
        ("mlflow.allowedHosts={*}", "at '/mlflow/allowedHosts/0'"),
        ("tracking.uri=x", "additional properties 'tracking' not allowed"),
    ],
)
def test_the_schema_refuses_bad_values_by_name(setting, message):
    for command in (["template", "rel"], ["lint", "--strict"]):
        out = run_helm(*command, str(CHART), "--set", setting)
        assert out.returncode != 0, setting
        assert message in out.stdout + out.stderr, out.stdout + out.stderr


def test_every_section_of_the_schema_is_closed_and_every_value_typed():
    """A typo in any key the chart defines fails; pass-through Kubernetes fields
    (securityContext, resources' quantities, nodeSelector) stay open, typed as objects."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    definitions = schema["definitions"]

    def resolve(node: dict) -> dict:
        return definitions[node["$ref"].rsplit("/", 1)[1]] if "$ref" in node else node

    def walk(node: dict, value, where: str) -> None:
        node = resolve(node)
        assert "type" in node or "enum" in node or "anyOf" in node, where
        if isinstance(value, dict) and "properties" in node:
            assert node["additionalProperties"] is False, where
            assert set(value) <= set(node["properties"]), where
            for key, child in value.items():
                walk(node["properties"][key], child, f"{where}.{key}")

    walk(schema, defaults, "values")
    for section in ("system2", "mlflow", "secrets", "data", "networkPolicy"):
        assert schema["properties"][section]["additionalProperties"] is False


def test_notes_say_how_to_reach_the_services_the_secrets_and_helm_test():
    out = helm("install", "rel", str(CHART), "--namespace", "ml", "--dry-run=client")
    notes = out[out.index("NOTES:") :]
    objects = render("default")
    for component in ("mlflow", "system2"):
        service = objects["Service", f"rel-omni-r1-{component}"]
        port = service["spec"]["ports"][0]["port"]
        name = service["metadata"]["name"]
        assert f"kubectl -n ml port-forward svc/{name} {port}:{port}" in notes
        assert f"http://{name}.ml.svc.cluster.local:{port}" in notes
        assert ("Deployment", name) in objects
        assert f"kubectl -n ml rollout status deploy/{name} --timeout=" in notes
    for secret in ("omnir1-s3", "omnir1-system2-token", "omnir1-mlflow"):
        assert f"Secret {secret}:" in notes
    assert "PersistentVolumeClaim omnir1-data" in notes
    assert "helm test rel -n ml" in notes
    assert "up to 20 min" in notes  # the startupProbe's budget
    assert "Bearer $TOKEN" in notes
    # without System 2 the notes do not send anyone to it
    out = helm(
        "install",
        "rel",
        str(CHART),
        "-n",
        "ml",
        "--dry-run=client",
        "--set",
        "system2.enabled=false",
    )
    notes = out[out.index("NOTES:") :]
    assert "system2" not in notes and "omnir1-system2-token" not in notes
    assert "svc/rel-omni-r1-mlflow" in notes


def test_the_helm_test_pod_is_locked_down_admitted_by_the_policies_and_checks_health(tmp_path):
    objects = render("default")
    pod = objects["Pod", "rel-omni-r1-test-health"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = spec["containers"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "limits" in container["resources"]
    # the project's CPU image, so nothing new is pulled
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert container["image"] == f"{values['image']['repository']}:{values['image']['tag']}"
    # both NetworkPolicies admit it
    for component in ("system2", "mlflow"):
        (rule,) = objects["NetworkPolicy", f"rel-omni-r1-{component}"]["spec"]["ingress"]
        (source,) = rule["from"]
        assert source["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    # it calls each Service by its name and port
    script, *targets = container["args"]
    urls = dict(t.split("=", 1) for t in targets)
    for component in ("system2", "mlflow"):
        port = objects["Service", f"rel-omni-r1-{component}"]["spec"]["ports"][0]["port"]
        assert (
            urls[component] == f"http://rel-omni-r1-{component}.ml.svc.cluster.local:{port}/health"
        )

    # the script itself: healthy servers pass, a down one fails the test, by name
    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        here = f"http://127.0.0.1:{server.server_port}/health"
        command = [sys.executable, *container["command"][1:], script]
        ok = subprocess.run(
            [*command, f"system2={here}", f"mlflow={here}"], capture_output=True, text=True
        )
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert ok.stdout.count("answered 200") == 2
    finally:
        server.shutdown()
        server.server_close()
    down = subprocess.run(
        [*command, f"system2={here}", f"mlflow={here}"], capture_output=True, text=True, timeout=60
    )
    assert down.returncode == 1 and "unhealthy: system2, mlflow" in down.stderr


def test_startup_probes_give_the_models_time_to_load_before_liveness():
    objects = render("default")
    budgets = {}
    for component in ("system2", "mlflow"):
        pod = objects["Deployment", f"rel-omni-r1-{component}"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        startup = container["startupProbe"]
        assert startup["httpGet"] == {"path": "/health", "port": "http"}
        budgets[component] = startup["periodSeconds"] * startup["failureThreshold"]
        for probe in ("readinessProbe", "livenessProbe"):  # kept, now started after startup
            assert container[probe]["httpGet"]["path"] == "/health"
            assert "initialDelaySeconds" not in container[probe]
    assert budgets["system2"] >= 20 * 60  # models from S3 onto the GPU
    assert budgets["mlflow"] >= 5 * 60
    longer = render("default", "--set", "system2.startupProbe.failureThreshold=360")
    (container,) = longer["Deployment", "rel-omni-r1-system2"]["spec"]["template"]["spec"][
        "containers"
    ]
    assert container["startupProbe"]["failureThreshold"] == 360


def test_the_data_pvc_and_the_tracking_secret_the_chart_declares():
    objects = render("default")
    pvc = objects["PersistentVolumeClaim", "omnir1-data"]
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "500Gi"
    assert "storageClassName" not in pvc["spec"]  # the cluster's default
    system2 = objects["Deployment", "rel-omni-r1-system2"]["spec"]["template"]["spec"]
    data = next(v for v in system2["volumes"] if v["name"] == "data")
    assert data["persistentVolumeClaim"] == {"claimName": "omnir1-data", "readOnly": True}
    sized = render("staging", "--set", "data.storageClass=efs")[
        "PersistentVolumeClaim", "omnir1-data"
    ]
    assert sized["spec"]["storageClassName"] == "efs"
    assert sized["spec"]["resources"]["requests"]["storage"] == "100Gi"
    assert ("PersistentVolumeClaim", "omnir1-data") not in render(
        "default", "--set", "data.create=false"
    )

    # the one Secret the chart writes: this release's MLflow address, nothing typed in values
    (secret,) = [objects[key] for key in objects if key[0] == "Secret"]
    assert secret["metadata"]["name"] == "omnir1-mlflow"
    assert "data" not in secret
    assert secret["stringData"] == {
        "MLFLOW_TRACKING_URI": "http://rel-omni-r1-mlflow.ml.svc.cluster.local:5000"
    }
    for setting in ("secrets.createMlflowTracking=false", "mlflow.enabled=false"):
        assert not [key for key in render("default", "--set", setting) if key[0] == "Secret"]


def test_the_chart_defaults_are_the_names_the_pipelines_use():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from pipelines import cluster

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["data"]["claimName"] == cluster.DATA_PVC
    assert values["secrets"]["s3"] == cluster.S3_SECRET
    assert values["secrets"]["mlflowTracking"] == cluster.MLFLOW_SECRET
    assert values["secrets"]["system2Token"] == cluster.SYSTEM2_TOKEN_SECRET
    key, label = cluster.TRAINER_LABEL
    assert values["networkPolicy"]["system2Clients"] == {key: label}
    assert values["networkPolicy"]["mlflowClients"] == {key: label}
    assert dict([cluster.GPU_POOL]).items() <= values["system2"]["nodeSelector"].items()
    objects = render("default")
    assert ("PersistentVolumeClaim", cluster.DATA_PVC) in objects
    assert ("Secret", cluster.MLFLOW_SECRET) in objects


KUBE_RESOURCES = {  # discovery: the kinds the chart renders
    "v1": [
        ("secrets", "Secret"),
        ("persistentvolumeclaims", "PersistentVolumeClaim"),
        ("pods", "Pod"),
        ("services", "Service"),
        ("configmaps", "ConfigMap"),
        ("serviceaccounts", "ServiceAccount"),
    ],
    "apps/v1": [("deployments", "Deployment")],
    "networking.k8s.io/v1": [("networkpolicies", "NetworkPolicy")],
    "rbac.authorization.k8s.io/v1": [("roles", "Role"), ("rolebindings", "RoleBinding")],
    "autoscaling/v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler")],
    "monitoring.coreos.com/v1": [("servicemonitors", "ServiceMonitor")],  # production's
}


class StandInKubeAPI(BaseHTTPRequestHandler):
    """What `helm install --dry-run=server` reads from a cluster: version, discovery, the
    namespace's Secrets and PVCs (from the server's `state`); every other object is absent."""

    def answer(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def resources(self, gv: str) -> dict:
        verbs = ["get", "list", "watch", "create", "update", "patch", "delete"]
        listed = [
            {"name": n, "singularName": "", "namespaced": True, "kind": k, "verbs": verbs}
            for n, k in KUBE_RESOURCES[gv]
        ]
        return {"kind": "APIResourceList", "groupVersion": gv, "resources": listed}

    def do_GET(self):
        path, _, query = self.path.partition("?")
        groups = [gv for gv in KUBE_RESOURCES if "/" in gv]
        if path == "/version":
            return self.answer(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0"})
        if path == "/api":
            return self.answer(200, {"kind": "APIVersions", "versions": ["v1"]})
        if path == "/apis":
            listed = [
                {
                    "name": gv.split("/")[0],
                    "versions": [{"groupVersion": gv, "version": gv.split("/")[1]}],
                    "preferredVersion": {"groupVersion": gv, "version": gv.split("/")[1]},
                }
                for gv in groups
            ]
            return self.answer(200, {"kind": "APIGroupList", "groups": listed})
        if path == "/api/v1" or path.removeprefix("/apis/") in groups:
            return self.answer(
                200, self.resources(path.removeprefix("/api/").removeprefix("/apis/"))
            )
        kinds = {"secrets": "Secret", "persistentvolumeclaims": "PersistentVolumeClaim"}
        parts = path.split("/")  # /api/v1/namespaces/ml/KIND[/NAME]
        if path.startswith("/api/v1/namespaces/ml/") and parts[5] in kinds:
            items = [] if "labelSelector" in query else self.server.state[parts[5]]
            if len(parts) == 6:
                return self.answer(200, {"kind": f"{kinds[parts[5]]}List", "items": items})
            for item in items:
                if item["metadata"]["name"] == parts[6]:
                    return self.answer(200, {"kind": kinds[parts[5]], **item})
        self.answer(404, {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404})

    def log_message(self, *args):
        pass


@pytest.fixture
def cluster_api(tmp_path):
    """A kubeconfig for the stand-in API, and the state it answers from."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandInKubeAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}
        ],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": "ml"}}],
        "current-context": "c",
    }
    (tmp_path / "kubeconfig").write_text(json.dumps(config))
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "kubeconfig")}
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(tmp_path / var.lower())
    server.state = {"secrets": [], "persistentvolumeclaims": []}
    yield env, server.state
    server.shutdown()
    server.server_close()


def metadata(name: str, release: str | None = None) -> dict:
    """An object's metadata in namespace ml, with Helm's ownership marks when a release made it."""
    if not release:
        return {"name": name, "namespace": "ml"}
    annotations = {"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": "ml"}
    labels = {"app.kubernetes.io/managed-by": "Helm"}
    return {"name": name, "namespace": "ml", "annotations": annotations, "labels": labels}


def secret(name: str, release: str | None = None, **data: str) -> dict:
    return {
        "metadata": metadata(name, release),
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def test_install_fails_naming_the_missing_secrets_and_passes_once_they_exist(cluster_api):
    env, state = cluster_api

    def install(*extra: str) -> subprocess.CompletedProcess:
        return run_helm(
            "install", "rel", str(CHART), "-n", "ml", "--dry-run=server",
            "--disable-openapi-validation", *extra, env=env,
        )  # fmt: skip

    out = install()
    assert out.returncode != 0
    assert "omni-r1 cannot be installed in namespace ml" in out.stderr
    assert (
        "Secret omnir1-s3 is missing (with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)" in out.stderr
    )
    assert "Secret omnir1-system2-token is missing (with OMNIR1_SYSTEM2_TOKEN)" in out.stderr
    assert "omnir1-mlflow" not in out.stderr  # the chart writes that one

    state["secrets"] += [
        secret("omnir1-s3", AWS_ACCESS_KEY_ID="id"),
        secret("omnir1-system2-token", OMNIR1_SYSTEM2_TOKEN="token"),
    ]
    out = install()
    assert "Secret omnir1-s3 has no (or an empty) key AWS_SECRET_ACCESS_KEY" in out.stderr
    assert "omnir1-system2-token" not in out.stderr

    state["secrets"][0] = secret("omnir1-s3", AWS_ACCESS_KEY_ID="id", AWS_SECRET_ACCESS_KEY="key")
    out = install()
    assert out.returncode == 0, out.stderr
    assert "NOTES:" in out.stdout and "kind: PersistentVolumeClaim" in out.stdout

    # what the chart does not write must be there: the backend URI, the data PVC, the tracking URI
    bring_your_own = ("-f", str(CHART / "values-production.yaml"), "--set", "data.create=false")
    bring_your_own += ("--set", "secrets.createMlflowTracking=false")
    out = install(*bring_your_own)
    assert "Secret omnir1-mlflow-backend is missing (with MLFLOW_BACKEND_STORE_URI)" in out.stderr
    assert "PersistentVolumeClaim omnir1-data is missing" in out.stderr
    assert "Secret omnir1-mlflow is missing (with MLFLOW_TRACKING_URI)" in out.stderr
    state["persistentvolumeclaims"].append({"metadata": metadata("omnir1-data")})
    state["secrets"] += [
        secret("omnir1-mlflow-backend", MLFLOW_BACKEND_STORE_URI="postgresql://db/mlflow"),
        secret("omnir1-mlflow", MLFLOW_TRACKING_URI="http://mlflow.example:5000"),
    ]
    out = install(*bring_your_own)
    assert out.returncode == 0, out.stderr

    # what the chart would write must not belong to someone else (a hand-made Secret, a PVC
    # kept by another release), each refusal saying how to keep it
    out = install()
    assert "Secret omnir1-mlflow exists and is not this release's" in out.stderr
    assert "secrets.createMlflowTracking=false" in out.stderr
    assert "PersistentVolumeClaim omnir1-data exists and is not this release's" in out.stderr
    state["secrets"][-1] = secret("omnir1-mlflow", "rel", MLFLOW_TRACKING_URI="http://x:5000")
    state["persistentvolumeclaims"][0] = {"metadata": metadata("omnir1-data", "rel")}
    assert install().returncode == 0  # this release's own, kept from an earlier install

    state["secrets"].clear()
    assert install("--set", "secrets.verify=false").returncode == 0


@pytest.mark.parametrize(
    ("readme", "image"),
    [
        ("README.md", "registry.example.com/omni-r1/omnir1:0.1.0"),
        ("helm/README.md", "ghcr.io/omni-r1-ops/omnir1:0.1.0-rc"),  # values-staging.yaml's
    ],
)
def test_the_readmes_helm_install_works_as_written(readme, image):
    """The deploy steps' `helm install` (continuation lines joined, shell variables given
    example values) renders with the real chart, the schema and the NOTES."""
    text = (ROOT / readme).read_text().replace("\\\n", " ")
    (line,) = re.findall(r"^helm install omnir1 .*$", text, re.M)  # not Airflow's chart
    variables = {"REG": "registry.example.com/omni-r1", "TAG": "0.1.0", "NS": "ml"}
    line = re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], line.split("#")[0])
    out = subprocess.run(
        [str(HELM), *shlex.split(line)[1:], "--dry-run=client"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "NOTES:" in out.stdout and "kind: ConfigMap" in out.stdout  # params.yaml passed
    assert f'image: "{image}"' in out.stdout


def test_airflow_namespace_reaches_mlflow_where_the_values_say():
    """The nightly DAG (Airflow's namespace) reads the registry's decision from MLflow: the
    MLflow policy admits that namespace's pods, by its name label, and nothing more."""
    policy = render("production")["NetworkPolicy", "rel-omni-r1-mlflow"]["spec"]
    (rule,) = policy["ingress"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "airflow"}}} in (
        rule["from"]
    )
    (default,) = render("default")["NetworkPolicy", "rel-omni-r1-mlflow"]["spec"]["ingress"]
    assert all("namespaceSelector" not in peer for peer in default["from"])


def test_system2_keeps_sam2_features_in_host_memory_within_its_limit():
    for env in ("default", "staging"):
        pod = render(env)["Deployment", "rel-omni-r1-system2"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        (store,) = [e for e in container["env"] if e["name"] == "OMNIR1_SAM2_FEATURE_CACHE_MB"]
        limit_gib = int(container["resources"]["limits"]["memory"].removesuffix("Gi"))
        assert 0 < int(store["value"]) <= limit_gib * 1024 / 4, env  # a quarter at most
