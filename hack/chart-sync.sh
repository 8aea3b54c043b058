#!/usr/bin/env bash
# Copy the generated and shared manifests into the Helm chart, so that the
# chart ships exactly what config/ holds:
#
#   config/crd/bases/flashsale.dev_flashsales.yaml -> charts/flashsale-operator/crds/
#   config/rbac/role.yaml                          -> charts/flashsale-operator/files/role.yaml
#                                                     (the ClusterRole template renders its rules)
#   config/prometheus/rules.yaml                   -> charts/flashsale-operator/files/rules.yaml
#                                                     (the PrometheusRule template renders its spec)
#   config/grafana/flashsale-dashboard.json        -> charts/flashsale-operator/files/
#
#   hack/chart-sync.sh        (or `make chart-sync`; `make manifests` runs it last)
#
# The copies are byte for byte; a source that does not exist removes its copy,
# so the chart never ships a file config/ no longer has. `make verify` fails
# when a copy is stale.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
chart=charts/flashsale-operator

# source -> destination
pairs=(
  "config/crd/bases/flashsale.dev_flashsales.yaml ${chart}/crds/flashsale.dev_flashsales.yaml"
  "config/rbac/role.yaml ${chart}/files/role.yaml"
  "config/prometheus/rules.yaml ${chart}/files/rules.yaml"
  "config/grafana/flashsale-dashboard.json ${chart}/files/flashsale-dashboard.json"
)

for pair in "${pairs[@]}"; do
  read -r src dst <<<"$pair"
  if [[ -f "$src" ]]; then
    mkdir -p "$(dirname "$dst")"
    cmp -s "$src" "$dst" || cp "$src" "$dst"
  else
    echo "chart-sync: ${src} does not exist: removing ${dst}" >&2
    rm -f "$dst"
  fi
done
