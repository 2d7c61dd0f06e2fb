"""The multi-node training component: it runs on a small CPU pod, creates a PyTorchJob of
`nodes` GPU pods with the kubernetes client (omnir1.kube.pytorchjob), follows and waits on it,
deletes it, and outputs the trained model like the one-pod `train` component."""

from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.stages import cpu_component


@cpu_component
def train_pytorchjob(
    params: str,
    datasets: Input[Dataset],
    shards: Input[Dataset],
    models: Input[Model],
    nodes: int,
    gpus_per_node: int,
    workdir_root: str,
    model: Output[Model],
    run: Output[Artifact],
    summary: Output[Metrics],
    system2_url: str = "",
):
    from omnir1.kube import steps

    with steps.params_file(params) as params_file:
        figures = steps.train_multi_node(
            params_file,
            datasets.path,
            shards.path,
            models.path,
            run.path,
            model.path,
            nodes=nodes,
            gpus_per_node=gpus_per_node,
            workdir_root=workdir_root,
            system2_url=system2_url,
        )
    steps.log_metrics(summary, figures)
