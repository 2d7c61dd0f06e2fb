# syntax=docker/dockerfile:1.7
# The CPU image of the Kubeflow components and the MLflow server: the omnir1 CLI and its locked
# dependencies, on the CPU build of the locked torch. Build from the repository root:
#   docker build -f docker/component.Dockerfile -t REGISTRY/omnir1:TAG \
#     --build-arg TORCH_INDEX_URL=<PyTorch's CPU wheel index> \
#     --build-arg GIT_REVISION=$(git rev-parse HEAD) .
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# The locked dependencies only (no project code, so a code change leaves this stage cached).
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv && /opt/venv/bin/pip install pip==26.2.1
COPY requirements/main.lock /tmp/main.lock
COPY docker/cpu-lock.sh /tmp/cpu-lock.sh
RUN sh /tmp/cpu-lock.sh /tmp/main.lock /tmp/cpu
# No step here touches a GPU: torch and torchvision are their +cpu builds at the locked versions,
# and the nvidia-*, cuda-* and triton wheels of the CUDA build (about 4 GB) stay out. Only these
# two come from PyTorch's CPU index (the builder passes it; no index host is written here), the
# rest from the default index, so no other locked package can be taken from the torch index.
ARG TORCH_INDEX_URL
RUN test -n "$TORCH_INDEX_URL" \
        || { echo "pass --build-arg TORCH_INDEX_URL=<PyTorch's CPU wheel index>" >&2; exit 1; } \
    && /opt/venv/bin/pip install --no-deps --index-url "$TORCH_INDEX_URL" -r /tmp/cpu/cpu-torch.txt
RUN /opt/venv/bin/pip install -r /tmp/cpu/cpu-deps.txt && /opt/venv/bin/pip check
# sam2's setup.py would pull another torch in an isolated build; no compiled ops on CPU
RUN SAM2_BUILD_CUDA=0 /opt/venv/bin/pip install --no-build-isolation --no-deps sam2==1.1.0

# The project as a wheel, built with the locked setuptools; the final stage installs it on top.
FROM build AS package
COPY pyproject.toml README.md /src/
COPY src /src/src
RUN /opt/venv/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels /src

FROM ${PYTHON_IMAGE}
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin omnir1
# the dependencies: one large layer that a code change leaves as it is
COPY --from=build /opt/venv /opt/venv
# the project: a small layer on top (the wheel is mounted, not copied, so it is not shipped)
RUN --mount=type=bind,from=package,source=/wheels,target=/wheels \
    /opt/venv/bin/pip install --no-deps --no-index --no-cache-dir --disable-pip-version-check \
        /wheels/omnir1-*.whl
COPY params.yaml dvc.yaml /app/
COPY configs /app/configs
# last, so that a new commit changes only the image's metadata; `omnir1 register` tags the
# model versions it creates with OMNIR1_GIT_REVISION
ARG GIT_REVISION=
LABEL org.opencontainers.image.revision="$GIT_REVISION"
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 HOME=/home/omnir1 \
    OMNIR1_GIT_REVISION="$GIT_REVISION"
WORKDIR /app
USER 10001:10001
ENTRYPOINT ["omnir1"]
CMD ["--help"]
