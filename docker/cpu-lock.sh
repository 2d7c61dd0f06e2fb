#!/bin/sh
# Splits requirements/main.lock for the CPU image (docker/component.Dockerfile), so that image
# gets the locked torch without CUDA:
#   OUT/cpu-torch.txt  torch and torchvision at their locked versions, as the +cpu builds
#                      (installed from PyTorch's CPU wheel index, without dependencies)
#   OUT/cpu-deps.txt   every other pin of the lock, less the CUDA runtime that only the CUDA
#                      build of torch pulls in (nvidia-*, cuda-*, triton)
# Nothing else in the lock needs those (tests/unit/test_docker.py checks it against the venv).
#   sh docker/cpu-lock.sh requirements/main.lock OUT
set -eu
lock=$1
out=$2
mkdir -p "$out"
sed -nE 's/^(torch|torchvision)==([^+[:space:]#]+).*$/\1==\2+cpu/p' "$lock" >"$out/cpu-torch.txt"
grep -viE '^(torch|torchvision|triton)==|^(nvidia|cuda)-' "$lock" >"$out/cpu-deps.txt"
if [ "$(grep -c . "$out/cpu-torch.txt")" -ne 2 ]; then
  echo "cpu-lock.sh: $lock must pin both torch and torchvision" >&2
  exit 1
fi
