# syntax=docker/dockerfile:1.7
# The CPU image of the Kubeflow components and the MLflow server: the omnir1 CLI and its locked
# dependencies. Build from the repository root:
#   docker build -f docker/component.Dockerfile -t REGISTRY/omnir1:TAG .
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv && /opt/venv/bin/pip install pip==26.2.1
COPY requirements/main.lock /tmp/main.lock
RUN /opt/venv/bin/pip install -r /tmp/main.lock
# sam2's setup.py would pull another torch in an isolated build; no compiled ops on CPU
RUN SAM2_BUILD_CUDA=0 /opt/venv/bin/pip install --no-build-isolation --no-deps sam2==1.1.0
COPY pyproject.toml README.md /src/
COPY src /src/src
RUN /opt/venv/bin/pip install --no-deps /src

FROM ${PYTHON_IMAGE}
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin omnir1
COPY --from=build /opt/venv /opt/venv
COPY params.yaml dvc.yaml /app/
COPY configs /app/configs
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 HOME=/home/omnir1
WORKDIR /app
USER 10001:10001
ENTRYPOINT ["omnir1"]
CMD ["--help"]
