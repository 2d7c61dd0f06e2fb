"""The multi-node training component: it runs on a small CPU pod, creates a PyTorchJob of
`nodes` GPU pods with the kubernetes client (omnir1.kube.pytorchjob), follows and waits on it,
deletes it, and outputs the trained model like the one-pod `train` component."""

from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.stages import cpu_component


@cpu_component
def train_pytorchjob(
    params: Input[Artifact],
    datasets: Input[Dataset],
    shards: Input[Dataset],
    models: Input[Model],
    nodes: int,
    gpus_per_node: int,
    run_name: str,
    workdir_root: str,
    model: Output[Model],
    run: Output[Artifact],
    summary: Output[Metrics],
    system2_url: str = "",
):
    from omnir1.kube import steps

    figures = steps.train_multi_node(
        params.path,
        datasets.path,
        shards.path,
        models.path,
        run.path,
        model.path,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        run_name=run_name,
        workdir_root=workdir_root,
        system2_url=system2_url,
    )
    steps.log_metrics(summary, figures)
