# syntax=docker/dockerfile:1.7
# The GPU image of GRPO training and the System-2 service: the locked torch (a CUDA 13 build with
# its nvidia-* runtime wheels, requirements/main.lock), DeepSpeed, flash-attention and SAM2 with
# its CUDA extension, compiled in a CUDA devel stage and copied into a runtime image.
#   docker build -f docker/trainer-gpu.Dockerfile -t REGISTRY/omnir1-gpu:TAG .
ARG CUDA_DEVEL_IMAGE=nvidia/cuda:13.0.1-cudnn-devel-ubuntu22.04
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu22.04

FROM ${CUDA_DEVEL_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv python3.11-dev build-essential git \
    && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/venv && /opt/venv/bin/pip install pip==26.2.1
COPY requirements/main.lock requirements/gpu.lock /tmp/
RUN /opt/venv/bin/pip install -r /tmp/main.lock
# the CUDA ops are compiled against the locked torch, not an isolated build's
ENV TORCH_CUDA_ARCH_LIST="8.0;8.6;9.0" MAX_JOBS=8
RUN /opt/venv/bin/pip install --no-build-isolation --no-deps -r /tmp/gpu.lock
RUN SAM2_BUILD_CUDA=1 SAM2_BUILD_ALLOW_ERRORS=0 \
    /opt/venv/bin/pip install --no-build-isolation --no-deps sam2==1.1.0
COPY pyproject.toml README.md /src/
COPY src /src/src
RUN /opt/venv/bin/pip install --no-deps /src

FROM ${CUDA_RUNTIME_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends python3.11 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin omnir1
COPY --from=build /opt/venv /opt/venv
COPY params.yaml dvc.yaml /app/
COPY configs /app/configs
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 HOME=/home/omnir1 \
    NCCL_DEBUG=WARN OMP_NUM_THREADS=8
WORKDIR /app
USER 10001:10001
ENTRYPOINT ["omnir1"]
CMD ["--help"]
