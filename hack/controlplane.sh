#!/usr/bin/env bash
# Build the control plane envtest needs (kube-apiserver and etcd) from the Go
# module proxy, cached outside the repository, and print the directory holding
# them: the value of KUBEBUILDER_ASSETS.
#
#   hack/controlplane.sh            build if needed, print the directory (stdout)
#
# Nothing is downloaded from anywhere but the Go module proxy (no setup-envtest):
#   - kube-apiserver v1.37.2: a wrapper module requires k8s.io/kubernetes v1.37.2
#     and replaces every k8s.io/* module that kubernetes' go.mod points at
#     ./staging/... with the same module at v0.37.2 (the list is derived from
#     that go.mod); built with the version ldflags so it reports v1.37.2.
#   - etcd v3.6.16: its own wrapper module (`go install ...@v` is refused, its
#     go.mod has replace directives): go get go.etcd.io/etcd/server/v3@v3.6.16,
#     go build go.etcd.io/etcd/server/v3 -o etcd.
#
# The binaries and the wrapper modules live under
#   ${FLASHSALE_CACHE:-$HOME/.cache/flashsale-operator}/k8s/v1.37.2/
# so fresh clones on the same machine (CI) reuse them. When both binaries exist
# and report the expected version, nothing is built. A cold build takes 10-15
# minutes on 2 cores (etcd about 1.5 of them; less with a warm Go build cache). Progress goes to
# stderr, the directory alone to stdout.
set -euo pipefail

K8S_VERSION="v1.37.2"
K8S_STAGING_VERSION="v0.37.2"
ETCD_VERSION="v3.6.16"

CACHE="${FLASHSALE_CACHE:-${HOME}/.cache/flashsale-operator}"
DIR="${CACHE}/k8s/${K8S_VERSION}"
WRAP_K8S="${DIR}/src/kubernetes"
WRAP_ETCD="${DIR}/src/etcd"

# Go may not be on a non-login shell's PATH.
export PATH="${PATH}:/usr/local/go/bin"
# Wrapper modules are their own main modules: never let a workspace or the
# caller's GOFLAGS (e.g. -mod=vendor) interfere.
export GOWORK=off GOFLAGS="-buildvcs=false"

log() { printf 'hack/controlplane.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# shellcheck source=hack/lib/k8s-build.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/k8s-build.sh"

# apiserver_ok: kube-apiserver exists and reports K8S_VERSION.
apiserver_ok() {
  [[ -x "${DIR}/kube-apiserver" ]] &&
    [[ "$("${DIR}/kube-apiserver" --version 2>/dev/null)" == "Kubernetes ${K8S_VERSION}" ]]
}

# etcd_ok: etcd exists and reports ETCD_VERSION (without the leading v).
etcd_ok() {
  # Not `etcd --version | grep -q`: with pipefail, grep exiting at the first
  # match can kill etcd with SIGPIPE and fail the check.
  local out
  [[ -x "${DIR}/etcd" ]] && out="$("${DIR}/etcd" --version 2>/dev/null)" &&
    [[ $'\n'"${out}"$'\n' == *$'\n'"etcd Version: ${ETCD_VERSION#v}"$'\n'* ]]
}

build_apiserver() {
  local start=$SECONDS
  log "building kube-apiserver ${K8S_VERSION} into ${DIR} (cold: 10-15 min on 2 cores)"
  k8s_build "$DIR" "$WRAP_K8S" flashsale.local/controlplane/kubernetes kube-apiserver
  log "kube-apiserver built in $((SECONDS - start)) s"
}

build_etcd() {
  local start=$SECONDS
  log "building etcd ${ETCD_VERSION} into ${DIR} (cold: about 1 min)"
  mkdir -p "$WRAP_ETCD"
  cd "$WRAP_ETCD"
  if [[ ! -f go.mod ]]; then
    cat >go.mod <<EOF
module flashsale.local/controlplane/etcd

go $(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')
EOF
  fi
  go get "go.etcd.io/etcd/server/v3@${ETCD_VERSION}"
  go build -o "${DIR}/etcd.tmp" -ldflags "-s -w" go.etcd.io/etcd/server/v3
  mv -f "${DIR}/etcd.tmp" "${DIR}/etcd"
  log "etcd built in $((SECONDS - start)) s"
}

main() {
  [[ $# -eq 0 ]] || { echo "usage: $0" >&2; exit 2; }
  command -v go >/dev/null || die "go is not installed (expected on PATH or in /usr/local/go/bin)"
  mkdir -p "$DIR"
  # One build at a time (two `make test` at once share the cache).
  exec 9>"${DIR}/.lock"
  flock 9
  local start=$SECONDS built=0
  if ! etcd_ok; then build_etcd; built=1; fi
  if ! apiserver_ok; then build_apiserver; built=1; fi
  apiserver_ok || die "${DIR}/kube-apiserver does not report Kubernetes ${K8S_VERSION} after the build"
  etcd_ok || die "${DIR}/etcd does not report etcd ${ETCD_VERSION} after the build"
  if ((built)); then
    log "control plane ready in $((SECONDS - start)) s"
  fi
  echo "$DIR"
}

main "$@"
