"""Running the pipeline on a cluster: Kubeflow pipeline parameters rendered back into
params.yaml, the stage steps the Kubeflow components call, and the PyTorchJob client.

Nothing here imports kfp or kubernetes at module level: the Airflow image reads it too."""
