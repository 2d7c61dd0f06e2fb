"""Where the pipelines' tasks run on the cluster, with the names the Helm chart creates
(helm/omni-r1/values.yaml): the GPU node pool, the data PVC, the Secrets; how long a task may
run, whether Kubeflow may serve it from its cache, how it is retried. kfp-kubernetes writes
them into the compiled package; kfp.local ignores the placement and the deadlines."""

from __future__ import annotations

import os

from kfp import kubernetes

GPU_POOL = ("omnir1.io/pool", "gpu")  # node label of the GPU node pool
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
DATA_PVC, DATA_MOUNT = "omnir1-data", "/mnt/data"  # data sets, checkpoints, download caches
S3_SECRET = "omnir1-s3"  # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
MLFLOW_SECRET = "omnir1-mlflow"  # MLFLOW_TRACKING_URI (and MLFLOW_TRACKING_TOKEN if any)
SYSTEM2_TOKEN_SECRET = (
    "omnir1-system2-token"  # OMNIR1_SYSTEM2_TOKEN: the chart's secrets.system2Token
)
TRAINER_LABEL = ("omnir1.io/role", "trainer")  # what the NetworkPolicies let reach System 2
SHM_SIZE = "16Gi"  # torch DataLoader workers and NCCL share memory through /dev/shm
POD_UID_ENV = "OMNIR1_POD_UID"  # omnir1.kube.steps.POD_UID_ENV
MINUTE, HOUR, DAY = 60, 3600, 24 * 3600


def step(task, name: str, timeout_s: int):
    """The task as the Kubeflow UI shows it, its pod stopped after `timeout_s` (each try's
    activeDeadlineSeconds: a hung download or a deadlocked rank fails instead of holding its
    node)."""
    task.set_display_name(name)
    kubernetes.set_timeout(task, int(timeout_s))
    return task


def on_gpu_pool(task, gpus: int = 1, cpu: str = "8", memory: str = "64Gi"):
    """A task that needs `gpus` GPUs of the GPU pool, with shared memory."""
    task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(gpus)
    task.set_cpu_request(cpu).set_memory_request(memory).set_memory_limit(memory)
    kubernetes.add_node_selector(task, *GPU_POOL)
    kubernetes.add_toleration(task, **GPU_TOLERATION)
    kubernetes.empty_dir_mount(task, "dshm", "/dev/shm", medium="Memory", size_limit=SHM_SIZE)
    return task


def on_cpu(task, cpu: str = "2", memory: str = "8Gi"):
    task.set_cpu_request(cpu).set_memory_request(memory).set_memory_limit(memory)
    return task


def with_data(task):
    """The data PVC at /mnt/data; download caches live there (kept across runs)."""
    kubernetes.mount_pvc(task, DATA_PVC, DATA_MOUNT)
    task.set_env_variable("OMNIR1_CACHE", f"{DATA_MOUNT}/cache")
    return task


def with_s3(task):
    kubernetes.use_secret_as_env(
        task,
        S3_SECRET,
        {
            "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
        },
    )
    return task


def with_mlflow(task):
    kubernetes.use_secret_as_env(
        task, MLFLOW_SECRET, {"MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI"}
    )
    kubernetes.add_pod_label(task, *TRAINER_LABEL)
    return task


def with_system2_token(task):
    """The System-2 service's bearer token, for a trainer that calls the chart's service (the
    Secret is optional: a run that keeps System 2 in process never needs it)."""
    kubernetes.use_secret_as_env(
        task,
        SYSTEM2_TOKEN_SECRET,
        {"OMNIR1_SYSTEM2_TOKEN": "OMNIR1_SYSTEM2_TOKEN"},
        optional=True,
    )
    return task


def retries(default: int) -> int:
    """OMNIR1_PIPELINE_RETRIES when set at compile time (`pipeline run --local` sets 0: on
    one machine a failure is not a flaky network, and kfp.local honours retries)."""
    return int(os.environ.get("OMNIR1_PIPELINE_RETRIES", default))


def with_pod_uid(task):
    """The pod's uid in OMNIR1_POD_UID (what names the PyTorchJob of each try)."""
    kubernetes.use_field_path_as_env(task, POD_UID_ENV, "metadata.uid")
    return task


def networked(task):
    """A step that talks to S3 or MLflow: retried with back-off."""
    task.set_retry(num_retries=retries(3), backoff_duration="30s", backoff_factor=2.0)
    return task


def pure(task):
    """A deterministic function of its inputs, which include the version or content of what
    it fetches (resolve-params' keys): Kubeflow may reuse an earlier result."""
    task.set_caching_options(True)
    return task


def uncached(task):
    """A step whose result is not a function of its inputs alone (it reads a source that may
    have changed, or records something, as register does): it runs every time."""
    task.set_caching_options(False)
    return task
