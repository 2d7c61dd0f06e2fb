# syntax=docker/dockerfile:1.7
# Airflow 3 with the cncf-kubernetes provider and this project's DAGs (requirements/
# airflow.lock: Airflow needs kubernetes>=36, which kfp forbids, hence its own image).
#   docker build -f docker/airflow.Dockerfile -t REGISTRY/omnir1-airflow:TAG .
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/airflow-venv && /opt/airflow-venv/bin/pip install pip==26.2.1
COPY requirements/airflow.lock /tmp/airflow.lock
RUN /opt/airflow-venv/bin/pip install -r /tmp/airflow.lock

FROM ${PYTHON_IMAGE}
RUN useradd --uid 50000 --user-group --create-home --shell /usr/sbin/nologin airflow
COPY --from=build /opt/airflow-venv /opt/airflow-venv
# root-owned: the code Airflow runs is not writable by the user that runs it
COPY dags /opt/airflow/dags
# the DAGs' helpers: omnir1.orchestration needs only the standard library and PyYAML
COPY src/omnir1 /opt/airflow/lib/omnir1
ENV PATH=/opt/airflow-venv/bin:$PATH AIRFLOW_HOME=/opt/airflow PYTHONUNBUFFERED=1 \
    PYTHONPATH=/opt/airflow/lib \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/dags AIRFLOW__CORE__LOAD_EXAMPLES=False
WORKDIR /opt/airflow
USER 50000:50000
ENTRYPOINT ["airflow"]
CMD ["--help"]
