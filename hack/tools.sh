#!/usr/bin/env bash
# Install the pinned development tools into TOOLS_BIN and print their paths.
#
#   hack/tools.sh NAME...        NAME: golangci-lint | controller-gen | helm | helm-docs | promtool |
#                                      prometheus | redis_exporter | mysqld_exporter | all
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
  [helm-docs]="github.com/norwoodj/helm-docs"
  [promtool]="github.com/prometheus/prometheus"
  [prometheus]="github.com/prometheus/prometheus"
  [redis_exporter]="github.com/oliver006/redis_exporter"
  [mysqld_exporter]="github.com/prometheus/mysqld_exporter"
)
declare -A PACKAGE=(
  [golangci-lint]="github.com/golangci/golangci-lint/v2/cmd/golangci-lint"
  [controller-gen]="sigs.k8s.io/controller-tools/cmd/controller-gen"
  [helm]="helm.sh/helm/v3/cmd/helm"
  [helm-docs]="github.com/norwoodj/helm-docs/cmd/helm-docs"
  [promtool]="github.com/prometheus/prometheus/cmd/promtool"
  [prometheus]="github.com/prometheus/prometheus/cmd/prometheus"
  [redis_exporter]="github.com/oliver006/redis_exporter"
  [mysqld_exporter]="github.com/prometheus/mysqld_exporter"
)
declare -A VERSION=(
  [golangci-lint]="v2.15.0"
  [controller-gen]="v0.23.0"
  # helm: the chart tests (test/chart) lint and render charts/ with it; a cold build takes ~3 min.
  [helm]="v3.22.0"
  # helm-docs: `make chart-docs` writes charts/flashsale-operator/README.md from values.yaml's
  # `# --` comments and README.md.gotmpl; `make verify` fails when it is stale.
  [helm-docs]="v1.14.2"
  # promtool: test/opskit checks and unit-tests config/prometheus/rules.yaml with it. Prometheus 3.x
  # is tagged v0.3xx.y as a Go module (v0.316.0 = Prometheus 3.16.0).
  [promtool]="v0.316.0"
  # prometheus: the same release as promtool. test/alerts runs it against live seckill, worker and
  # rollback processes with config/prometheus/rules.yaml loaded, and evaluates every dashboard query
  # through its HTTP API. Built without the web UI's assets (the module build has none); the API is
  # all the test uses.
  [prometheus]="v0.316.0"
  # redis_exporter, mysqld_exporter: test/opskit runs them against the local Redis and MariaDB
  # to prove the series the dependency rules and dashboard rows use exist. mysqld_exporter v0.16.0
  # is the newest version the Go module proxy reachable here served when this was pinned
  # (2026-11-30; v0.18.0, v0.17.x, v0.15.1 answered 403 there). That proxy served no
  # danielqsj/kafka_exporter version either (v1.9.0 down to v1.4.2 tried: 403), so none is pinned.
  [redis_exporter]="v1.74.0"
  [mysqld_exporter]="v0.16.0"
)
# Modules the checksum database reachable here did not answer for when they were pinned
# (2026-11-30; this describes that environment's proxy and checksum database, not necessarily
# proxy.golang.org and sum.golang.org): their go.sum hash is pinned here instead (the `Sum` of
# `go mod download -json`) and checked before the build, which then skips the checksum database
# for that module only (GONOSUMDB). That proxy refused their version lists too, which
# `go install pkg@version` reads (deprecation check) and fails on: they are built with `go build`
# in a throwaway module that requires the pinned version (same dependency versions).
declare -A SUM=(
  [redis_exporter]="h1:/ESQZa3xqpQxiQmk4tpo90Y8gPWLpYVF6E5SR262KtM="
  [mysqld_exporter]="h1:a1pIimb6fpRbdcthxlWa841+2e9UJ67thoVWa8XdUk0="
)

usage() {
  echo "usage: $0 NAME...   (NAME: ${!VERSION[*]} all)" >&2
  exit 2
}

# installed_version BIN MODULE: the version of MODULE BIN was built from, or nothing.
installed_version() {
  go version -m "$1" 2>/dev/null | awk -v m="$2" '$1 == "mod" && $2 == m { print $3 }'
}

# check_sum MODULE@VERSION SUM: download the module (without the checksum database) and fail
# unless its hash is SUM.
check_sum() {
  local mod="${1%@*}" json err got
  # `|| true`: go mod download exits non-zero on a refused download, which under set -e would end
  # the script without a word; the reason is in the JSON's Error field, printed below.
  json="$(cd "${TMPDIR:-/tmp}" && GONOSUMDB="$mod" GOFLAGS= go mod download -json "$1")" || true
  err="$(json_field Error <<<"$json")"
  if [[ -n "$err" || -z "$json" ]]; then
    echo "hack/tools.sh: cannot download $1: ${err:-go mod download printed nothing}" >&2
    exit 1
  fi
  got="$(json_field Sum <<<"$json")"
  if [[ "$got" != "$2" ]]; then
    echo "hack/tools.sh: $1 downloaded with hash '${got}', but the hash pinned in SUM is $2:" \
      "not building it (a changed or substituted module; update SUM only after checking why)" >&2
    exit 1
  fi
}

# json_field NAME: the string value of the top-level field NAME of the JSON on stdin (one field
# a line, as go mod download -json prints it), or nothing.
json_field() {
  sed -n 's/^[[:space:]]*"'"$1"'": "\(.*\)",\{0,1\}$/\1/p'
}

# build_unlisted NAME VERSION: check the pinned hash, then build the package in a throwaway module.
build_unlisted() {
  local mod="${MODULE[$1]}" dir
  check_sum "${mod}@$2" "${SUM[$1]}"
  dir="$(mktemp -d)"
  printf 'module flashsale-tools/%s\n\ngo 1.22\n\nrequire %s %s\n' "$1" "$mod" "$2" >"${dir}/go.mod"
  (cd "$dir" && GONOSUMDB="${mod}${GONOSUMDB:+,${GONOSUMDB}}" GOFLAGS=-mod=mod GOWORK=off \
    go build -o "${TOOLS_BIN}/$1" "${PACKAGE[$1]}") || { rm -rf "$dir"; exit 1; }
  rm -rf "$dir"
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
    if [[ -n "${SUM[$name]:-}" ]]; then
      build_unlisted "$name" "$want"
    else
      # Build outside the repository so the project's go.mod is never touched.
      (cd "${TMPDIR:-/tmp}" && GOBIN="$TOOLS_BIN" go install "${PACKAGE[$name]}@${want}")
    fi
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
