#!/usr/bin/env bash
# The main job on the embedded default: the whole pipeline of dvc.yaml (docs/design.md §5) under
# `dvc repro`: source -> data -> validate -> preprocess -> models -> warm start -> GRPO -> evaluate ->
# probe -> register -> report. It ends by printing the headline table, the wall time of each
# stage that ran, and where the HTML report is. Extra arguments go to `dvc repro` (e.g. -f).
# OMNIR1_PROJECT runs it in another project folder (the tests use a copy with smaller params).
# A forced run (-f / --force) also clears GRPO's persisted checkpoints: otherwise the train stage
# would reuse the finished run of the same inputs (`omnir1 train --resume auto`) instead of
# training again.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export PATH="$root/.venv/bin:$PATH"
cd "${OMNIR1_PROJECT:-$root}"
times="$(mktemp)"
trap 'rm -f "$times"' EXIT
export OMNIR1_TIMES_FILE="$times"
for arg in "$@"; do
  case "$arg" in
    -f | --force) rm -rf runs/train_checkpoints ;;
  esac
done
dvc repro "$@"
unset OMNIR1_TIMES_FILE
echo
# the source stages run on every repro (they list the data sources); any other stage is work
if grep -qv '"command": "data source ' "$times"; then
  omnir1 report --summary-only --times "$times"
else
  echo "nothing to do: every stage is up to date, the data sources unchanged (dvc repro -f reruns them all)"
  omnir1 report --summary-only
fi
