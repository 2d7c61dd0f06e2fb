#!/usr/bin/env bash
# Re-resolves requirements/*.lock from requirements/*.in in throwaway venvs (pip freeze).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

"$PYTHON" -m venv "$tmp/main" && "$tmp/main/bin/pip" install -q pip==26.2.1
"$tmp/main/bin/pip" install -q -r requirements/main.in
{ echo "# Exact pins of the main venv, resolved from main.in by 'make lock' (pip freeze). sam2 is installed"
  echo "# afterwards without build isolation (see scripts/setup.sh)."
  "$tmp/main/bin/pip" freeze --all | grep -viE '^(pip|sam2)=='; } > requirements/main.lock.tmp
mv requirements/main.lock.tmp requirements/main.lock

"$PYTHON" -m venv "$tmp/airflow" && "$tmp/airflow/bin/pip" install -q pip==26.2.1
"$tmp/airflow/bin/pip" install -q -r requirements/airflow.in
{ echo "# Exact pins of the Airflow venv, resolved from airflow.in by 'make lock' (pip freeze)."
  "$tmp/airflow/bin/pip" freeze --all | grep -viE '^pip=='; } > requirements/airflow.lock.tmp
mv requirements/airflow.lock.tmp requirements/airflow.lock
echo "locks updated"
