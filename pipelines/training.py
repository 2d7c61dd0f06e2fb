"""The training pipeline: data -> validate -> preprocess (fan-out) -> models -> warm start ->
train (GPU pool; one pod, or a PyTorchJob over several nodes) -> evaluate (fan-out) -> probe ->
register -> report. The same stages as dvc.yaml, one component each (components/stages.py).

Parameters: the cluster settings below, then every leaf of params.yaml with the same default
(`train__learning_rate`, ...; omnir1.kube.params).
"""

from __future__ import annotations

from components import stages
from components.pytorchjob import train_pytorchjob
from kfp import dsl

from pipelines import cluster, graph

SETTINGS = {
    "device": (str, "cuda"),  # torch device of the GPU tasks (`pipeline run --local`: cpu)
    "parts": (int, 4),  # fan-out of preprocessing and evaluation over the videos
    "train_nodes": (int, 1),  # > 1: GRPO as a PyTorchJob of this many worker pods
    "checkpoint_root": (str, f"{cluster.DATA_MOUNT}/checkpoints"),  # "": inside the task only
    # GRPO's rewards from the chart's System-2 Service (http://RELEASE-omni-r1-system2:8080)
    # instead of a System 2 on every trainer GPU; "": in the trainer
    "system2_url": (str, ""),
}


def training(settings: dict, values: dict, render) -> None:
    params = cluster.pure(render(**values)).outputs["params"]
    datasets, shards, parts = graph.prepare_data(settings, params)
    base = stages.base_models(params=params)
    base = cluster.networked(cluster.with_mlflow(cluster.with_s3(base))).outputs["models"]
    warm = stages.warm_start(params=params, datasets=datasets, models=base)
    warm = cluster.pure(cluster.on_gpu_pool(warm)).outputs["warm"]

    inputs = dict(params=params, datasets=datasets, shards=shards, models=warm)
    # GPUs of each training pod, one process each: params.yaml's train.gpus_per_node
    gpus = values["train__gpus_per_node"]
    # Each branch carries the stages after training (kfp.local cannot join branches: dsl.OneOf)
    with dsl.If(settings["train_nodes"] > 1, "multi-node"):
        job = train_pytorchjob(
            **inputs,
            nodes=settings["train_nodes"],
            gpus_per_node=gpus,
            run_name=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            workdir_root=settings["checkpoint_root"],
            system2_url=settings["system2_url"],
        )
        cluster.with_data(cluster.on_cpu(job, cpu="1", memory="2Gi"))
        job.set_env_variable("OMNIR1_TRAINER_IMAGE", stages.GPU_IMAGE)
        job.set_caching_options(False)
        _after_training(settings, params, datasets, shards, parts, warm, job)
    with dsl.Else("one-node"):
        one = stages.train(
            **inputs,
            device=settings["device"],
            checkpoint_root=settings["checkpoint_root"],
            gpus_per_node=gpus,
            system2_url=settings["system2_url"],
            system2_root=cluster.DATA_MOUNT,  # the PVC the chart's service serves from
        )
        cluster.with_mlflow(cluster.with_data(cluster.on_gpu_pool(one, gpus)))
        cluster.with_system2_token(one)
        # a retry, or a resubmitted run of the same inputs, resumes from its last checkpoint
        one.set_retry(num_retries=cluster.retries(2))
        one.set_caching_options(False)
        _after_training(settings, params, datasets, shards, parts, warm, one)


def _after_training(settings, params, datasets, shards, parts, warm, trainer) -> None:
    """evaluate (trained vs the model it started from) -> probe -> register -> report."""
    trained = trainer.outputs["model"]
    evaluation, answers = graph.evaluate(
        settings, params, datasets, shards, parts, untrained=warm, trained=trained
    )
    decision = stages.register(
        params=params,
        model=trained,
        evaluation=evaluation,
        answers=answers,
        run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        run=trainer.outputs["run"],  # the version joins the training's MLflow run
    )
    decision = cluster.networked(cluster.with_mlflow(cluster.with_s3(decision)))
    report = stages.report(
        evaluation=evaluation,
        answers=answers,
        run=trainer.outputs["run"],
        decision=decision.outputs["decision"],
    )
    cluster.networked(cluster.with_mlflow(report))  # the report joins the version's run


def build(params_file="params.yaml", local: bool = False):
    """The pipeline, its parameters defaulted from `params_file`."""
    return graph.build_pipeline(
        "omnir1-training",
        "Omni-R1 GRPO training: data, preprocessing, training, evaluation, probes, registry.",
        training,
        SETTINGS,
        params_file,
        local,
    )
