# shellcheck shell=bash
# Sourced by hack/controlplane.sh and hack/local-cluster.sh: build Kubernetes
# commands from the Go module proxy alone.
#
# k8s_build OUT_DIR WRAP_DIR MODULE CMD...
#   builds k8s.io/kubernetes/cmd/CMD... at K8S_VERSION into OUT_DIR, in the
#   wrapper module WRAP_DIR (named MODULE). k8s.io/kubernetes cannot be built
#   as a plain dependency: its go.mod points every k8s.io/* staging module at
#   ./staging/..., which a module download lacks. So the wrapper requires it
#   and replaces each such module (the list is derived from that go.mod) with
#   the same module published at K8S_STAGING_VERSION. The version ldflags make
#   the binaries report K8S_VERSION rather than v0.0.0-master (Helm refuses a
#   chart's kubeVersion against the latter).
#
# The caller sets K8S_VERSION, K8S_STAGING_VERSION, GOWORK=off and defines
# log and die.
k8s_build() {
  local out=$1 wrap=$2 module=$3
  shift 3
  local cmds=("$@") pkgs=() c
  for c in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/${c}"); done
  mkdir -p "$wrap"
  (
    cd "$wrap" || die "cannot enter the wrapper module $wrap"
    if [[ ! -f go.mod ]]; then
      printf 'module %s\n\ngo %s\n' "$module" "$(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')" >go.mod
    fi
    {
      printf '//go:build tools\n\n// Package tools pins the commands built in this wrapper module.\npackage tools\n\nimport (\n'
      printf '\t_ "%s"\n' "${pkgs[@]}"
      printf ')\n'
    } >tools.go
    log "resolving k8s.io/kubernetes@${K8S_VERSION}"
    go mod edit -require="k8s.io/kubernetes@${K8S_VERSION}"
    go mod download k8s.io/kubernetes
    local kgomod
    kgomod="$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
    [[ -f "$kgomod" ]] || die "cannot find the go.mod of k8s.io/kubernetes@${K8S_VERSION} in the module cache"
    # Every `k8s.io/foo => ./staging/src/k8s.io/foo` replace, in either the
    # one-line or the block form.
    local staging
    mapfile -t staging < <(awk '
      /^replace[[:space:]]*\(/ { inblock = 1; next }
      inblock && /^\)/ { inblock = 0; next }
      inblock && $2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }
      !inblock && $1 == "replace" && $3 == "=>" && $4 ~ /^\.\/staging\// { print $2 }
    ' "$kgomod" | sort -u)
    ((${#staging[@]} > 0)) || die "no ./staging replaces found in ${kgomod}"
    local args=() m
    for m in "${staging[@]}"; do
      args+=("-replace=${m}=${m}@${K8S_STAGING_VERSION}")
    done
    go mod edit "${args[@]}"
    log "go mod tidy (wrapper module, ${#staging[@]} staging modules at ${K8S_STAGING_VERSION})"
    go mod tidy

    local tmp="${out}/.build.tmp" minor
    minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    log "go build ${pkgs[*]}"
    go build -o "${tmp}/" -ldflags "-s -w \
      -X k8s.io/component-base/version.gitVersion=${K8S_VERSION} \
      -X k8s.io/component-base/version.gitMajor=1 \
      -X k8s.io/component-base/version.gitMinor=${minor} \
      -X k8s.io/client-go/pkg/version.gitVersion=${K8S_VERSION} \
      -X k8s.io/client-go/pkg/version.gitMajor=1 \
      -X k8s.io/client-go/pkg/version.gitMinor=${minor}" \
      "${pkgs[@]}"
    # Moved in only once built, so an interrupted build leaves no half binary.
    for c in "${cmds[@]}"; do mv -f "${tmp}/${c}" "${out}/${c}"; done
    rmdir "$tmp"
  )
}
