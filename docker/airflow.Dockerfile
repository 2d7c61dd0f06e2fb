# syntax=docker/dockerfile:1.7
# Airflow 3 for the official Helm chart (apache-airflow/airflow): the official image, whose
# entrypoint runs the `airflow ...` and `bash -c ...` args the chart gives each component (so no
# ENTRYPOINT or CMD here), as its user airflow (uid 50000), with the pins of
# requirements/airflow.lock, the DAGs, omnir1's orchestration code and the settings the DAGs
# read by default (OMNIR1_PROJECT=/opt/omnir1: params.yaml, and the pipeline packages compiled
# for the images the pipeline steps run). Build from the repository root:
#   docker build -f docker/airflow.Dockerfile -t REGISTRY/omnir1-airflow:TAG \
#     --build-arg OMNIR1_IMAGE=REGISTRY/omnir1:TAG --build-arg OMNIR1_GPU_IMAGE=REGISTRY/omnir1-gpu:TAG \
#     --build-arg GIT_REVISION=$(git rev-parse HEAD) .
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11

# The pipeline packages (`omnir1 pipeline compile`), with main.lock's kfp: only their YAML
# leaves this stage.
FROM ${PYTHON_IMAGE} AS pipelines
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv && /opt/venv/bin/pip install pip==26.2.1
COPY requirements/main.lock /tmp/main.lock
RUN /opt/venv/bin/pip install -c /tmp/main.lock kfp==2.17.3 kfp-kubernetes==2.17.3 \
        pydantic==2.14.4 PyYAML==6.0.4
COPY params.yaml /project/params.yaml
COPY src /project/src
COPY components /project/components
COPY pipelines /project/pipelines
ARG OMNIR1_IMAGE
ARG OMNIR1_GPU_IMAGE
RUN { test -n "$OMNIR1_IMAGE" && test -n "$OMNIR1_GPU_IMAGE"; } \
        || { echo "pass --build-arg OMNIR1_IMAGE=... and OMNIR1_GPU_IMAGE=..." >&2; exit 1; } \
    && cd /project && PYTHONPATH=/project/src /opt/venv/bin/python -m omnir1.cli \
        pipeline compile --project /project --out /compiled

FROM ${AIRFLOW_IMAGE}
# the DAGs folder of the chart's default (no git-sync, no DAG volume): not writable by airflow
USER root
RUN chown root:root /opt/airflow/dags && chmod 0755 /opt/airflow/dags
USER airflow
# the locked pins, installed into the official image's environment as its docs do (as the user
# airflow, the same apache-airflow version): one layer, below the code
COPY requirements/airflow.lock /tmp/airflow.lock
RUN pip install --no-cache-dir -r /tmp/airflow.lock
# the code and settings, small layers on top; root-owned: not writable by the user that runs them
COPY dags /opt/airflow/dags
# the DAGs' library: omnir1.orchestration and omnir1.airflow_tasks need only the locked pins
COPY src/omnir1 /opt/omnir1/src/omnir1
COPY params.yaml /opt/omnir1/params.yaml
COPY --from=pipelines /compiled /opt/omnir1/pipelines/compiled
# last, so that a new commit changes only the image's metadata
ARG GIT_REVISION=
LABEL org.opencontainers.image.revision="$GIT_REVISION"
ENV OMNIR1_PROJECT=/opt/omnir1 PYTHONPATH=/opt/omnir1/src OMNIR1_GIT_REVISION="$GIT_REVISION" \
    AIRFLOW__CORE__LOAD_EXAMPLES=False
