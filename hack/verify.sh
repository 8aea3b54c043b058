#!/usr/bin/env bash
# Fail when generated files are stale: the DeepCopy methods (api/**/zz_generated.deepcopy.go),
# the CRD (config/crd/bases), the RBAC (config/rbac) and the Helm chart's copies of
# them and of the monitoring files (charts/flashsale-operator, hack/chart-sync.sh), the
# chart's README.md (helm-docs, from README.md.gotmpl and values.yaml: make chart-docs),
# and docs/architecture.svg (rendered from docs/architecture.dot, hack/docs.sh).
#
#   hack/verify.sh        (or `make verify`)
#
# It copies the sources into a temporary directory, runs `make generate
# manifests chart-docs` there and compares api/, config/ and charts/ with the working tree. The
# working tree is never touched, and no git is needed: a stale file is caught
# whether or not it is committed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="${PATH}:/usr/local/go/bin"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# The sources only: not the build output, git's data nor stray binaries.
tar -cf - --exclude=./.git --exclude=./bin --exclude=./flashsale-operator --exclude=./flashsale . |
  tar -xf - -C "$tmp"

# The same targets a developer runs, with the same pinned controller-gen.
make -C "$tmp" --no-print-directory -s generate manifests chart-docs >"$tmp.log" 2>&1 || {
  cat "$tmp.log" >&2
  rm -f "$tmp.log"
  echo "verify: make generate manifests chart-docs failed (output above)" >&2
  exit 1
}
rm -f "$tmp.log"

if ! diff -ruN api "$tmp/api" || ! diff -ruN config "$tmp/config" || ! diff -ruN charts "$tmp/charts"; then
  echo >&2
  echo "verify: generated files are stale (diff above: current tree -> regenerated)." >&2
  echo "verify: run 'make generate manifests chart-docs' and commit the result." >&2
  exit 1
fi
echo "verify: generated files (deepcopy, CRD, RBAC, chart copies, chart README) are up to date"

# The architecture picture: docs/architecture.svg must be what docs/architecture.dot
# renders to (hack/docs.sh installs Graphviz when dot is missing).
bash hack/docs.sh --check
