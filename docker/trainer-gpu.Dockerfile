# syntax=docker/dockerfile:1.7
# The GPU image of GRPO training and the System-2 service: the locked torch (a CUDA 13 build with
# its nvidia-* runtime wheels, requirements/main.lock), DeepSpeed and SAM2 with its CUDA
# extension compiled in a CUDA devel stage, copied into a runtime image that keeps a C/C++
# compiler and Python's headers for the kernels built at first use. Attention is sdpa unless a
# prebuilt flash-attn wheel is passed (docker/README.md). From the repository root:
#   docker build -f docker/trainer-gpu.Dockerfile -t REGISTRY/omnir1-gpu:TAG \
#     --build-arg GIT_REVISION=$(git rev-parse HEAD) .
ARG CUDA_DEVEL_IMAGE=nvidia/cuda:13.0.1-cudnn-devel-ubuntu22.04
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu22.04

# Optional prebuilt flash-attn wheel: empty unless `--build-context flash-attn=DIR` replaces it.
FROM scratch AS flash-attn

# The locked dependencies only (no project code, so a code change leaves this stage cached).
FROM ${CUDA_DEVEL_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv python3.11-dev build-essential git \
    && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/venv && /opt/venv/bin/pip install pip==26.2.1
COPY requirements/main.lock requirements/gpu.lock /tmp/
RUN /opt/venv/bin/pip install -r /tmp/main.lock
# SAM2's CUDA op is compiled against the locked torch, not an isolated build's
ENV TORCH_CUDA_ARCH_LIST="8.0;8.6;9.0" MAX_JOBS=8
RUN SAM2_BUILD_CUDA=1 SAM2_BUILD_ALLOW_ERRORS=0 \
    /opt/venv/bin/pip install --no-build-isolation --no-deps sam2==1.1.0
# flash-attn is never compiled here (hours, and CUDA 13 builds fail upstream): only a prebuilt
# wheel of the gpu.lock version, from the flash-attn build context, is installed and imported
# against the locked torch; without one the image has none and the thinkers run sdpa.
RUN --mount=type=bind,from=flash-attn,target=/flash-attn \
    if ls /flash-attn/flash_attn-*.whl >/dev/null 2>&1; then \
        /opt/venv/bin/pip install --no-deps --no-index --only-binary=:all: \
            --find-links /flash-attn -r /tmp/gpu.lock \
        && /opt/venv/bin/python -c "import torch, flash_attn_2_cuda"; \
    fi

# The project as a wheel, built with the locked setuptools; the final stage installs it on top.
FROM build AS package
COPY pyproject.toml README.md /src/
COPY src /src/src
RUN /opt/venv/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels /src

FROM ${CUDA_RUNTIME_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
# A C/C++ compiler and Python's headers stay at run time: Triton compiles its driver and kernel
# launchers in C at first use (TRL's log-prob kernels), and DeepSpeed builds CPU Adam (ZeRO-3
# offload) with ninja at first use, once per node, into ~/.cache/torch_extensions. CPU Adam is
# not prebuilt (DS_BUILD_CPU_ADAM) on purpose: DeepSpeed compiles it with -march=native and the
# SIMD width of the CPU it builds on, so a prebuilt op would fit the build machine, not the node.
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3.11 python3.11-dev build-essential \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin omnir1
# the dependencies: one large layer (about 7 GB) that a code change leaves as it is
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
    NCCL_DEBUG=WARN OMP_NUM_THREADS=8 OMNIR1_GIT_REVISION="$GIT_REVISION"
WORKDIR /app
USER 10001:10001
ENTRYPOINT ["omnir1"]
CMD ["--help"]
