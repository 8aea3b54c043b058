#!/usr/bin/env bash
# make demo: a real flash sale on a real (local, single-node) Kubernetes, the
# way an SRE runs one:
#
#   1. install what is missing, start Redis and MariaDB (hack/services.sh)
#   2. bring the local cluster up (hack/local-cluster.sh up: the first run builds
#      Kubernetes from the Go module proxy, ~15 min on 2 cores; later runs ~30 s)
#   3. build our one image and load it into the node (no registry needed)
#   4. helm install the operator chart
#   5. apply a FlashSale that starts a minute later
#   6. send buyers at it through its Service (flashsale loadtest) while
#      `kubectl get fs -w` follows it: Warming -> Active -> Draining -> Ended
#   7. print the final status next to what MySQL holds
#
# The cluster stays up afterwards so you can look around (KUBECONFIG is
# printed); `make cluster-down` stops it. Needs root (containerd, iptables).
#
# Knobs: DEMO_BUYERS (default 8000), DEMO_START_IN (seconds, default 60),
# DEMO_ACTIVE (seconds the sale runs, default 60), DEMO_PAY (payment timeout
# in seconds, default 20).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUYERS="${DEMO_BUYERS:-8000}"
START_IN="${DEMO_START_IN:-60}"
ACTIVE="${DEMO_ACTIVE:-60}"
PAY="${DEMO_PAY:-20}"
NS="shop"
NAME="demo-$(date +%H%M%S)"
PAY_SECRET="demo-payment-secret"
CLUSTER_DIR="${FLASHSALE_CLUSTER_DIR:-/var/lib/flashsale-cluster}"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
t0=$(date +%s)
since() { echo "$(($(date +%s) - t0))s"; }

[[ $(id -u) -eq 0 ]] || { echo "make demo runs a real Kubernetes node: run it as root" >&2; exit 1; }

say "1/7 Dependencies: Redis and MariaDB on this machine (hack/services.sh), helm from the Go module proxy"
bash hack/services.sh
HELM="$(bash hack/tools.sh helm)"

say "2/7 Local Kubernetes cluster (hack/local-cluster.sh up)"
if [[ ! -x "${HOME}/.cache/flashsale-operator/k8s/v1.37.2/kubelet" ]]; then
  echo "    first run: building kube-apiserver, controller-manager, scheduler, kubelet, kube-proxy and etcd"
  echo "    from the Go module proxy; this takes about 15 minutes on 2 cores, and is cached afterwards"
fi
bash hack/local-cluster.sh up
# shellcheck disable=SC1091
. "${CLUSTER_DIR}/cluster.env"
# shellcheck disable=SC1091
. "${CLUSTER_DIR}/endpoints.env"
export KUBECONFIG
K="${KUBECTL:-kubectl}"
echo "    KUBECONFIG=${KUBECONFIG} ($(since))"

say "3/7 Image: build flashsale, pack it with go-containerregistry, load it into containerd"
mkdir -p bin
CGO_ENABLED=0 go build -o bin/flashsale .
# A tag per build: with imagePullPolicy Never, a rebuilt image under the same
# tag would not roll the operator on a second `make demo`.
TAG="demo-$(sha256sum bin/flashsale | cut -c1-12)"
go run ./hack/image --binary bin/flashsale --tag "flashsale-operator:${TAG}" --out bin/flashsale-demo.tar
bash hack/local-cluster.sh load-image bin/flashsale-demo.tar

say "4/7 helm install flashsale-operator"
"$HELM" upgrade --install flashsale-operator charts/flashsale-operator \
  --namespace flashsale-system --create-namespace \
  --set image.repository=flashsale-operator --set image.tag="$TAG" --set image.pullPolicy=Never \
  --set operator.refreshInterval=2s --set operator.auditInterval=10s \
  --wait --timeout 3m
"$K" -n flashsale-system get deploy,pods -o wide

say "5/7 A FlashSale starting in ${START_IN}s (namespace ${NS}; Redis, MySQL and Kafka from the Secret flashsale-endpoints)"
bash hack/local-cluster.sh endpoints-secret "$NS"
"$K" -n "$NS" create secret generic payment --from-literal=secret="$PAY_SECRET" --dry-run=client -o yaml | "$K" apply -f -
start=$(date -u -d "@$(($(date +%s) + START_IN))" +%Y-%m-%dT%H:%M:%SZ)
end=$(date -u -d "@$(($(date +%s) + START_IN + ACTIVE))" +%Y-%m-%dT%H:%M:%SZ)
cat >"bin/${NAME}.yaml" <<EOF
apiVersion: flashsale.dev/v1alpha1
kind: FlashSale
metadata:
  name: ${NAME}
  namespace: ${NS}
spec:
  startTime: "${start}"
  endTime: "${end}"
  warmupLead: 45s
  paymentTimeout: ${PAY}s
  skus:
    - {id: "phone", stock: 1000, price: "3999.00", perUserLimit: 1}
    - {id: "case", stock: 4000, price: "19.90", perUserLimit: 2}
  rateLimit: {perUserPerSecond: 5}
  seckill: {replicas: 2, maxReplicas: 4}
  worker: {replicas: 2}
  kafka: {partitions: 3}
  payment:
    secretRef: {name: payment, key: secret}
EOF
cat "bin/${NAME}.yaml"
"$K" apply -f "bin/${NAME}.yaml"

echo "    following the sale: kubectl get fs -w"
"$K" -n "$NS" get fs -w &
watch_pid=$!
trap 'kill ${watch_pid} 2>/dev/null || true' EXIT

phase() { "$K" -n "$NS" get fs "$NAME" -o jsonpath='{.status.phase}' 2>/dev/null || true; }
until [[ "$(phase)" == "Active" ]]; do
  case "$(phase)" in Failed) echo "the sale Failed:"; "$K" -n "$NS" describe fs "$NAME"; exit 1 ;; esac
  sleep 1
done

say "6/7 ${BUYERS} buyers (plus repeat clickers and bots) through the Service, then waiting for Ended"
ip=$("$K" -n "$NS" get svc "${NAME}-seckill" -o jsonpath='{.spec.clusterIP}')
set +e
FLASHSALE_PAYMENT_SECRET="$PAY_SECRET" bin/flashsale loadtest --url "http://${ip}" --fs "${NS}/${NAME}" \
  --mysql-dsn "root@tcp(127.0.0.1:3306)/flashsale" --profile spike --users "$BUYERS" --spike-window 2s --concurrency 512 \
  --wait-ended --wait-timeout 10m --quiet
lt=$?
set -e
kill "$watch_pid" 2>/dev/null || true

say "7/7 Final status next to MySQL"
"$K" -n "$NS" get fs "$NAME" -o wide
"$K" -n "$NS" get fs "$NAME" -o jsonpath='{range .status.skus[*]}    status  SKU {.id}: stock {.stock}, sold {.sold}, paid {.paid}, cancelled {.cancelled}{"\n"}{end}'
echo "    MySQL (database flashsale, table seckill_order):"
mysql -uroot -h127.0.0.1 --protocol=TCP flashsale -e \
  "SELECT sku_id AS SKU, SUM(status=1) AS paid, SUM(status=2) AS cancelled, SUM(status=0) AS awaiting_payment, COUNT(*) AS orders FROM seckill_order WHERE sale='${NS}/${NAME}' GROUP BY sku_id ORDER BY sku_id"
"$K" -n "$NS" get fs "$NAME" -o jsonpath='    audit: conserved={.status.audit.conserved}, initial={.status.audit.initial}, accounted={.status.audit.accounted}, lost={.status.audit.lost}{"\n"}'
echo
"$K" -n "$NS" describe fs "$NAME" | sed -n '/^Events:/,$p'
echo
echo "Done in $(since). The cluster is still up: KUBECONFIG=${KUBECONFIG} kubectl get fs -A; stop it with make cluster-down."
exit "$lt"
