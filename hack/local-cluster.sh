#!/usr/bin/env bash
# A real single-node Kubernetes v1.37.2 on this machine (Debian 12, root, no
# systemd as PID 1, no Docker, no image registry), plus the host's Redis,
# MariaDB and a Kafka broker made reachable from its pods.
#
#   hack/local-cluster.sh up                  clean what a killed run left, start everything, wait for node Ready
#   hack/local-cluster.sh down                stop everything and remove all it created (idempotent)
#   hack/local-cluster.sh status              what runs, the KUBECONFIG, the endpoints pods use (exit 1 unless all is up)
#   hack/local-cluster.sh load-image FILE.tar import a docker-archive tarball (`make image`) for the pods
#   hack/local-cluster.sh build               only build/check the Kubernetes binaries (cached)
#   hack/local-cluster.sh deps-up | deps-down start/stop only the host dependencies (hack/localdeps); `up` runs deps-up
#   hack/local-cluster.sh endpoints-secret [NAMESPACE]
#                                             create/update the Secret flashsale-endpoints from endpoints.env
#
# What runs, all as background processes with PID files (no systemd):
#   etcd (127.0.0.1:12379), kube-apiserver (:6443), kube-controller-manager,
#   kube-scheduler, containerd (own socket, root and state), kubelet, kube-proxy
#   (iptables mode), and hack/localdeps: a Kafka broker (franz-go's kfake) on
#   NODE_IP:19092 and TCP forwarders NODE_IP:16379 -> 127.0.0.1:6379 (Redis) and
#   NODE_IP:13306 -> 127.0.0.1:3306 (MariaDB) of hack/services.sh, which deps-up runs.
#   Pods get IPs on the CNI bridge cni0 (10.88.0.0/16), Services 10.96.0.0/16, no
#   cluster DNS (pods use the host's resolv.conf). NODE_IP is the address of the
#   default route (override: FLASHSALE_NODE_IP).
#
# Where things live:
#   binaries   ${FLASHSALE_CACHE:-~/.cache/flashsale-operator}/k8s/v1.37.2/ : kube-apiserver
#              and etcd from hack/controlplane.sh (envtest uses the same), plus
#              kube-controller-manager, kube-scheduler, kube-proxy, kubelet and kubectl
#              built here from the Go module proxy in the wrapper module src/node.
#              Cold build, measured on 2 cores with an empty Go build cache: 7 min for
#              kube-apiserver + etcd (hack/controlplane.sh), then 3 min for the other
#              five; 14 s for those five with a warm Go build cache.
#              Built once, then only version-checked.
#   state      ${FLASHSALE_CLUSTER_DIR:-/var/lib/flashsale-cluster}/ : certificates,
#              kubeconfigs (admin.kubeconfig), etcd data, containerd root/state,
#              kubelet root, pod logs, logs/*.log, run/*.pid, cluster.env (KUBECONFIG,
#              KUBECTL, NODE_IP) and endpoints.env (REDIS_ADDR, MYSQL_DSN, KAFKA_BROKERS).
#              `down` deletes it; logs go with it.
#
# Timings measured on 2 cores: apt install 16 s (once); `up` with the binaries
# cached 11-13 s (node Ready 8-10 s after etcd starts), 13 s after a `kill -9` of
# a running cluster (clean-up included); `load-image` 1 s; `down` 4 s.
#
# A real cluster instead: skip this script, point KUBECONFIG at it, push the
# image to a registry it pulls from, and create the Secret flashsale-endpoints
# (keys redis-address, mysql-dsn, kafka-brokers) in the sale's namespace with
# your Redis/MySQL/Kafka; see docs/local-cluster.md.
#
# Needs root. Installs missing Debian packages with apt-get (containerd runc
# containernetworking-plugins iptables conntrack openssl curl iproute2). While
# up it changes host settings: net.ipv4.ip_forward and bridge-nf-call-iptables
# (=1), and the sysctls kubelet tunes (vm.overcommit_memory, kernel.panic, ...);
# `down` restores their earlier values. The kubelet accepts anonymous requests
# (so that `kubectl logs/exec` work without more certificates): a machine for
# development only.
set -euo pipefail

K8S_VERSION="v1.37.2"
K8S_STAGING_VERSION="v0.37.2"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${FLASHSALE_CACHE:-${HOME}/.cache/flashsale-operator}"
BIN_DIR="${CACHE}/k8s/${K8S_VERSION}"
WRAP_NODE="${BIN_DIR}/src/node"
# Built here; kube-apiserver and etcd come from hack/controlplane.sh.
NODE_BINS=(kube-controller-manager kube-scheduler kube-proxy kubelet kubectl)

DIR="${FLASHSALE_CLUSTER_DIR:-/var/lib/flashsale-cluster}"
PKI="${DIR}/pki"
CONF="${DIR}/conf"
RUN="${DIR}/run"
LOGS="${DIR}/logs"
SOCK="${DIR}/containerd/containerd.sock"
ADMIN_KUBECONFIG="${DIR}/admin.kubeconfig"
ENDPOINTS_FILE="${DIR}/endpoints.env"
CLUSTER_ENV="${DIR}/cluster.env"
# Outside DIR: up and down must not run at once, and DIR comes and goes.
LOCK_FILE="/run/flashsale-cluster.lock"

POD_CIDR="10.88.0.0/16"
POD_GATEWAY="10.88.0.1"
SERVICE_CIDR="10.96.0.0/16"
SERVICE_IP="10.96.0.1" # the first address of SERVICE_CIDR: the `kubernetes` Service
API_PORT="${FLASHSALE_API_PORT:-6443}"
ETCD_CLIENT="127.0.0.1:12379"
ETCD_PEER="127.0.0.1:12380"
PAUSE_IMAGE="localhost/flashsale-pause:1"
KAFKA_PORT="${FLASHSALE_KAFKA_PORT:-19092}"
REDIS_FWD_PORT="${FLASHSALE_REDIS_PORT:-16379}"
MYSQL_FWD_PORT="${FLASHSALE_MYSQL_PORT:-13306}"
MYSQL_DATABASE="${FLASHSALE_MYSQL_DATABASE:-flashsale}"

# Host sysctls up sets or kubelet/kube-proxy may change; down puts back the
# values saved in ${DIR}/sysctl.orig.
SYSCTLS=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables
  net.ipv4.conf.all.route_localnet vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

# Go may not be on a non-login shell's PATH; the wrapper module is its own main module.
export PATH="${PATH}:/usr/local/go/bin:/usr/sbin:/sbin"

log() { printf 'hack/local-cluster.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# shellcheck source=hack/lib/k8s-build.sh
. "${REPO}/hack/lib/k8s-build.sh"

usage() {
  sed -n '/^#   hack\/local-cluster.sh/,/^#$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# lock: one up/down/deps-up at a time (fd 9, never inherited by the daemons).
lock() {
  exec 9>"$LOCK_FILE"
  if ! flock -n 9; then
    log "waiting for another hack/local-cluster.sh to finish (lock ${LOCK_FILE})"
    flock -w 900 9 || die "another hack/local-cluster.sh holds ${LOCK_FILE} for 15 min"
  fi
}

need_root() {
  [[ $EUID -eq 0 ]] || die "must run as root (it starts containerd, kubelet and changes iptables): sudo $0 $*"
}

kubectl_() { "${BIN_DIR}/kubectl" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }
ctr_() { ctr --address "$SOCK" -n k8s.io "$@"; }

# --- packages ------------------------------------------------------------------

ensure_packages() {
  local -A need=(
    [containerd]=containerd [runc]=runc [ctr]=containerd [iptables]=iptables
    [conntrack]=conntrack [openssl]=openssl [curl]=curl [ip]=iproute2
  )
  local missing=() cmd
  for cmd in "${!need[@]}"; do
    command -v "$cmd" >/dev/null || missing+=("${need[$cmd]}")
  done
  [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/portmap ]] ||
    missing+=(containernetworking-plugins)
  ((${#missing[@]})) || return 0
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  local start=$SECONDS
  log "installing with apt-get: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  log "packages installed in $((SECONDS - start)) s"
}

# --- binaries ------------------------------------------------------------------

# bins_ok: every binary exists and reports K8S_VERSION.
bins_ok() {
  local b
  for b in kube-controller-manager kube-scheduler kube-proxy kubelet; do
    [[ -x "${BIN_DIR}/${b}" && "$("${BIN_DIR}/${b}" --version 2>/dev/null)" == "Kubernetes ${K8S_VERSION}" ]] || return 1
  done
  [[ -x "${BIN_DIR}/kubectl" ]] &&
    [[ "$("${BIN_DIR}/kubectl" version --client 2>/dev/null)" == *"Client Version: ${K8S_VERSION}"* ]]
}

# build_node_bins builds NODE_BINS as hack/controlplane.sh builds
# kube-apiserver (hack/lib/k8s-build.sh), in a wrapper module of their own.
build_node_bins() {
  local start=$SECONDS
  log "building ${NODE_BINS[*]} ${K8S_VERSION} into ${BIN_DIR} (cold: 3-10 min on 2 cores)"
  export GOWORK=off GOFLAGS="-buildvcs=false"
  command -v go >/dev/null || die "go is not installed (expected on PATH or in /usr/local/go/bin)"
  k8s_build "$BIN_DIR" "$WRAP_NODE" flashsale.local/localcluster/node "${NODE_BINS[@]}"
  log "${NODE_BINS[*]} built in $((SECONDS - start)) s"
}

ensure_binaries() {
  # kube-apiserver (with the version ldflags) and etcd, shared with envtest.
  local cp_dir
  cp_dir="$(bash "${REPO}/hack/controlplane.sh")" || die "hack/controlplane.sh failed"
  [[ "$cp_dir" == "$BIN_DIR" ]] || die "hack/controlplane.sh built into ${cp_dir}, expected ${BIN_DIR}"
  mkdir -p "$BIN_DIR"
  exec 8>"${BIN_DIR}/.lock-local-cluster"
  flock 8
  bins_ok || build_node_bins
  bins_ok || die "the binaries in ${BIN_DIR} do not all report ${K8S_VERSION} after the build"
  exec 8>&-
}

# --- processes -----------------------------------------------------------------

# start_daemon NAME BINARY ARGS...: start BINARY in its own session, output to
# logs/NAME.log, PID and binary in run/NAME.pid.
start_daemon() {
  local name=$1 bin=$2
  shift 2
  mkdir -p "$RUN" "$LOGS"
  # Not the lock (fd 9) nor the build lock (fd 8): a daemon would hold them for its life.
  setsid "$bin" "$@" </dev/null >>"${LOGS}/${name}.log" 2>&1 8>&- 9>&- &
  echo "$! ${bin}" >"${RUN}/${name}.pid"
}

# daemon_pid NAME: print the PID of NAME if it runs (the PID file's process
# still runs the same binary), else fail.
daemon_pid() {
  local f="${RUN}/$1.pid" pid bin argv0
  [[ -f "$f" ]] || return 1
  read -r pid bin <"$f" || return 1
  [[ "$pid" =~ ^[0-9]+$ && -r "/proc/${pid}/cmdline" ]] || return 1
  argv0="$(tr '\0' '\n' <"/proc/${pid}/cmdline" 2>/dev/null | head -n 1)" || return 1
  [[ "$argv0" == "$bin" ]] || return 1
  echo "$pid"
}

# alive PID: the process exists and is not a zombie (an exited daemon whose
# new parent, PID 1, has not reaped it yet).
alive() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [[ "${stat:0:1}" != Z ]]
}

# stop_daemon NAME [GRACE [quiet]]: SIGTERM, then SIGKILL after GRACE seconds
# (default 10), saying so unless quiet.
stop_daemon() {
  local name=$1 grace=${2:-10} quiet=${3:-} pid i
  if pid="$(daemon_pid "$name")"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
      alive "$pid" || break
      sleep 0.1
    done
    if alive "$pid"; then
      [[ -n "$quiet" ]] || log "${name} (pid ${pid}) did not stop within ${grace} s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
    fi
  fi
  rm -f "${RUN}/${name}.pid"
}

# wait_for SECONDS WHAT LOGNAME CMD...: retry CMD every 0.2 s; on timeout show
# the end of logs/LOGNAME.log and fail.
wait_for() {
  local secs=$1 what=$2 logname=$3
  shift 3
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      if [[ -f "${LOGS}/${logname}.log" ]]; then
        log "last lines of ${LOGS}/${logname}.log:"
        tail -n 25 "${LOGS}/${logname}.log" >&2 || true
      fi
      die "${what} not ready within ${secs} s (logs: ${LOGS}/${logname}.log)"
    fi
    if [[ -n "$logname" ]] && ! daemon_pid "$logname" >/dev/null; then
      log "last lines of ${LOGS}/${logname}.log:"
      tail -n 25 "${LOGS}/${logname}.log" >&2 || true
      die "${logname} exited while waiting for ${what} (logs: ${LOGS}/${logname}.log)"
    fi
    sleep 0.2
  done
}

tcp_open() { timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

# --- configuration -------------------------------------------------------------

detect_node() {
  NODE_IP="${FLASHSALE_NODE_IP:-}"
  if [[ -z "$NODE_IP" ]]; then
    NODE_IP="$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -n 1)"
  fi
  if [[ -z "$NODE_IP" ]]; then
    NODE_IP="$(hostname -I 2>/dev/null | awk '{ print $1 }')"
  fi
  [[ "$NODE_IP" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] ||
    die "cannot find this machine's IPv4 address (no default route?); set FLASHSALE_NODE_IP"
  NODE_NAME="$(hostname | tr '[:upper:]' '[:lower:]')"
}

# load_cluster_env: NODE_IP and NODE_NAME of the running cluster, if any.
load_cluster_env() {
  if [[ -f "$CLUSTER_ENV" ]]; then
    NODE_IP="$(sed -n "s/^NODE_IP='\(.*\)'$/\1/p" "$CLUSTER_ENV")"
    NODE_NAME="$(sed -n "s/^NODE_NAME='\(.*\)'$/\1/p" "$CLUSTER_ENV")"
  fi
  [[ -n "${NODE_IP:-}" && -n "${NODE_NAME:-}" ]] || detect_node
}

gen_pki() {
  mkdir -p "$PKI"
  (
    cd "$PKI"
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
      -subj "/CN=flashsale-local-ca" 2>/dev/null
    cat >apiserver.ext <<EOF
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local, DNS:localhost, DNS:${NODE_NAME}, IP:${SERVICE_IP}, IP:127.0.0.1, IP:${NODE_IP}
EOF
    openssl req -new -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr \
      -subj "/CN=kube-apiserver" 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile apiserver.ext -out apiserver.crt 2>/dev/null
    # The service-account token signing key pair.
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    chmod 644 ca.crt apiserver.crt sa.pub
  )
}

# write_kubeconfig FILE USER TOKEN
write_kubeconfig() {
  local file=$1 user=$2 token=$3
  (
    umask 077
    cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: flashsale-local
    cluster:
      server: https://127.0.0.1:${API_PORT}
      certificate-authority-data: $(base64 -w0 "${PKI}/ca.crt")
users:
  - name: ${user}
    user:
      token: ${token}
contexts:
  - name: flashsale-local
    context:
      cluster: flashsale-local
      user: ${user}
current-context: flashsale-local
EOF
  )
}

# gen_auth: a static token per client (the file's columns: token,user,uid,groups)
# and a kubeconfig each. The apiserver's Node authorizer and NodeRestriction
# know the kubelet by its user system:node:NAME in group system:nodes; the
# other components by the users RBAC's default bindings name.
gen_auth() {
  mkdir -p "$CONF"
  local admin cm sched proxy kubelet
  admin="$(openssl rand -hex 24)"
  cm="$(openssl rand -hex 24)"
  sched="$(openssl rand -hex 24)"
  proxy="$(openssl rand -hex 24)"
  kubelet="$(openssl rand -hex 24)"
  (
    umask 077
    cat >"${PKI}/tokens.csv" <<EOF
${admin},admin,admin,system:masters
${cm},system:kube-controller-manager,system:kube-controller-manager
${sched},system:kube-scheduler,system:kube-scheduler
${proxy},system:kube-proxy,system:kube-proxy
${kubelet},system:node:${NODE_NAME},system:node:${NODE_NAME},system:nodes
EOF
  )
  write_kubeconfig "$ADMIN_KUBECONFIG" admin "$admin"
  write_kubeconfig "${CONF}/controller-manager.kubeconfig" system:kube-controller-manager "$cm"
  write_kubeconfig "${CONF}/scheduler.kubeconfig" system:kube-scheduler "$sched"
  write_kubeconfig "${CONF}/kube-proxy.kubeconfig" system:kube-proxy "$proxy"
  write_kubeconfig "${CONF}/kubelet.kubeconfig" "system:node:${NODE_NAME}" "$kubelet"
}

write_containerd_config() {
  mkdir -p "${DIR}/containerd" "${DIR}/cni/net.d"
  cat >"${CONF}/containerd.toml" <<EOF
version = 2
root = "${DIR}/containerd/root"
state = "${DIR}/containerd/state"

[grpc]
  address = "${SOCK}"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "${DIR}/containerd/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "${PAUSE_IMAGE}"
    # This VM lacks CAP_SYS_RESOURCE: without it every pod sandbox fails with
    # "can't get final child's PID from pipe: EOF".
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = "${DIR}/containerd/runc"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "${DIR}/cni/net.d"
EOF
  cat >"${DIR}/cni/net.d/10-flashsale.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "flashsale",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "${DIR}/cni/ipam",
        "ranges": [[{ "subnet": "${POD_CIDR}", "gateway": "${POD_GATEWAY}" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
}

write_node_config() {
  cat >"${CONF}/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# Kubelet >= 1.35 refuses cgroup v1 unless told otherwise; this VM has only v1.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://${SOCK}
failSwapOn: false
address: ${NODE_IP}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
# Anonymous and AlwaysAllow: the apiserver reaches kubelet for logs, exec and
# port-forward without a client certificate.
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
  x509:
    clientCAFile: ${PKI}/ca.crt
authorization:
  mode: AlwaysAllow
# Imported images cannot be pulled back: never garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 50Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
podLogsDir: ${DIR}/pod-logs
resolvConf: /etc/resolv.conf
clusterDomain: cluster.local
serializeImagePulls: false
rotateCertificates: false
EOF
  cat >"${CONF}/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: ${CONF}/kube-proxy.kubeconfig
mode: iptables
clusterCIDR: ${POD_CIDR}
hostnameOverride: ${NODE_NAME}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
iptables:
  # Not 127.0.0.1 NodePorts: that needs route_localnet=1.
  localhostNodePorts: false
  minSyncPeriod: 1s
# Leave the host's conntrack settings alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
  cat >"$CLUSTER_ENV" <<EOF
# Written by hack/local-cluster.sh up: source it to talk to the local cluster.
KUBECONFIG='${ADMIN_KUBECONFIG}'
KUBECTL='${BIN_DIR}/kubectl'
NODE_IP='${NODE_IP}'
NODE_NAME='${NODE_NAME}'
API_SERVER='https://${NODE_IP}:${API_PORT}'
CONTAINERD_ADDRESS='${SOCK}'
EOF
}

save_sysctls() {
  local k v
  : >"${DIR}/sysctl.orig"
  for k in "${SYSCTLS[@]}"; do
    if v="$(sysctl -n "$k" 2>/dev/null)"; then
      printf '%s=%s\n' "$k" "$v" >>"${DIR}/sysctl.orig"
    fi
  done
}

restore_sysctls() {
  [[ -f "${DIR}/sysctl.orig" ]] || return 0
  local line
  while IFS= read -r line; do
    if [[ -n "$line" ]]; then sysctl -q -w "$line" >/dev/null 2>&1 || true; fi
  done <"${DIR}/sysctl.orig"
}

# --- pause image ---------------------------------------------------------------

# build_pause_image: hack/pause (a static program that blocks and reaps
# children) packed by hack/image into a docker-archive tarball.
build_pause_image() {
  local out="${DIR}/images/pause.tar"
  mkdir -p "${DIR}/images"
  (
    cd "$REPO"
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "${DIR}/images/pause" ./hack/pause
    go run ./hack/image --binary "${DIR}/images/pause" --tag "$PAUSE_IMAGE" --version pause --out "$out" >/dev/null
  ) || die "building the pause image (hack/pause, hack/image) failed"
}

# --- up ------------------------------------------------------------------------

start_control_plane() {
  start_daemon etcd "${BIN_DIR}/etcd" \
    --name=flashsale-local --data-dir="${DIR}/etcd" \
    --listen-client-urls="http://${ETCD_CLIENT}" --advertise-client-urls="http://${ETCD_CLIENT}" \
    --listen-peer-urls="http://${ETCD_PEER}" --initial-advertise-peer-urls="http://${ETCD_PEER}" \
    --initial-cluster="flashsale-local=http://${ETCD_PEER}" \
    --unsafe-no-fsync=true --log-level=warn
  wait_for 30 "etcd" etcd curl -sf --max-time 1 "http://${ETCD_CLIENT}/health"

  start_daemon kube-apiserver "${BIN_DIR}/kube-apiserver" \
    --advertise-address="$NODE_IP" --bind-address=0.0.0.0 --secure-port="$API_PORT" \
    --etcd-servers="http://${ETCD_CLIENT}" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --tls-cert-file="${PKI}/apiserver.crt" --tls-private-key-file="${PKI}/apiserver.key" \
    --client-ca-file="${PKI}/ca.crt" \
    --token-auth-file="${PKI}/tokens.csv" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="${PKI}/sa.pub" \
    --service-account-signing-key-file="${PKI}/sa.key" \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction \
    --allow-privileged=true \
    --kubelet-preferred-address-types=InternalIP,Hostname
  wait_for 60 "kube-apiserver" kube-apiserver apiserver_ready

  start_daemon kube-controller-manager "${BIN_DIR}/kube-controller-manager" \
    --kubeconfig="${CONF}/controller-manager.kubeconfig" \
    --authentication-kubeconfig="${CONF}/controller-manager.kubeconfig" \
    --authorization-kubeconfig="${CONF}/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false \
    --service-account-private-key-file="${PKI}/sa.key" \
    --root-ca-file="${PKI}/ca.crt" \
    --cluster-signing-cert-file="${PKI}/ca.crt" --cluster-signing-key-file="${PKI}/ca.key" \
    --use-service-account-credentials=true \
    --service-cluster-ip-range="$SERVICE_CIDR"
  start_daemon kube-scheduler "${BIN_DIR}/kube-scheduler" \
    --kubeconfig="${CONF}/scheduler.kubeconfig" \
    --authentication-kubeconfig="${CONF}/scheduler.kubeconfig" \
    --authorization-kubeconfig="${CONF}/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false
}

apiserver_ready() {
  [[ "$(curl -sk --max-time 2 -H "Authorization: Bearer $(admin_token)" "https://127.0.0.1:${API_PORT}/readyz")" == ok ]]
}

admin_token() { awk -F, '$2 == "admin" { print $1 }' "${PKI}/tokens.csv"; }

start_node() {
  start_daemon containerd "$(command -v containerd)" --config "${CONF}/containerd.toml"
  wait_for 30 "containerd" containerd ctr --address "$SOCK" version
  ctr_ images import "${DIR}/images/pause.tar" >/dev/null ||
    die "importing the pause image into containerd failed (logs: ${LOGS}/containerd.log)"

  start_daemon kubelet "${BIN_DIR}/kubelet" \
    --config="${CONF}/kubelet.yaml" --kubeconfig="${CONF}/kubelet.kubeconfig" \
    --root-dir="${DIR}/kubelet" --hostname-override="$NODE_NAME" --node-ip="$NODE_IP"
  start_daemon kube-proxy "${BIN_DIR}/kube-proxy" --config="${CONF}/kube-proxy.yaml"
}

node_ready() {
  [[ "$(kubectl_ get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

# cluster_running: every daemon runs and the node is Ready.
cluster_running() {
  local n
  for n in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy; do
    daemon_pid "$n" >/dev/null || return 1
  done
  load_cluster_env
  node_ready
}

cmd_up() {
  need_root up
  lock
  if cluster_running; then
    log "the cluster is already up"
    deps_up
    print_status
    return 0
  fi
  local start=$SECONDS
  trap 'up_failed $?' EXIT
  cleanup quiet
  ensure_packages
  ensure_binaries
  command -v go >/dev/null || die "go is not installed (expected on PATH or in /usr/local/go/bin)"
  detect_node
  log "starting a single-node cluster: node ${NODE_NAME} (${NODE_IP}), state in ${DIR}"
  mkdir -p "$DIR" "$RUN" "$LOGS" "$CONF"
  chmod 700 "$DIR"
  save_sysctls
  sysctl -q -w net.ipv4.ip_forward=1
  sysctl -q -w net.bridge.bridge-nf-call-iptables=1 2>/dev/null ||
    log "warning: net.bridge.bridge-nf-call-iptables is not available (br_netfilter): Services between pods may not work"
  gen_pki
  gen_auth
  write_containerd_config
  write_node_config
  build_pause_image

  local t0=$SECONDS
  start_control_plane
  start_node
  wait_for 120 "node ${NODE_NAME} Ready" kubelet node_ready
  # Pods of a new namespace need its default ServiceAccount.
  wait_for 60 "the default ServiceAccount" kube-controller-manager kubectl_ -n default get serviceaccount default
  log "node ${NODE_NAME} Ready $((SECONDS - t0)) s after starting etcd ($((SECONDS - start)) s in all)"
  deps_up
  log "up in $((SECONDS - start)) s"
  trap - EXIT
  print_status
}

up_failed() {
  (($1 == 0)) && return 0
  log "up failed; what it started still runs (logs: ${LOGS}/). '$0 down' removes it all; the next 'up' also starts clean."
}

# --- host dependencies ---------------------------------------------------------

deps_up() {
  need_root deps-up
  load_cluster_env
  mkdir -p "$RUN" "$LOGS" "${DIR}/bin"
  if daemon_pid localdeps >/dev/null && deps_listening; then
    return 0
  fi
  stop_daemon localdeps 5
  local start=$SECONDS
  bash "${REPO}/hack/services.sh" || die "hack/services.sh could not start Redis and MariaDB"
  mysql -uroot -h127.0.0.1 --protocol=TCP -e "CREATE DATABASE IF NOT EXISTS \`${MYSQL_DATABASE}\`" ||
    die "cannot create the database ${MYSQL_DATABASE} in MariaDB"
  (cd "$REPO" && go build -o "${DIR}/bin/localdeps" ./hack/localdeps) || die "building hack/localdeps failed"
  start_daemon localdeps "${DIR}/bin/localdeps" \
    --kafka "${NODE_IP}:${KAFKA_PORT}" \
    --forward "${NODE_IP}:${REDIS_FWD_PORT}=127.0.0.1:6379" \
    --forward "${NODE_IP}:${MYSQL_FWD_PORT}=127.0.0.1:3306"
  wait_for 30 "hack/localdeps" localdeps deps_listening
  cat >"$ENDPOINTS_FILE" <<EOF
# Written by hack/local-cluster.sh deps-up: where pods of the local cluster (and
# the host) reach the dependencies: keys of the flashsale-endpoints Secret
# redis-address, mysql-dsn, kafka-brokers. Source it (set -a; . FILE).
REDIS_ADDR='${NODE_IP}:${REDIS_FWD_PORT}'
MYSQL_DSN='root@tcp(${NODE_IP}:${MYSQL_FWD_PORT})/${MYSQL_DATABASE}'
KAFKA_BROKERS='${NODE_IP}:${KAFKA_PORT}'
EOF
  log "host dependencies reachable from pods in $((SECONDS - start)) s (${ENDPOINTS_FILE})"
}

deps_listening() {
  tcp_open "$NODE_IP" "$KAFKA_PORT" && tcp_open "$NODE_IP" "$REDIS_FWD_PORT" && tcp_open "$NODE_IP" "$MYSQL_FWD_PORT"
}

deps_down() {
  stop_daemon localdeps 5
  rm -f "$ENDPOINTS_FILE"
}

cmd_endpoints_secret() {
  need_root endpoints-secret
  local ns=${1:-default}
  [[ -f "$ENDPOINTS_FILE" ]] || die "no ${ENDPOINTS_FILE}: run '$0 up' (or deps-up) first"
  local REDIS_ADDR MYSQL_DSN KAFKA_BROKERS
  # shellcheck disable=SC1090
  . "$ENDPOINTS_FILE"
  kubectl_ get namespace "$ns" >/dev/null 2>&1 || kubectl_ create namespace "$ns" >/dev/null
  kubectl_ -n "$ns" create secret generic flashsale-endpoints \
    --from-literal=redis-address="$REDIS_ADDR" \
    --from-literal=mysql-dsn="$MYSQL_DSN" \
    --from-literal=kafka-brokers="$KAFKA_BROKERS" \
    --dry-run=client -o yaml | kubectl_ apply -f -
}

# --- down / cleanup ------------------------------------------------------------

# our_shims: PIDs of containerd shims of this cluster's containerd (found by
# its socket on their command line), even when containerd itself is gone.
our_shims() {
  local p
  for p in /proc/[0-9]*; do
    [[ -r "${p}/cmdline" ]] || continue
    if tr '\0' ' ' <"${p}/cmdline" 2>/dev/null | grep -q -- "containerd-shim.* -address ${SOCK}\( \|$\)"; then
      echo "${p#/proc/}"
    fi
  done
}

# kubepods_pids: every process in a kubepods cgroup (the pods' processes).
kubepods_pids() {
  local d
  for d in /sys/fs/cgroup/*/kubepods; do
    [[ -d "$d" ]] || continue
    find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -un
}

kill_pods() {
  local pids i
  for ((i = 0; i < 50; i++)); do
    mapfile -t pids < <(kubepods_pids)
    ((${#pids[@]})) || return 0
    kill -KILL "${pids[@]}" 2>/dev/null || true
    sleep 0.1
  done
  log "warning: processes left in the kubepods cgroups: $(kubepods_pids | tr '\n' ' ')"
}

# clean_iptables: drop the KUBE-* and CNI-* chains of every table and the rules
# of other chains that jump to them (iptables and ip6tables).
clean_iptables() {
  local ipt script
  for ipt in iptables ip6tables; do
    command -v "${ipt}-save" >/dev/null || continue
    script="$("${ipt}-save" 2>/dev/null | awk '
      function ours(c) { return c ~ /^(KUBE|CNI)-/ }
      /^\*/ { table = substr($0, 2); dels = ""; chains = ""; next }
      /^:/ { c = substr($1, 2); if (ours(c)) chains = chains " " c; next }
      /^-A / {
        if (!ours($2) && ($0 ~ / -[jg] (KUBE|CNI)-/)) dels = dels "-D" substr($0, 3) "\n"
        next
      }
      /^COMMIT/ {
        if (dels != "" || chains != "") {
          n = split(chains, cs, " ")
          printf "*%s\n%s", table, dels
          for (i = 1; i <= n; i++) printf "-F %s\n", cs[i]
          for (i = 1; i <= n; i++) printf "-X %s\n", cs[i]
          print "COMMIT"
        }
      }')"
    if [[ -n "$script" ]]; then
      "${ipt}-restore" --noflush <<<"$script" || log "warning: ${ipt}-restore could not remove every KUBE-/CNI- rule"
    fi
  done
}

# leftovers: print what of a cluster is still on the machine, one line each.
leftovers() {
  local n pid
  for n in localdeps kubelet kube-proxy kube-scheduler kube-controller-manager kube-apiserver etcd containerd; do
    if pid="$(daemon_pid "$n")"; then echo "process ${n} (pid ${pid})"; fi
  done
  for pid in $(our_shims); do echo "process containerd-shim (pid ${pid})"; done
  for pid in $(kubepods_pids); do echo "process in kubepods (pid ${pid})"; done
  awk -v d="$DIR" '$5 == d || index($5, d "/") == 1 { print "mount " $5 }' /proc/self/mountinfo
  for n in /run/netns/cni-*; do [[ -e "$n" ]] && echo "netns ${n}"; done
  ip link show cni0 >/dev/null 2>&1 && echo "link cni0"
  for n in iptables ip6tables; do
    command -v "${n}-save" >/dev/null || continue
    "${n}-save" 2>/dev/null | awk -v t="$n" '/^:(KUBE|CNI)-/ { print t " chain " substr($1, 2) }'
  done
  for n in /sys/fs/cgroup/*/kubepods; do [[ -d "$n" ]] && echo "cgroup ${n}"; done
  [[ -e "$DIR" ]] && echo "state dir ${DIR}"
  return 0
}

# cleanup [quiet]: stop and remove everything of a cluster, whether it was
# stopped cleanly, killed, or half started.
cleanup() {
  local quiet=${1:-} left
  if [[ -n "$quiet" ]]; then
    left="$(leftovers)"
    [[ -n "$left" ]] || return 0
    log "cleaning up what an earlier run left: $(wc -l <<<"$left") items, e.g."
    head -n 8 <<<"$left" | sed 's/^/  /' >&2
  fi
  deps_down
  # kubelet first, so that it restarts nothing.
  stop_daemon kubelet 10
  stop_daemon kube-proxy 5
  stop_daemon kube-scheduler 5
  stop_daemon kube-controller-manager 5
  # Its graceful shutdown takes 10 s, and its state is thrown away anyway.
  stop_daemon kube-apiserver 2 quiet
  stop_daemon etcd 10

  # The pods, then their containers while containerd can still unmount their root filesystems.
  kill_pods
  if daemon_pid containerd >/dev/null; then
    local ids id
    mapfile -t ids < <(ctr_ tasks ls -q 2>/dev/null)
    for id in "${ids[@]}"; do ctr_ tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
    for id in "${ids[@]}"; do ctr_ tasks delete -f "$id" >/dev/null 2>&1 || true; done
    mapfile -t ids < <(ctr_ containers ls -q 2>/dev/null)
    for id in "${ids[@]}"; do ctr_ containers delete "$id" >/dev/null 2>&1 || true; done
  fi
  stop_daemon containerd 10
  local pids
  mapfile -t pids < <(our_shims)
  if ((${#pids[@]})); then
    kill -KILL "${pids[@]}" 2>/dev/null || true
    sleep 0.2
  fi
  kill_pods
  # containerd 1.6 puts shim sockets in /run/containerd/s whatever its state
  # dir; a killed shim leaves its socket. Remove those nobody listens on.
  local sock listening
  listening="$(ss -xlnH 2>/dev/null | awk '{ print $5 }')"
  for sock in /run/containerd/s/*; do
    [[ -S "$sock" ]] || continue
    grep -qxF -- "$sock" <<<"$listening" || rm -f "$sock"
  done
  rmdir /run/containerd/s /run/containerd 2>/dev/null || true

  if [[ -x "${BIN_DIR}/kube-proxy" ]]; then
    "${BIN_DIR}/kube-proxy" --cleanup >/dev/null 2>&1 || true
  fi
  # Mounts: container root filesystems, sandbox /dev/shm, kubelet volumes, netns.
  local m
  awk -v d="$DIR" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while IFS= read -r m; do umount -l "$m" 2>/dev/null || true; done
  for m in /run/netns/cni-*; do
    [[ -e "$m" ]] || continue
    # Only network namespaces no process uses any more (all pods are gone now).
    if [[ -z "$(ip netns pids "$(basename "$m")" 2>/dev/null)" ]]; then
      umount -l "$m" 2>/dev/null || true
      rm -f "$m"
    fi
  done
  rmdir /run/netns 2>/dev/null || true
  ip link delete cni0 2>/dev/null || true
  clean_iptables
  local d i
  for ((i = 0; i < 20; i++)); do
    for d in /sys/fs/cgroup/*/kubepods; do
      [[ -d "$d" ]] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    compgen -G '/sys/fs/cgroup/*/kubepods' >/dev/null || break
    sleep 0.2
  done
  restore_sysctls
  if [[ -e "$DIR" ]]; then
    rm -rf --one-file-system "$DIR" || log "warning: could not remove all of ${DIR}"
  fi
}

cmd_down() {
  need_root down
  lock
  local start=$SECONDS left
  cleanup
  left="$(leftovers)"
  if [[ -n "$left" ]]; then
    log "down left these behind:"
    printf '  %s\n' "$left" >&2
    exit 1
  fi
  log "down in $((SECONDS - start)) s: no process, mount, netns, iptables chain, cgroup or bridge left"
}

# --- status / load-image -------------------------------------------------------

print_status() {
  local n pid all=0
  load_cluster_env
  echo "local cluster: node ${NODE_NAME} (${NODE_IP}), state in ${DIR}"
  for n in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy localdeps; do
    if pid="$(daemon_pid "$n")"; then
      printf '  %-24s running (pid %s)\n' "$n" "$pid"
    else
      printf '  %-24s not running\n' "$n"
      all=1
    fi
  done
  if daemon_pid kube-apiserver >/dev/null && [[ -f "$ADMIN_KUBECONFIG" ]]; then
    local ready
    ready="$(kubectl_ get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)"
    echo "  node ${NODE_NAME}: Ready=${ready:-unknown}"
    [[ "$ready" == True ]] || all=1
    echo "KUBECONFIG=${ADMIN_KUBECONFIG}"
    echo "kubectl ${K8S_VERSION}: ${BIN_DIR}/kubectl   (or: . ${CLUSTER_ENV})"
    echo "API server: https://127.0.0.1:${API_PORT} (from pods: https://${SERVICE_IP}:443)"
    echo "containerd: ${SOCK} (images: ctr --address ${SOCK} -n k8s.io images ls)"
  fi
  if [[ -f "$ENDPOINTS_FILE" ]] && daemon_pid localdeps >/dev/null; then
    echo "endpoints for pods (${ENDPOINTS_FILE}; Secret: $0 endpoints-secret NAMESPACE):"
    grep -E '^[A-Z_]+=' "$ENDPOINTS_FILE" | sed 's/^/  /'
  else
    all=1
  fi
  return "$all"
}

cmd_status() {
  need_root status
  if [[ ! -d "$DIR" ]]; then
    echo "local cluster: down (no ${DIR})"
    return 1
  fi
  print_status
}

cmd_load_image() {
  need_root load-image
  [[ $# -eq 1 ]] || die "usage: $0 load-image FILE.tar"
  [[ -f "$1" ]] || die "no such file: $1 (build one with 'make image')"
  daemon_pid containerd >/dev/null || die "containerd of the local cluster is not running: run '$0 up' first"
  local start=$SECONDS
  ctr_ images import "$1" || die "ctr images import $1 failed"
  log "imported $1 in $((SECONDS - start)) s (pods: imagePullPolicy Never or IfNotPresent)"
}

cmd_build() {
  ensure_binaries
  echo "$BIN_DIR"
}

main() {
  [[ $# -ge 1 ]] || usage
  local cmd=$1
  shift
  case "$cmd" in
  up) [[ $# -eq 0 ]] || usage; cmd_up ;;
  down) [[ $# -eq 0 ]] || usage; cmd_down ;;
  status) [[ $# -eq 0 ]] || usage; cmd_status ;;
  load-image) cmd_load_image "$@" ;;
  build) [[ $# -eq 0 ]] || usage; cmd_build ;;
  deps-up)
    [[ $# -eq 0 ]] || usage
    need_root deps-up
    [[ -d "$DIR" ]] || die "the cluster is not up: run '$0 up'"
    lock
    deps_up
    print_status || true
    ;;
  deps-down) [[ $# -eq 0 ]] || usage; need_root deps-down; deps_down ;;
  endpoints-secret) [[ $# -le 1 ]] || usage; cmd_endpoints_secret "$@" ;;
  -h | --help | help) usage ;;
  *) log "unknown command: ${cmd}"; usage ;;
  esac
}

main "$@"
