"""Multi-node GRPO as a Kubeflow Training Operator PyTorchJob (kubeflow.org/v1).

`job_manifest` builds the job: one Master and N-1 Worker pods on the GPU pool, each running
`accelerate launch` with the DeepSpeed config over all nodes (the operator sets MASTER_ADDR,
MASTER_PORT, WORLD_SIZE = nodes and RANK = node rank in every pod), NCCL settings, /dev/shm
in memory, the data PVC holding the inputs and the run folder. `PyTorchJobRunner` creates it
with the kubernetes client, follows the master's log, waits for Succeeded or Failed (naming the
pod that failed, its exit code and last log lines), and deletes the job in every case.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from omnir1.errors import OmniR1Error

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1", "pytorchjobs", "PyTorchJob"
JOB_LABEL = "training.kubeflow.org/job-name"
CONTAINER = "pytorch"  # the operator finds the training container by this name
DATA_MOUNT = "/mnt/data"  # the data PVC in every worker, where the inputs are staged


class JobFailed(OmniR1Error):  # noqa: N818 (a state, as Kubernetes names it)
    exit_code = 1


@dataclass
class JobSpec:
    name: str
    namespace: str
    image: str
    train_args: Sequence[str]  # `omnir1 train` arguments (paths on the data PVC)
    nodes: int = 2
    gpus_per_node: int = 1
    accelerate_config: str = "configs/accelerate/zero3_offload.yaml"
    data_pvc: str = "omnir1-data"
    data_mount: str = DATA_MOUNT
    shm_size: str = "16Gi"
    cpu: str = "8"
    memory: str = "64Gi"
    node_selector: Mapping[str, str] = field(default_factory=lambda: {"omnir1.io/pool": "gpu"})
    tolerations: Sequence[Mapping[str, str]] = (
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    )
    secret_env: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # ENV: (secret, key)
    labels: Mapping[str, str] = field(default_factory=lambda: {"omnir1.io/role": "trainer"})
    nccl: Mapping[str, str] = field(
        default_factory=lambda: {
            "NCCL_DEBUG": "WARN",
            "NCCL_ASYNC_ERROR_HANDLING": "1",
            "TORCH_NCCL_BLOCKING_WAIT": "0",
            "NCCL_SOCKET_IFNAME": "eth0",
        }
    )
    ttl_seconds_after_finished: int = 3600


def job_name(run_name: str) -> str:
    """A valid Kubernetes name (DNS-1123, <= 63 characters) for the run's job."""
    import re

    cleaned = re.sub(r"[^a-z0-9-]+", "-", run_name.lower()).strip("-")
    return f"omnir1-grpo-{cleaned}"[:52].rstrip("-")  # room for the operator's pod suffixes


def launch_command(spec: JobSpec) -> list[str]:
    """`accelerate launch` over every node's GPUs; the operator's env gives the rendezvous."""
    launch = (
        f"accelerate launch --config_file {shlex.quote(spec.accelerate_config)} "
        f"--num_machines $WORLD_SIZE --machine_rank $RANK "
        f"--main_process_ip $MASTER_ADDR --main_process_port $MASTER_PORT "
        f"--num_processes $(( WORLD_SIZE * {int(spec.gpus_per_node)} )) "
        f"-m omnir1.cli train {' '.join(shlex.quote(str(a)) for a in spec.train_args)}"
    )
    return ["/bin/sh", "-c", f"exec {launch}"]


def _replica(spec: JobSpec, replicas: int) -> dict:
    env = [{"name": k, "value": v} for k, v in spec.nccl.items()]
    env += [
        {"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        for k, (secret, key) in spec.secret_env.items()
    ]
    gpus = str(int(spec.gpus_per_node))
    container = {
        "name": CONTAINER,
        "image": spec.image,
        "command": launch_command(spec),
        "env": env,
        "resources": {
            "requests": {"cpu": spec.cpu, "memory": spec.memory, "nvidia.com/gpu": gpus},
            "limits": {"memory": spec.memory, "nvidia.com/gpu": gpus},
        },
        "volumeMounts": [
            {"name": "data", "mountPath": spec.data_mount},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    return {
        "replicas": replicas,
        "restartPolicy": "OnFailure",
        "template": {
            "metadata": {"labels": dict(spec.labels)},
            "spec": {
                "automountServiceAccountToken": False,  # training never calls the API server
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": 10001,
                    "runAsGroup": 10001,
                    "fsGroup": 10001,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "nodeSelector": dict(spec.node_selector),
                "tolerations": [dict(t) for t in spec.tolerations],
                "containers": [container],
                "volumes": [
                    {"name": "data", "persistentVolumeClaim": {"claimName": spec.data_pvc}},
                    {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size}},
                ],
            },
        },
    }


def job_manifest(spec: JobSpec) -> dict:
    if spec.nodes < 1 or spec.gpus_per_node < 1:
        raise ValueError(
            f"nodes and gpus_per_node must be >= 1, got {spec.nodes}, {spec.gpus_per_node}"
        )
    replicas = {"Master": _replica(spec, 1)}
    if spec.nodes > 1:
        replicas["Worker"] = _replica(spec, spec.nodes - 1)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": dict(spec.labels)},
        "spec": {
            "runPolicy": {
                "cleanPodPolicy": "None",  # keep failed pods' logs until the job is deleted
                "backoffLimit": 0,  # GRPO resumes from checkpoints: the pipeline step retries
                "ttlSecondsAfterFinished": spec.ttl_seconds_after_finished,
            },
            "pytorchReplicaSpecs": replicas,
        },
    }


def job_state(job: Mapping) -> str | None:
    """'Succeeded', 'Failed' or None (still running) from the job's status conditions."""
    for condition in reversed((job.get("status") or {}).get("conditions") or []):
        if condition.get("status") == "True" and condition.get("type") in ("Succeeded", "Failed"):
            return condition["type"]
    return None


class PyTorchJobRunner:
    """Create, follow, wait on and delete one PyTorchJob through the kubernetes client."""

    def __init__(
        self,
        api_client,
        namespace: str,
        *,
        poll_s: float = 10.0,
        echo: Callable[[str], None] = print,
    ):
        from kubernetes import client

        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.poll_s = poll_s
        self.echo = echo
        self._printed: dict[str, int] = {}

    def create(self, manifest: Mapping) -> dict:
        return self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, manifest
        )

    def get(self, name: str) -> dict:
        return self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name
        )

    def delete(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, propagation_policy="Foreground"
            )
        except ApiException as exc:
            if exc.status != 404:  # already gone is fine
                raise

    def pods(self, name: str) -> list:
        return self.core.list_namespaced_pod(
            self.namespace, label_selector=f"{JOB_LABEL}={name}"
        ).items

    def log(self, pod: str, tail: int | None = None) -> str:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.core.read_namespaced_pod_log(
                pod, self.namespace, container=CONTAINER, tail_lines=tail
            )
        except ApiException:  # not started yet, or already gone
            return ""

    def follow(self, pod: str) -> None:
        """Echo the lines of `pod`'s log not shown yet."""
        lines = self.log(pod).splitlines()
        for line in lines[self._printed.get(pod, 0) :]:
            self.echo(f"[{pod}] {line}")
        self._printed[pod] = max(self._printed.get(pod, 0), len(lines))

    def failure(self, name: str, job: Mapping) -> str:
        """What failed: the job's condition and each failed pod's exit code and last lines."""
        conditions = (job.get("status") or {}).get("conditions") or []
        why = next((c.get("message", "") for c in conditions if c.get("type") == "Failed"), "")
        parts = [f"PyTorchJob {self.namespace}/{name} failed: {why}".rstrip(": ")]
        for pod in self.pods(name):
            for status in pod.status.container_statuses or []:
                term = status.state.terminated if status.state else None
                if term is not None and term.exit_code:
                    tail = self.log(pod.metadata.name, tail=20).rstrip()
                    parts.append(
                        f"pod {pod.metadata.name} exited with code {term.exit_code} "
                        f"({term.reason}); last lines:\n{tail}"
                    )
        return "\n".join(parts)

    def watch(self, name: str, seconds: float) -> dict | None:
        """The job's last state seen by a watch of up to `seconds` (None if nothing came);
        returns early when the job finishes."""
        from kubernetes import watch

        last = None
        stream = watch.Watch()
        for event in stream.stream(
            self.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            field_selector=f"metadata.name={name}",
            timeout_seconds=max(1, int(seconds)),
        ):
            if event.get("type") == "DELETED":
                raise JobFailed(f"PyTorchJob {self.namespace}/{name} was deleted while running")
            last = event["object"]
            if job_state(last):
                stream.stop()
        return last

    def wait(self, name: str, timeout_s: float) -> dict:
        """Watch until the job succeeds (returns it) or fails or times out (raises JobFailed),
        echoing the master's log as it grows."""
        deadline = time.monotonic() + timeout_s
        master = f"{name}-master-0"
        job = self.get(name)  # the state now: a watch only reports changes
        while True:
            self.follow(master)
            state = job_state(job)
            if state == "Succeeded":
                return job
            if state == "Failed":
                raise JobFailed(self.failure(name, job))
            left = deadline - time.monotonic()
            if left <= 0:
                raise JobFailed(
                    f"PyTorchJob {self.namespace}/{name} not done after {timeout_s:.0f} s"
                )
            job = self.watch(name, min(self.poll_s, left)) or job

    def run(self, manifest: Mapping, timeout_s: float) -> dict:
        """Create, wait, and always delete the job (its pods go with it)."""
        name = manifest["metadata"]["name"]
        self.create(manifest)
        try:
            return self.wait(name, timeout_s)
        finally:
            self.delete(name)
