#!/usr/bin/env bash
# make demo: real flash sales on a real (local, single-node) Kubernetes, the
# way an SRE runs them:
#
#   1. install what is missing, start Redis and MariaDB (hack/services.sh)
#   2. bring the local cluster up (hack/local-cluster.sh up: the first run builds
#      Kubernetes from the Go module proxy, ~15 min on 2 cores; later runs ~30 s)
#   3. build our one image and load it into the node (no registry needed)
#   4. helm install the operator chart
#   5. apply two FlashSales: one without a waiting room that starts a minute
#      later, and one with a waiting room (spec.queue) that starts 15 s after it
#   6. send buyers at each through its Service (flashsale loadtest): the queued
#      sale's buyers join its waiting room as soon as it opens, before the start
#      (everyone who joined before it gets a random place at the start), wait
#      for admission, then buy; `kubectl get fs -w` follows both sales through
#      Warming -> Active -> Draining -> Ended
#   7. print the final status next to what MySQL holds, and the queue's figures
#
# The cluster stays up afterwards so you can look around (KUBECONFIG is
# printed); `make cluster-down` stops it. Needs root (containerd, iptables).
#
# Knobs: DEMO_BUYERS (default 8000), DEMO_QUEUE_BUYERS (default 6000),
# DEMO_START_IN (seconds, default 60), DEMO_ACTIVE (seconds the sales run,
# default 60), DEMO_PAY (payment timeout in seconds, default 20), DEMO_ADMIT
# (the waiting room's admitPerSecond, default 1000).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUYERS="${DEMO_BUYERS:-8000}"
QBUYERS="${DEMO_QUEUE_BUYERS:-6000}"
ADMIT="${DEMO_ADMIT:-1000}"
START_IN="${DEMO_START_IN:-60}"
ACTIVE="${DEMO_ACTIVE:-60}"
PAY="${DEMO_PAY:-20}"
NS="shop"
NAME="demo-$(date +%H%M%S)"
QNAME="queued-$(date +%H%M%S)"
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

say "5/7 Two FlashSales (namespace ${NS}; Redis, MySQL and Kafka from the Secret flashsale-endpoints)"
echo "    ${NAME}: no waiting room, starts in ${START_IN}s"
echo "    ${QNAME}: a waiting room (spec.queue) that opens in $((START_IN - 15))s; starts in $((START_IN + 15))s"
bash hack/local-cluster.sh endpoints-secret "$NS"
"$K" -n "$NS" create secret generic payment --from-literal=secret="$PAY_SECRET" --dry-run=client -o yaml | "$K" apply -f -
at() { date -u -d "@$(($(date +%s) + $1))" +%Y-%m-%dT%H:%M:%SZ; }
start=$(at "$START_IN")
end=$(at "$((START_IN + ACTIVE))")
qstart=$(at "$((START_IN + 15))")
qend=$(at "$((START_IN + 15 + ACTIVE))")
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
# The queued sale: buyers may join from 30 s before the start; everybody who
# joined before it gets a random place at the start; then ADMIT buyers a
# second are admitted, never more outstanding than the remaining stock x 1.5.
# One seckill and one worker pod: the one-node cluster's 2 CPUs cannot hold
# the requests of both sales' pods at their full size (a pod left Pending
# keeps the go-live gate shut). Items of its own: two sales selling the same
# SKU ids against one Redis in overlapping windows would sell the same stock
# twice, and the operator holds the later one back (Conflict).
cat >"bin/${QNAME}.yaml" <<EOF
apiVersion: flashsale.dev/v1alpha1
kind: FlashSale
metadata:
  name: ${QNAME}
  namespace: ${NS}
spec:
  startTime: "${qstart}"
  endTime: "${qend}"
  warmupLead: 45s
  paymentTimeout: ${PAY}s
  queue:
    prequeueLead: 30s
    admitPerSecond: ${ADMIT}
    overbook: "1.5"
  skus:
    - {id: "watch", stock: 500, price: "1299.00", perUserLimit: 1}
    - {id: "strap", stock: 2000, price: "29.90", perUserLimit: 2}
  rateLimit: {perUserPerSecond: 5}
  seckill: {replicas: 1}
  worker: {replicas: 1}
  kafka: {partitions: 3}
  payment:
    secretRef: {name: payment, key: secret}
EOF
cat "bin/${NAME}.yaml" "bin/${QNAME}.yaml"
"$K" apply -f "bin/${NAME}.yaml" -f "bin/${QNAME}.yaml"

echo "    following the sales: kubectl get fs -w"
"$K" -n "$NS" get fs -w &
watch_pid=$!
lt_pids=()
cleanup() { kill "${watch_pid}" "${lt_pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT

phase() { "$K" -n "$NS" get fs "$1" -o jsonpath='{.status.phase}' 2>/dev/null || true; }
failed() {
  if [[ "$(phase "$1")" == "Failed" ]]; then
    echo "the sale $1 Failed:"
    "$K" -n "$NS" describe fs "$1"
    exit 1
  fi
}
svc_ip() { "$K" -n "$NS" get svc "$1-seckill" -o jsonpath='{.spec.clusterIP}' 2>/dev/null || true; }

# loadtest NAME BUYERS [flags...]: buyers at the sale through its Service, in
# the background; the report goes to bin/NAME-loadtest.txt.
loadtest() {
  local name=$1 buyers=$2
  shift 2
  FLASHSALE_PAYMENT_SECRET="$PAY_SECRET" bin/flashsale loadtest --url "http://$(svc_ip "$name")" --fs "${NS}/${name}" \
    --mysql-dsn "root@tcp(127.0.0.1:3306)/flashsale" --profile spike --users "$buyers" --spike-window 2s --concurrency 512 \
    --wait-ended --wait-timeout 10m --quiet "$@" >"bin/${name}-loadtest.txt" 2>&1 &
  lt_pids+=($!)
}

say "6/7 Buyers (plus repeat clickers and bots) through each sale's Service, then waiting for Ended"
# The queued sale's buyers come as soon as its pods answer: a join before the
# waiting room opens is told when to come back (425 + Retry-After).
until [[ -n "$(svc_ip "$QNAME")" ]] && curl -sf -o /dev/null "http://$(svc_ip "$QNAME")/api/v1/sales/${NS}/${QNAME}"; do
  failed "$QNAME"
  sleep 1
done
echo "    ${QBUYERS} buyers join the waiting room of ${QNAME} ($(since)); once admitted, each takes up to 2 s to click Buy"
loadtest "$QNAME" "$QBUYERS" --think-time 2s
until [[ "$(phase "$NAME")" == "Active" ]]; do
  failed "$NAME"
  sleep 1
done
echo "    ${BUYERS} buyers at ${NAME} ($(since))"
loadtest "$NAME" "$BUYERS"
lt=0
for pid in "${lt_pids[@]}"; do
  wait "$pid" || lt=$?
done
kill "$watch_pid" 2>/dev/null || true

for n in "$NAME" "$QNAME"; do
  say "The load generator's report on ${n}"
  cat "bin/${n}-loadtest.txt"
done

say "7/7 Final status next to MySQL"
"$K" -n "$NS" get fs "$NAME" "$QNAME" -o wide
for n in "$NAME" "$QNAME"; do
  echo "  ${n}:"
  "$K" -n "$NS" get fs "$n" -o jsonpath='{range .status.skus[*]}    status  SKU {.id}: stock {.stock}, sold {.sold}, paid {.paid}, cancelled {.cancelled}{"\n"}{end}'
  "$K" -n "$NS" get fs "$n" -o jsonpath='{.status.queue}{"\n"}' | sed -n 's/^\(..*\)$/    status.queue \1/p'
  echo "    MySQL (database flashsale, table seckill_order):"
  mysql -uroot -h127.0.0.1 --protocol=TCP flashsale -e \
    "SELECT sku_id AS SKU, SUM(status=1) AS paid, SUM(status=2) AS cancelled, SUM(status=0) AS awaiting_payment, COUNT(*) AS orders FROM seckill_order WHERE sale='${NS}/${n}' GROUP BY sku_id ORDER BY sku_id"
  "$K" -n "$NS" get fs "$n" -o jsonpath='    audit: conserved={.status.audit.conserved}, initial={.status.audit.initial}, accounted={.status.audit.accounted}, lost={.status.audit.lost}{"\n"}'
done
for n in "$NAME" "$QNAME"; do
  echo
  echo "  ${n}:"
  "$K" -n "$NS" describe fs "$n" | sed -n '/^Events:/,$p'
done
echo
echo "Done in $(since). The cluster is still up: KUBECONFIG=${KUBECONFIG} kubectl get fs -A; stop it with make cluster-down."
exit "$lt"
