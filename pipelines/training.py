"""The training pipeline: resolve params -> data -> validate -> preprocess (fan-out) -> base
models -> warm start -> train (GPU pool; one pod, or a PyTorchJob over several nodes) ->
evaluate (fan-out) -> probe -> register -> report. The same stages as dvc.yaml, one component
each (components/stages.py).

The run form: the cluster settings and a few params as typed parameters, then `overrides`
for any other params key; every params value defaults to the image's params.yaml at run time.
"""

from components import stages
from components.pytorchjob import train_pytorchjob
from kfp import dsl

from omnir1.kube.steps import TRAIN_TIMEOUT_S
from pipelines import cluster, graph
from pipelines.cluster import DAY, HOUR


def build(local: bool = False):
    """The pipeline. `local` (kfp.local): the one-pod trainer only. kfp.local 2.17 joins
    dsl.OneOf branches for parameters but not for artifacts ("Expected 1 artifact in
    ArtifactSelectorSpec"), and a PyTorchJob needs a cluster anyway."""

    @dsl.pipeline(
        name="omnir1-training",
        description="Omni-R1 GRPO training: data, preprocessing, training, evaluation, probes, "
        "registry.",
    )
    def training(
        data_source: str = "",
        data_version: str = "",
        recipe: str = "",
        base_models: str = "",
        gpus_per_node: int = 0,
        train_nodes: int = 1,
        parts: int = 4,
        device: str = "cuda",
        checkpoint_root: str = f"{cluster.DATA_MOUNT}/checkpoints",
        system2_url: str = "",
        overrides: str = "{}",
    ):
        """Train, evaluate and register a model.

        Args:
            data_source: Where every data set comes from (params data.source): synth, an
                s3://bucket/prefix or a folder on the data PVC; empty: params.yaml's.
            data_version: A name for the data's version (a tag, a DVC revision) that keys the
                fetched data instead of the source's listing; empty: the listing (S3 ETags,
                file sizes and times) or the synthetic data's params.
            recipe: A recipe of the image's configs/params (release, refavs) merged over
                params.yaml; empty: none.
            base_models: The models GRPO starts from (params models.dir): a folder, an s3://
                prefix or models:/NAME@ALIAS; empty: params.yaml's.
            gpus_per_node: GPUs of each training pod (params train.gpus_per_node), one process
                each; 0: params.yaml's.
            train_nodes: Training pods; more than 1 runs GRPO as a PyTorchJob.
            parts: Parallel parts of preprocessing and evaluation.
            device: Torch device of the GPU tasks.
            checkpoint_root: Where training checkpoints outlive a task (the data PVC), named
                after the run's inputs; empty: inside the task only.
            system2_url: The chart's System-2 Service (http://RELEASE-omni-r1-system2:8080) for
                GRPO's rewards; empty: System 2 in the trainer.
            overrides: Any other params keys, as a JSON object of dotted keys, e.g.
                {"train.max_steps": 500, "data.sources.revos": "s3://datasets/revos/v3"}.
        """
        run = graph.resolve(
            "training",
            recipe=recipe,
            overrides=overrides,
            data_source=data_source,
            data_version=data_version,
            gpus_per_node=gpus_per_node,
            base_models=base_models,
        )
        datasets, shards = graph.prepare_data(run, parts)
        warm = stages.warm_start(
            params=run["warm_start"], datasets=datasets, models=graph.base_models(run)
        )
        cluster.step(cluster.pure(cluster.on_gpu_pool(warm)), "warm start", DAY)
        warm = warm.outputs["warm"]

        inputs = dict(
            params=run["train"],
            datasets=datasets,
            shards=shards,
            models=warm,
            gpus_per_node=run["gpus_per_node"],
            system2_url=system2_url,
        )
        if local:
            one = _one_pod(inputs, device, checkpoint_root)
            trained, train_run = one.outputs["model"], one.outputs["run"]
        else:
            with dsl.If(train_nodes > 1, "multi-node") as multi:
                job = _pytorchjob(inputs, train_nodes, checkpoint_root)
            with dsl.Else("one-node"):
                one = _one_pod(inputs, device, checkpoint_root)
            # the If/Else's own group: kfp takes no name for it (the UI would show
            # "condition-branches-1"), but reads its display_name like any group's
            multi.parent_task_group.display_name = "train"
            trained = dsl.OneOf(job.outputs["model"], one.outputs["model"])
            train_run = dsl.OneOf(job.outputs["run"], one.outputs["run"])

        evaluation, answers = graph.evaluate(
            run, datasets, shards, parts, device, untrained=warm, trained=trained
        )
        decision = stages.register(
            params=run["register"],
            model=trained,
            evaluation=evaluation,
            answers=answers,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            run=train_run,  # the version joins the training's MLflow run
        )
        decision = cluster.networked(cluster.with_mlflow(cluster.with_s3(decision)))
        cluster.step(cluster.uncached(decision), "register", HOUR)
        report = stages.report(
            evaluation=evaluation,
            answers=answers,
            run=train_run,
            decision=decision.outputs["decision"],
        )
        report = cluster.networked(cluster.with_mlflow(report))  # into the version's run
        cluster.step(cluster.uncached(report), "report", HOUR)

    return training


def _one_pod(inputs: dict, device, checkpoint_root):
    one = stages.train(
        **inputs,
        device=device,
        checkpoint_root=checkpoint_root,
        system2_root=cluster.DATA_MOUNT,  # the PVC the chart's service serves from
    )
    cluster.with_mlflow(cluster.with_data(cluster.on_gpu_pool(one, inputs["gpus_per_node"])))
    cluster.with_system2_token(one)
    # a retry, or a resubmitted run of the same inputs, resumes from its last checkpoint
    one.set_retry(num_retries=cluster.retries(2))
    return cluster.step(cluster.pure(one), "train", TRAIN_TIMEOUT_S)


def _pytorchjob(inputs: dict, nodes, checkpoint_root):
    job = train_pytorchjob(**inputs, nodes=nodes, workdir_root=checkpoint_root)
    cluster.with_pod_uid(cluster.with_data(cluster.on_cpu(job, cpu="1", memory="2Gi")))
    job.set_env_variable("OMNIR1_TRAINER_IMAGE", stages.GPU_IMAGE)
    # the job's own wait gives up after TRAIN_TIMEOUT_S; the pod outlives it to delete the job
    return cluster.step(cluster.pure(job), "train (PyTorchJob)", TRAIN_TIMEOUT_S + HOUR)
