#!/usr/bin/env bash
# Generate the documentation's pictures: docs/architecture.svg from docs/architecture.dot.
#
#   hack/docs.sh            (or `make docs`)
#   hack/docs.sh --check    fail when docs/architecture.svg differs from what the .dot renders to
#                           (hack/verify.sh runs this)
#
# Needs Graphviz' dot; when it is missing it is installed with apt-get (as root,
# or through sudo). dot's SVG is deterministic for one Graphviz version, so the
# check compares with the output of the Graphviz this machine's apt installs
# (2.43 on Debian 12, the CI image).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

SRC=docs/architecture.dot
OUT=docs/architecture.svg

ensure_dot() {
  command -v dot >/dev/null 2>&1 && return
  echo "hack/docs.sh: installing graphviz (dot) with apt-get" >&2
  local sudo=()
  if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "hack/docs.sh: dot is missing and this is not root: install graphviz" >&2; exit 1; }
    sudo=(sudo)
  fi
  "${sudo[@]}" apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends graphviz >&2
  command -v dot >/dev/null 2>&1 || { echo "hack/docs.sh: dot still missing after installing graphviz" >&2; exit 1; }
}

ensure_dot
case "${1:-}" in
  "")
    dot -Tsvg "$SRC" -o "$OUT"
    echo "hack/docs.sh: wrote $OUT ($(dot -V 2>&1))" >&2
    ;;
  --check)
    tmp="$(mktemp)"
    trap 'rm -f "$tmp"' EXIT
    dot -Tsvg "$SRC" -o "$tmp"
    if ! diff -u "$OUT" "$tmp" >/dev/null; then
      echo "docs: $OUT is stale: it is not what $SRC renders to ($(dot -V 2>&1)); run 'make docs'" >&2
      exit 1
    fi
    echo "docs: $OUT is up to date"
    ;;
  *)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac
