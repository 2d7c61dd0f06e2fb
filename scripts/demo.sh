#!/usr/bin/env bash
# The main job on the embedded default: synthetic data in all three official layouts, checked
# the way training and evaluation will read it. Later stages join as they land (dvc.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-data/demo}"
omnir1=.venv/bin/omnir1
for fmt in refavs revos mevis; do
  echo "== $fmt: synthesise and check ($out/$fmt)"
  start=$EPOCHREALTIME
  $omnir1 data synth --format "$fmt" --out "$out/$fmt" --videos 24 --seed 0 --overwrite --quiet >/dev/null
  $omnir1 data check --format "$fmt" "$out/$fmt" --out "$out/$fmt.check.json" \
    | .venv/bin/python -c 'import json,sys; r=json.load(sys.stdin); print("   ", {k: r[k] for k in ("ok","videos","expressions","expressions_by_type","frames","objects","null_expressions")})'
  .venv/bin/python -c "import sys; print(f'    {float(sys.argv[2]) - float(sys.argv[1]):.1f} s')" "$start" "$EPOCHREALTIME"
done
echo "demo data under $out"
