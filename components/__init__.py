"""Kubeflow components: thin adapters over omnir1.kube.steps."""
