# syntax=docker/dockerfile:1.7
# Airflow 3 with the cncf-kubernetes provider and this project's DAGs (requirements/
# airflow.lock: Airflow needs kubernetes>=36, which kfp forbids, hence its own image).
#   docker build -f docker/airflow.Dockerfile -t REGISTRY/omnir1-airflow:TAG \
#     --build-arg GIT_REVISION=$(git rev-parse HEAD) .
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/airflow-venv && /opt/airflow-venv/bin/pip install pip==26.2.1
COPY requirements/airflow.lock /tmp/airflow.lock
RUN /opt/airflow-venv/bin/pip install -r /tmp/airflow.lock

FROM ${PYTHON_IMAGE}
RUN useradd --uid 50000 --user-group --create-home --shell /usr/sbin/nologin airflow
# the dependencies: one large layer that a change to the DAGs or the code leaves as it is
COPY --from=build /opt/airflow-venv /opt/airflow-venv
# the code, small layers on top; root-owned: not writable by the user that runs it
COPY dags /opt/airflow/dags
# the DAGs' helpers: omnir1.orchestration needs only the standard library and PyYAML
COPY src/omnir1 /opt/airflow/lib/omnir1
# last, so that a new commit changes only the image's metadata
ARG GIT_REVISION=
LABEL org.opencontainers.image.revision="$GIT_REVISION"
ENV PATH=/opt/airflow-venv/bin:$PATH AIRFLOW_HOME=/opt/airflow PYTHONUNBUFFERED=1 \
    PYTHONPATH=/opt/airflow/lib OMNIR1_GIT_REVISION="$GIT_REVISION" \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/dags AIRFLOW__CORE__LOAD_EXAMPLES=False
WORKDIR /opt/airflow
USER 50000:50000
ENTRYPOINT ["airflow"]
CMD ["--help"]
