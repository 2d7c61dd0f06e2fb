"""Kubeflow pipelines of the stages of dvc.yaml (`omnir1 pipeline compile | run | submit`)."""
