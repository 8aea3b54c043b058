#!/usr/bin/env bash
# Install the pinned development tools into TOOLS_BIN and print their paths.
#
#   hack/tools.sh NAME...        NAME: golangci-lint | controller-gen | helm | promtool | all
#
# A tool is (re)installed with `go install` only when it is missing or was built
# from another version (checked with `go version -m`). TOOLS_BIN defaults to
# $HOME/.cache/flashsale-operator/bin: outside the repository, so that fresh
# clones (CI) on the same machine reuse the binaries. Progress goes to stderr,
# the absolute path of each tool to stdout, one per line.
set -euo pipefail

TOOLS_BIN="${TOOLS_BIN:-${HOME}/.cache/flashsale-operator/bin}"

# For each tool: the module whose version is pinned, the package to install, the version.
declare -A MODULE=(
  [golangci-lint]="github.com/golangci/golangci-lint/v2"
  [controller-gen]="sigs.k8s.io/controller-tools"
  [helm]="helm.sh/helm/v3"
  [promtool]="github.com/prometheus/prometheus"
)
declare -A PACKAGE=(
  [golangci-lint]="github.com/golangci/golangci-lint/v2/cmd/golangci-lint"
  [controller-gen]="sigs.k8s.io/controller-tools/cmd/controller-gen"
  [helm]="helm.sh/helm/v3/cmd/helm"
  [promtool]="github.com/prometheus/prometheus/cmd/promtool"
)
declare -A VERSION=(
  [golangci-lint]="v2.15.0"
  [controller-gen]="v0.23.0"
  # helm: the chart tests (test/chart) lint and render charts/ with it; a cold build takes ~3 min.
  [helm]="v3.22.0"
  # promtool: test/opskit checks and unit-tests config/prometheus/rules.yaml with it. Prometheus 3.x
  # is tagged v0.3xx.y as a Go module (v0.316.0 = Prometheus 3.16.0).
  [promtool]="v0.316.0"
)

usage() {
  echo "usage: $0 NAME...   (NAME: ${!VERSION[*]} all)" >&2
  exit 2
}

# installed_version BIN MODULE: the version of MODULE BIN was built from, or nothing.
installed_version() {
  go version -m "$1" 2>/dev/null | awk -v m="$2" '$1 == "mod" && $2 == m { print $3 }'
}

install_tool() {
  local name=$1
  [[ -n "${VERSION[$name]:-}" ]] || { echo "hack/tools.sh: unknown tool '$name'" >&2; usage; }
  local bin="${TOOLS_BIN}/${name}" want="${VERSION[$name]}" have=""
  if [[ -x "$bin" ]]; then
    have="$(installed_version "$bin" "${MODULE[$name]}")"
  fi
  if [[ "$have" != "$want" ]]; then
    echo "hack/tools.sh: installing ${name} ${want} into ${TOOLS_BIN}${have:+ (found ${have})}" >&2
    mkdir -p "$TOOLS_BIN"
    # Build outside the repository so the project's go.mod is never touched.
    (cd "${TMPDIR:-/tmp}" && GOBIN="$TOOLS_BIN" go install "${PACKAGE[$name]}@${want}")
    have="$(installed_version "$bin" "${MODULE[$name]}")"
    if [[ "$have" != "$want" ]]; then
      echo "hack/tools.sh: ${bin} reports version '${have}' after install, want ${want}" >&2
      exit 1
    fi
  fi
  echo "$bin"
}

[[ $# -gt 0 ]] || usage
for arg in "$@"; do
  if [[ "$arg" == all ]]; then
    for n in "${!VERSION[@]}"; do install_tool "$n"; done
  else
    install_tool "$arg"
  fi
done
