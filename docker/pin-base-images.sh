#!/usr/bin/env bash
# Pins the base images of docker/*.Dockerfile by digest. Every `ARG <NAME>_IMAGE=name:tag`
# default without one becomes name:tag@sha256:<digest of the tag's manifest list, as the
# registry serves it now> and leaves docker/unpinned-bases.txt. Needs registry access and
# crane or docker buildx. Run it at the first build, review the diff and commit it; to move to
# a newer base, change its tag, drop its @sha256 part and run it again:
#   docker/pin-base-images.sh
set -euo pipefail
cd "$(dirname "$0")/.."

resolve() {
  if command -v crane >/dev/null 2>&1; then
    crane digest "$1"
  elif docker buildx version >/dev/null 2>&1; then
    docker buildx imagetools inspect "$1" --format '{{json .Manifest.Digest}}' | tr -d '"'
  else
    echo "pin-base-images: needs crane or docker buildx" >&2
    return 1
  fi
}

declare -A digests
for file in docker/*.Dockerfile; do
  while IFS='=' read -r arg ref; do
    if [[ -z ${digests[$ref]:-} ]]; then
      digest=$(resolve "$ref")
      if [[ ! $digest =~ ^sha256:[0-9a-f]{64}$ ]]; then
        echo "pin-base-images: no digest for $ref (got '$digest')" >&2
        exit 1
      fi
      digests[$ref]=$digest
    fi
    awk -v old="$arg=$ref" -v new="$arg=$ref@${digests[$ref]}" '$0 == old { $0 = new } 1' \
      "$file" >"$file.tmp" && mv "$file.tmp" "$file"
    echo "$file: $ref@${digests[$ref]}"
  done < <(grep -E '^ARG [A-Z0-9_]+_IMAGE=[^@[:space:]]+$' "$file" || true)
done
for ref in "${!digests[@]}"; do
  awk -v ref="$ref" '$0 != ref' docker/unpinned-bases.txt >docker/unpinned-bases.txt.tmp
  mv docker/unpinned-bases.txt.tmp docker/unpinned-bases.txt
done
