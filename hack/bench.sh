#!/usr/bin/env bash
# End-to-end benchmark of the seckill data plane (`make bench`). See
# hack/bench/README.md for what each run measures and how to read the table.
#
#   0. redis     a private redis-server on a free port, started (and stopped)
#                by the bench: its main thread's CPU time (INFO cpu) is the
#                Redis-side figure, so nobody else may use that server.
#   1. seed      redis-benchmark EVALSHA of the seed article's 5-command script
#                (hack/bench/seed.lua), -P 16, a distinct buyer per call: the
#                yardstick of the Redis CPU per purchase.
#      limit     redis-benchmark EVALSHA of the purchase script, one distinct
#                buyer per call, pipelined (-P 16) and not: what Redis can do.
#   2. purchase  wrk POST /purchase with a fresh token per request, against
#                `flashsale seckill`, --redis-autopipeline=true and =false:
#                throughput, latency, and Redis CPU us per admitted purchase.
#   3. sold-out  wrk POST /purchase of the sold-out SKU with tokens minted for
#                it (valid tokens: a refusal costs the replay lookup's HGET).
#   4. bare      wrk against hack/barehttp: a fixed 410 from plain net/http.
#   5. summary   table, Redis us per purchase (ours through the API, ours and
#                the seed's under redis-benchmark) and ours/seed, ratios
#                purchase/limit (>= 0.5) and sold-out/bare (>= 0.8), stock
#                conservation; CPU profiles when a ratio is short.
#
# Everything runs on this machine: the load generators share the CPUs with
# Redis and the server under test. Outputs (raw wrk/redis-benchmark output,
# logs, profiles) go to bin/bench/. Exit status: 0 when every correctness
# check passed (ratios below target are reported, not failed), 1 otherwise.
# Every run checks that it measured what it says: each answer has the
# expected status (any other status fails the bench, with a sample body),
# each redis-benchmark call made a distinct buyer, and stock moved by exactly
# the orders made.
#
# Environment knobs (defaults in brackets):
#   BENCH_DURATION [10] seconds per measured run
#   BENCH_WARMUP [2] seconds      BENCH_THREADS [2]  BENCH_CONNS [128]
#   BENCH_LIMIT_CALLS [300000]    BENCH_LIMIT_CALLS_NOPIPE [100000]
#   BENCH_PROFILE [auto]  auto: profile when a ratio is short; always; never
#   BENCH_CLUSTER_N [30000] purchases per case of the cluster benchmark
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

REDIS_HOST=127.0.0.1
REDIS_PORT="" # the private redis-server's, set once it runs
REDIS_ADDR=""
DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
THREADS=${BENCH_THREADS:-2}
CONNS=${BENCH_CONNS:-128}
LIMIT_CALLS=${BENCH_LIMIT_CALLS:-300000}
LIMIT_CALLS_NOPIPE=${BENCH_LIMIT_CALLS_NOPIPE:-100000}
PROFILE=${BENCH_PROFILE:-auto}
TARGET_PURCHASE=0.5
TARGET_SOLDOUT=0.8

OUT="$ROOT/bin/bench"
LUA="$ROOT/hack/bench/purchase.lua"
TEMPLATE="$ROOT/hack/bench/sale.yaml.tmpl"
FLASHSALE="$ROOT/bin/flashsale"
BAREHTTP="$ROOT/bin/barehttp"

NS="bench-$(date +%s)-$$"
SALE="$NS/sale"
WORK=""
PIDS=()
FAILURES=()
T0=$SECONDS

log() { printf '\n== %s  [+%ds]\n' "$*" "$((SECONDS - T0))"; }
note() { printf '   %s\n' "$*"; }
fail() { FAILURES+=("$*"); printf '   FAIL: %s\n' "$*"; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }
rcli() { redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" "$@"; }

# ---------------------------------------------------------------- cleanup ----

# scan_keys PATTERN: print the keys matching PATTERN (SCAN ... COUNT 10000:
# redis-cli --scan of Redis 7.0 scans 10 at a time, too slow for 10^6 keys;
# every redis-cli start costs ~20 ms on a loaded 2-CPU machine: big batches).
scan_keys() {
  local cursor=0 tmp
  tmp=$(mktemp "${TMPDIR:-/tmp}/flashsale-bench-scan.XXXXXX")
  while :; do
    # Through a file: bash reads a pipe one byte per syscall.
    rcli SCAN "$cursor" MATCH "$1" COUNT 10000 >"$tmp" || true
    cursor=""
    read -r cursor <"$tmp" || true
    [[ "$cursor" =~ ^[0-9]+$ ]] || { rm -f "$tmp"; echo "bench: SCAN failed" >&2; return 1; }
    sed '1d; /^$/d' "$tmp"
    [[ "$cursor" == 0 ]] && break
  done
  rm -f "$tmp"
}

unlink_pattern() { # PATTERN: unlink every key matching PATTERN; prints how many
  scan_keys "$1" | xargs -r -d '\n' -n 5000 -s 1000000 redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" UNLINK |
    awk '{ n += $1 } END { print n + 0 }'
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 30); do # up to 3 s for a graceful exit
      [[ "$(ps -o stat= -p "$pid" 2>/dev/null)" =~ ^[^Z] ]] || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  printf '\ncleanup: stopped %d processes (the private redis-server and its data with them)\n' "${#PIDS[@]}"
  [[ -n "$WORK" ]] && rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# ------------------------------------------------------------------ tools ----

need_wrk() {
  command -v wrk >/dev/null && return
  echo "bench: wrk is missing; installing it with apt-get" >&2
  command -v apt-get >/dev/null || die "wrk is missing and there is no apt-get: install wrk"
  if ! apt-get install -y wrk >/dev/null 2>&1; then
    apt-get update >/dev/null && apt-get install -y wrk >/dev/null || die "could not install wrk"
  fi
}
need_wrk
for tool in redis-server redis-cli redis-benchmark go curl awk split; do
  command -v "$tool" >/dev/null || die "$tool is required (redis-server, redis-tools for redis-cli/redis-benchmark)"
done

# free_port: a TCP port nobody listens on now (a tiny race is harmless here:
# only the pprof address needs one, the servers bind :0 and report theirs).
free_port() {
  local p
  for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return
    fi
  done
  die "no free port found"
}

# wait_addr LOGFILE PID REGEX: wait (15 s) until LOGFILE shows the address
# captured by the first group of the sed REGEX; print it.
wait_addr() {
  local file=$1 pid=$2 re=$3 addr=""
  for _ in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || { cat "$file" >&2; die "process $pid exited (log above)"; }
    addr=$(sed -n -E "s/$re/\1/p" "$file" | head -n1)
    [[ -n "$addr" ]] && { echo "$addr"; return; }
    sleep 0.1
  done
  cat "$file" >&2
  die "process $pid did not report its address in 15 s"
}

wait_ready() { # URL PID
  for _ in $(seq 1 150); do
    kill -0 "$2" 2>/dev/null || die "process $2 exited before $1 was ready"
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "$1" || true)" == 200 ]] && return
    sleep 0.1
  done
  die "$1 did not answer 200 within 15 s"
}

# ------------------------------------------------------------------ redis ----

# start_redis: a private redis-server on a free port, no persistence (the
# purchase path's CPU, not the disk's), the pid in REDIS_PID. Private so that
# its main thread's CPU time is the bench's alone.
start_redis() {
  REDIS_PORT=$(free_port)
  REDIS_ADDR="$REDIS_HOST:$REDIS_PORT"
  redis-server --port "$REDIS_PORT" --bind "$REDIS_HOST" --save "" --appendonly no \
    --daemonize no --logfile "$OUT/redis-server.log" &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  for _ in $(seq 1 100); do
    rcli ping >/dev/null 2>&1 && return
    kill -0 "$REDIS_PID" 2>/dev/null || die "redis-server exited (see $OUT/redis-server.log)"
    sleep 0.1
  done
  die "redis-server on port $REDIS_PORT did not answer within 10 s"
}

# redis_cpu_us: CPU microseconds the Redis main thread has used (user + sys),
# the thread every command and script runs on.
redis_cpu_us() {
  rcli INFO cpu | tr -d '\r' | awk -F: '
    $1 == "used_cpu_sys_main_thread" || $1 == "used_cpu_user_main_thread" { s += $2; n++ }
    END { if (n != 2) exit 1; printf "%.0f", s * 1e6 }' || die "INFO cpu lacks used_cpu_*_main_thread (Redis 6.2+ needed)"
}

# per_unit US_BEFORE US_AFTER UNITS: microseconds per unit ("n/a" for 0 units).
per_unit() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { if (n > 0) printf "%.1f", (b - a) / n; else print "n/a" }'; }

# ------------------------------------------------------------------ build ----

log "build"
mkdir -p "$OUT"
rm -f "$OUT"/*.txt "$OUT"/*.log "$OUT"/*.pprof
WORK=$(mktemp -d "${TMPDIR:-/tmp}/flashsale-bench.XXXXXX")
start_redis
go build -o "$FLASHSALE" .
go build -o "$BAREHTTP" ./hack/barehttp
note "bin/flashsale, bin/barehttp built; $(go version | awk '{print $3}')"
note "private $(redis-server --version | awk '{print $1, $2, $3}') on $REDIS_ADDR, pid $REDIS_PID"
NCPU=$(nproc)
note "machine: $NCPU CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) before the bench"
note "NOTE: every load run shares these $NCPU CPUs between the load generator (wrk or"
note "      redis-benchmark), the server under test and Redis: the figures are"
note "      lower bounds of a real deployment and only their ratios are meant to travel."

KEYFILE="$WORK/token.key"
printf 'hex:%s\n' "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >"$KEYFILE"
SALEFILE="$WORK/sale.yaml"
sed "s/__NAMESPACE__/$NS/" "$TEMPLATE" >"$SALEFILE"
"$FLASHSALE" warm --file "$SALEFILE" --redis-addr "$REDIS_ADDR" | sed 's/^/   /'

# Keys of a SKU (the hash tag is the SKU).
k() { echo "fs:{$SALE/$1}:$2"; }

SHA=$(sha1sum "$ROOT/runtime/sale/purchase/purchase.lua" | awk '{print $1}')

# ------------------------------------------------------------------ limit ----

# load_script: (re)load the purchase script; Redis names it by SHA-1 of its
# exact bytes (-x passes the file as is). Another user of a shared Redis may
# run SCRIPT FLUSH at any time: this is called before every limit run.
load_script() {
  [[ "$(rcli -x SCRIPT LOAD <"$ROOT/runtime/sale/purchase/purchase.lua")" == "$SHA" ]] ||
    die "SCRIPT LOAD of runtime/sale/purchase/purchase.lua did not return $SHA"
}

# limit_run LABEL CALLS BATCH USERPREFIX REDIS-BENCHMARK-FLAGS...: CALLS
# EVALSHA of the purchase script, BATCH purchases of distinct buyers per
# call (__rand_int__ in each user and token nonce); sets LIMIT_LAST
# (purchases/s) and LIMIT_US (Redis main-thread CPU us per admitted purchase).
# The order numbers are computed in Lua here (the pod computes a buyer's
# first in Go): slightly pessimistic.
limit_run() {
  local label=$1 calls=$2 batch=$3 up=$4
  shift 4
  local now deadline before after stock0 stock1 rps attempt cpu0 cpu1 i
  local as=()
  now=$(date +%s%3N)
  deadline=$((now + 15 * 60 * 1000))
  for ((i = 0; i < batch; i++)); do
    as+=("n${up}__rand_int__" "${up}__rand_int__" 1 "$now" "$deadline" 1.00 "")
  done
  for attempt in 1 2; do
    load_script
    before=$(rcli HLEN "$(k lim holders)")
    stock0=$(rcli GET "$(k lim stock)")
    cpu0=$(redis_cpu_us)
    if redis-benchmark -h "$REDIS_HOST" -p "$REDIS_PORT" -n "$calls" -r 1000000000 --csv "$@" \
      EVALSHA "$SHA" 7 \
      "$(k lim stock)" "$(k lim holders)" "$(k lim seq)" "$(k lim orders:stream)" \
      "$(k lim expiry)" "$(k lim orders)" "$(k lim tokens)" "$SALE" lim "" "${as[@]}" >"$OUT/limit-$label.txt" 2>&1; then
      break
    fi
    note "$label: redis-benchmark failed: $(grep -m1 -i error "$OUT/limit-$label.txt" || tail -n1 "$OUT/limit-$label.txt")"
    ((attempt == 1)) || die "redis-benchmark $label failed twice"
    note "$label: reloading the script and running again"
  done
  cpu1=$(redis_cpu_us)
  rps=$(tail -n1 "$OUT/limit-$label.txt" | awk -F'","' '{ print $(NF - 6) }')
  [[ "$rps" =~ ^[0-9.]+$ ]] || { cat "$OUT/limit-$label.txt" >&2; die "redis-benchmark $label printed no rate"; }
  rps=$(awk -v r="$rps" -v b="$batch" 'BEGIN { printf "%.0f", r * b }')
  after=$(rcli HLEN "$(k lim holders)")
  stock1=$(rcli GET "$(k lim stock)")
  local buyers=$((after - before)) sold=$((stock0 - stock1)) purchases=$((calls * batch))
  LIMIT_US=$(per_unit "$cpu0" "$cpu1" "$sold")
  note "$label: $rps purchases/s ($batch per call); $purchases purchases -> $buyers distinct buyers in holders (HLEN), stock moved $sold; Redis $LIMIT_US us CPU per purchase"
  if ((buyers * 100 < purchases * 99)); then
    fail "limit $label: only $buyers distinct buyers for $purchases purchases (< 99%): __rand_int__ did not make buyers distinct"
  fi
  if ((sold != buyers)); then
    fail "limit $label: stock moved $sold but $buyers buyers were recorded"
  fi
  LIMIT_LAST=$rps
}

# seed_run CALLS: the seed's script under redis-benchmark -P 16, a distinct
# buyer per call (its users set must grow by >= 99% of the calls, its stock
# and queue by as much); sets SEED_RPS and SEED_US (Redis CPU us per call).
seed_run() {
  local calls=$1 sha stock=fs:{$NS/seed}:stock users=fs:{$NS/seed}:users queue=fs:{$NS/seed}:queue
  sha=$(rcli -x SCRIPT LOAD <"$ROOT/hack/bench/seed.lua")
  rcli SET "$stock" 1000000000 >/dev/null
  local cpu0 cpu1 n s q
  cpu0=$(redis_cpu_us)
  # The payload is an order message of the size ours carries in its stream entry.
  redis-benchmark -h "$REDIS_HOST" -p "$REDIS_PORT" -n "$calls" -r 1000000000 --csv -c 50 -P 16 \
    EVALSHA "$sha" 3 "$stock" "$users" "$queue" "s__rand_int__" \
    "{\"order\":\"seed-__rand_int__\",\"sale\":\"$SALE\",\"sku\":\"seed\",\"user\":\"s__rand_int__\",\"n\":1,\"amount\":\"1.00\",\"at\":1700000000000,\"deadline\":1700000900000}" \
    >"$OUT/seed.txt" 2>&1 || { cat "$OUT/seed.txt" >&2; die "redis-benchmark of the seed script failed"; }
  cpu1=$(redis_cpu_us)
  # The rate is the 7th field from the end: the test name (the command) has commas.
  SEED_RPS=$(tail -n1 "$OUT/seed.txt" | awk -F'","' '{ print $(NF - 6) }')
  [[ "$SEED_RPS" =~ ^[0-9.]+$ ]] || { cat "$OUT/seed.txt" >&2; die "redis-benchmark of the seed script printed no rate"; }
  n=$(rcli SCARD "$users")
  s=$((1000000000 - $(rcli GET "$stock")))
  q=$(rcli LLEN "$queue")
  SEED_US=$(per_unit "$cpu0" "$cpu1" "$n")
  note "seed: $SEED_RPS calls/s; $calls calls -> $n distinct buyers, stock moved $s, queue $q; Redis $SEED_US us CPU per purchase"
  ((n * 100 >= calls * 99)) || fail "seed: only $n distinct buyers for $calls calls (< 99%)"
  ((s == n && q == n)) || fail "seed: stock moved $s, queue $q, but $n buyers were recorded"
  rcli UNLINK "$stock" "$users" "$queue" >/dev/null
}

log "seed: redis-benchmark EVALSHA of the seed's 5-command script (hack/bench/seed.lua), -P 16, distinct buyer per call"
seed_run "$LIMIT_CALLS"

log "limit: redis-benchmark EVALSHA of the purchase script ($SHA), distinct buyer per call"
limit_run pipelined "$LIMIT_CALLS" 1 lp -c 50 -P 16
LIMIT_RPS=$LIMIT_LAST
LIMIT_PIPE_US=$LIMIT_US
limit_run unpipelined "$LIMIT_CALLS_NOPIPE" 1 lu -c 50
LIMIT_NOPIPE_RPS=$LIMIT_LAST
limit_run batched "$((LIMIT_CALLS / 16))" 16 lb -c 50 -P 16
LIMIT_BATCH_RPS=$LIMIT_LAST
LIMIT_BATCH_US=$LIMIT_US
note "unlinked $(unlink_pattern "fs:{$SALE/lim}:*") keys of SKU lim (the HTTP runs start on a small dataset too; re-warmed)"
"$FLASHSALE" warm --file "$SALEFILE" --redis-addr "$REDIS_ADDR" >/dev/null # the server wants every SKU warmed

# ------------------------------------------------------------ seckill API ----

PURCHASE_PATH="/api/v1/sales/$SALE/purchase"

# start_seckill AUTOPIPELINE: starts a server; sets SK_ADDR, SK_DEBUG, SK_PID.
start_seckill() {
  local ap=$1 logf="$OUT/seckill-autopipeline-$1.log"
  SK_DEBUG="127.0.0.1:$(free_port)"
  # --metrics-addr '': /readyz and /metrics on the API's port, one port to find.
  "$FLASHSALE" seckill --file "$SALEFILE" --redis-addr "$REDIS_ADDR" --listen 127.0.0.1:0 --metrics-addr '' \
    --token-key-file "$KEYFILE" --redis-autopipeline="$ap" --debug-addr "$SK_DEBUG" >"$logf" 2>&1 &
  SK_PID=$!
  SERVER_PID=$SK_PID
  PIDS+=("$SK_PID")
  SK_ADDR=$(wait_addr "$logf" "$SK_PID" '.*msg="Serving the purchase API".* addr=([0-9.:]+).*')
  wait_ready "http://$SK_ADDR/readyz" "$SK_PID"
  note "seckill --redis-autopipeline=$ap: pid $SK_PID, api $SK_ADDR, pprof $SK_DEBUG"
}

# tokens PREFIX N [SKU]: mints N tokens of SKU (b1) for users
# PREFIX0..PREFIX(N-1), split into one file per wrk thread; prints the file
# prefix. A token is valid for its own SKU only: the sold-out run needs
# tokens of the sold-out SKU, or it measures BAD_TOKEN refusals.
tokens() {
  local f="$WORK/tokens-$1"
  "$FLASHSALE" token --file "$SALEFILE" --sku "${3:-b1}" --users "$2" --user-prefix "$1" --token-key-file "$KEYFILE" >"$f"
  split -n "l/$THREADS" -d -a 1 "$f" "$f."
  rm -f "$f"
  echo "$f"
}

# CPU accounting of a run, in clock ticks: all CPUs busy and total (from
# /proc/stat), the server under test, Redis (when local), and this shell's
# reaped children (wrk). Tells how much CPU other processes of the machine
# took during a run: they share the same cores and skew the figures.
proc_ticks() { # PID: utime+stime, 0 when unknown
  if [[ -n "$1" && -r "/proc/$1/stat" ]]; then awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; else echo 0; fi
}
cpu_snap() {
  echo "$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat)" \
    "$(proc_ticks "$SERVER_PID")" "$(proc_ticks "$REDIS_PID")" \
    "$(awk '{ sub(/^.*\) /, ""); print $14 + $15 }' "/proc/$$/stat")"
}
cpu_line() { # BEFORE AFTER: "wrk X, server Y, redis Z, other W, idle I" in cores
  awk -v n="$NCPU" -v a="$1" -v b="$2" 'BEGIN {
    split(a, x, " "); split(b, y, " ")
    wall = (y[2] - x[2]) / n; if (wall <= 0) { print "n/a"; exit }
    busy = y[1] - x[1]; srv = y[3] - x[3]; rds = y[4] - x[4]; gen = y[5] - x[5]
    other = busy - srv - rds - gen; if (other < 0) other = 0
    printf "wrk %.2f, server %.2f, redis %.2f, other processes %.2f, idle %.2f\n", gen / wall, srv / wall, rds / wall, other / wall, n - busy / wall
    printf "BENCH cpu_server %.3f\nBENCH cpu_redis %.3f\nBENCH cpu_wrk %.3f\nBENCH cpu_other %.3f\n", srv / wall, rds / wall, gen / wall, other / wall
  }'
}
SERVER_PID=""

# run_wrk NAME SECONDS URL TOKENS SKU MODE EXPECT: runs wrk against the server
# SERVER_PID; raw output in bin/bench/NAME.txt; the BENCH lines are then read
# with field NAME KEY.
run_wrk() {
  local name=$1 secs=$2 url=$3 c0 c1
  shift 3
  c0=$(cpu_snap)
  wrk -t"$THREADS" -c"$CONNS" -d"${secs}s" --latency -s "$LUA" "$url" -- "$@" >"$OUT/$name.txt" 2>&1 ||
    { cat "$OUT/$name.txt" >&2; die "wrk $name failed"; }
  c1=$(cpu_snap)
  grep -q '^BENCH rps ' "$OUT/$name.txt" || { cat "$OUT/$name.txt" >&2; die "wrk $name printed no summary"; }
  cpu_line "$c0" "$c1" | sed '1s/^/BENCH cpu /' >>"$OUT/$name.txt"
}
field() { # NAME KEY [DEFAULT]
  awk -v k="$2" -v d="${3:-0}" '$1 == "BENCH" && $2 == k { v = $3; found = 1 } END { print found ? v : d }' "$OUT/$1.txt"
}
ms() { awk -v us="$1" 'BEGIN { printf "%.2f", us / 1000 }'; }
# expect_all NAME STATUS: fails the bench unless every answer of the wrk run
# NAME had STATUS (and there were answers): a run whose answers are
# something else measured something else.
expect_all() {
  local n=$1 want=$2 got bad
  got=$(field "$n" "status_$want")
  bad=$(field "$n" unexpected)
  ((got > 0)) || fail "$n: no answer was $want (statuses: $(awk '$1 == "BENCH" && $2 ~ /^status_/ { printf "%s=%s ", $2, $3 }' "$OUT/$n.txt"))"
  ((bad == 0)) || fail "$n: $bad of $(field "$n" requests) answers were not $want (see the samples above): the run did not measure what it says"
}

describe() { # NAME: one line about a wrk run, plus every unexpected status
  local n=$1
  note "$n: $(field "$n" rps) req/s, p50 $(ms "$(field "$n" p50_us)") ms, p99 $(ms "$(field "$n" p99_us)") ms, $(field "$n" requests) requests, statuses: $(awk '$1 == "BENCH" && $2 ~ /^status_/ { sub(/status_/, "", $2); printf "%s%s=%s", sep, $2, $3; sep = " " }' "$OUT/$n.txt")"
  local bad sock
  bad=$(field "$n" unexpected)
  sock=$(field "$n" socket_errors)
  note "   CPU in cores of $NCPU: $(sed -n 's/^BENCH cpu //p' "$OUT/$n.txt")"
  ((sock == 0)) || note "   $n: $sock socket errors (connect/read/write/timeout)"
  if ((bad > 0)); then
    awk '$1 == "BENCH" && $2 ~ /^sample_/ { sub(/^BENCH sample_/, ""); print "      sample " $0 }' "$OUT/$n.txt"
  fi
}

metric() { # ADDR NAME-AND-LABELS-PREFIX: sum of the matching samples
  curl -s "http://$1/metrics" | awk -v p="$2" 'index($0, p) == 1 { s += $NF } END { printf "%.0f", s }'
}

# snapshot ADDR: stock, server-side admitted orders, stream length, orders,
# holders of SKU b1 (for the conservation check).
snapshot() {
  echo "$(rcli GET "$(k b1 stock)") $(metric "$1" "flashsale_orders_admitted_total{sale=\"$SALE\",sku=\"b1\"}") $(rcli XLEN "$(k b1 orders:stream)") $(rcli HLEN "$(k b1 orders)") $(rcli HLEN "$(k b1 holders)")"
}

# check_conservation NAME BEFORE AFTER: stock moved by exactly the orders
# made, and by the 202s wrk saw (up to the requests still in flight when wrk
# stopped: the server completes them, wrk no longer reads them).
check_conservation() {
  local n=$1 s0 a0 x0 o0 h0 s1 a1 x1 o1 h1
  read -r s0 a0 x0 o0 h0 <<<"$2"
  read -r s1 a1 x1 o1 h1 <<<"$3"
  local sold=$((s0 - s1)) adm=$((a1 - a0)) xl=$((x1 - x0)) ord=$((o1 - o0)) hol=$((h1 - h0))
  local ok202 reused
  ok202=$(field "$n" status_202)
  reused=$(field "$n" tokens_reused)
  note "$n conservation: stock moved $sold; server admitted $adm; stream +$xl; orders +$ord; holders +$hol; wrk saw $ok202 x 202"
  if ((sold != adm || sold != xl || sold != ord || sold != hol)); then
    fail "$n: stock moved $sold but admitted=$adm stream=$xl orders=$ord holders=$hol (oversell or lost order)"
  fi
  if ((reused > 0)); then
    note "   $n: ran out of tokens: $reused requests reused a token (answered as replays, no new order)"
    if ((ok202 - reused > sold)); then
      fail "$n: $ok202 x 202 minus $reused replays exceeds the $sold units sold"
    fi
  elif ((ok202 > sold)); then
    fail "$n: wrk saw $ok202 x 202 but only $sold units were sold: a 202 without an order"
  elif ((sold - ok202 > CONNS)); then
    fail "$n: $sold units sold but wrk saw only $ok202 x 202 (more than the $CONNS requests in flight at the end)"
  fi
}

# purchase_run AUTOPIPELINE TAG: warm-up, tokens sized from the warm-up rate,
# measured run, conservation check. Leaves the server running.
purchase_run() {
  local ap=$1 tag=$2 wtok ptok rate need before after
  start_seckill "$ap"
  local url="http://$SK_ADDR$PURCHASE_PATH"
  wtok=$(tokens "w$tag-" $((WARMUP * 100000)))
  run_wrk "purchase-$tag-warmup" "$WARMUP" "$url" "$wtok" b1 once 202
  rate=$(field "purchase-$tag-warmup" rps)
  need=$(awk -v r="$rate" -v d="$DURATION" 'BEGIN { n = int(r * d * 1.5) + 50000; if (n < 100000) n = 100000; if (n > 5000000) n = 5000000; print n }')
  ptok=$(tokens "p$tag-" "$need")
  note "warm-up ${WARMUP}s: $rate req/s, statuses $(awk '$1 == "BENCH" && $2 ~ /^status_/ { printf "%s ", $2 "=" $3 }' "$OUT/purchase-$tag-warmup.txt"); minted $need tokens for the ${DURATION}s run"
  before=$(snapshot "$SK_ADDR")
  local cpu0 cpu1
  cpu0=$(redis_cpu_us)
  run_wrk "purchase-$tag" "$DURATION" "$url" "$ptok" b1 once 202
  sleep 0.5 # let the requests wrk abandoned finish on the server
  cpu1=$(redis_cpu_us)
  after=$(snapshot "$SK_ADDR")
  describe "purchase-$tag"
  expect_all "purchase-$tag" 202
  check_conservation "purchase-$tag" "$before" "$after"
  local sold=$(($(echo "$before" | awk '{print $1}') - $(echo "$after" | awk '{print $1}')))
  # Everything the Redis main thread did during the run (the pod's state
  # refresh and heartbeat too: a few calls a second) per admitted purchase.
  printf 'BENCH redis_us_per_purchase %s\n' "$(per_unit "$cpu0" "$cpu1" "$sold")" >>"$OUT/purchase-$tag.txt"
  note "   Redis main thread: $(field "purchase-$tag" redis_us_per_purchase) us CPU per admitted purchase ($sold admitted)"
  LAST_TOKENS=$ptok
}

log "purchase: wrk -t$THREADS -c$CONNS -d${DURATION}s, one fresh token and buyer per request, --redis-autopipeline=true"
purchase_run true apt
AP_ADDR=$SK_ADDR AP_DEBUG=$SK_DEBUG AP_TOKENS=$LAST_TOKENS AP_PID=$SK_PID

log "sold-out: wrk POST purchase of SKU gone with valid tokens of SKU gone (same request shape), against the same server"
SERVER_PID=$SK_PID
# Valid tokens of the sold-out SKU: the answer is the sold-out flag in memory
# plus the replay lookup (one HGET: did this token already buy?).
GONE_TOKENS=$(tokens "g-" 200000 gone)
run_wrk soldout-warmup "$WARMUP" "http://$AP_ADDR$PURCHASE_PATH" "$GONE_TOKENS" gone wrap 410
SO_CPU0=$(redis_cpu_us)
run_wrk soldout "$DURATION" "http://$AP_ADDR$PURCHASE_PATH" "$GONE_TOKENS" gone wrap 410
SO_CPU1=$(redis_cpu_us)
describe soldout
expect_all soldout 410
read -r GONE_USER GONE_TOKEN <"$GONE_TOKENS.0"
grep -q '"SOLD_OUT"' <<<"$(curl -s -X POST -H "X-User-ID: $GONE_USER" -d "{\"sku\":\"gone\",\"token\":\"$GONE_TOKEN\"}" "http://$AP_ADDR$PURCHASE_PATH")" ||
  fail "sold-out: a valid token of SKU gone was not answered SOLD_OUT"
note "   Redis main thread: $(per_unit "$SO_CPU0" "$SO_CPU1" "$(field soldout requests)") us CPU per sold-out answer"

log "purchase: same, --redis-autopipeline=false"
purchase_run false apf
stop_pid "$SK_PID" # idle from now on

log "bare: wrk against hack/barehttp (fixed 410 from plain net/http), same request shape"
"$BAREHTTP" --listen 127.0.0.1:0 >"$OUT/barehttp.log" 2>&1 &
BARE_PID=$!
SERVER_PID=$BARE_PID
PIDS+=("$BARE_PID")
BARE_ADDR=$(wait_addr "$OUT/barehttp.log" "$BARE_PID" '^listening on ([0-9.:]+)$')
run_wrk bare-warmup "$WARMUP" "http://$BARE_ADDR$PURCHASE_PATH" "$GONE_TOKENS" gone wrap 410
run_wrk bare "$DURATION" "http://$BARE_ADDR$PURCHASE_PATH" "$GONE_TOKENS" gone wrap 410
describe bare
expect_all bare 410
stop_pid "$BARE_PID"

# ---------------------------------------------------------------- summary ----

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
short() { awk -v r="$1" -v t="$2" 'BEGIN { exit !(r == "n/a" || r + 0 < t + 0) }'; }
R_PURCHASE=$(ratio "$(field purchase-apt rps)" "$LIMIT_RPS")
R_PURCHASE_F=$(ratio "$(field purchase-apf rps)" "$LIMIT_RPS")
R_PURCHASE_B=$(ratio "$(field purchase-apt rps)" "$LIMIT_BATCH_RPS")
R_SOLDOUT=$(ratio "$(field soldout rps)" "$(field bare rps)")

log "summary (sale $SALE; $NCPU CPUs shared by load generator, server and Redis; load average now $(cut -d' ' -f1-3 /proc/loadavg))"
row() { printf '   %-34s %11s %8s %8s %12s %12s %7s\n' "$@"; }
per_req() { awk -v c="$1" -v r="$2" 'BEGIN { if (r > 0) printf "%.1f", c * 1e6 / r; else print "n/a" }'; }
wrow() {
  row "$1" "$(field "$2" rps)" "$(ms "$(field "$2" p50_us)")" "$(ms "$(field "$2" p99_us)")" \
    "$(per_req "$(field "$2" cpu_server)" "$(field "$2" rps)")" "$(per_req "$(field "$2" cpu_redis)" "$(field "$2" rps)")" "$(field "$2" cpu_other)"
}
row "run" "per second" "p50 ms" "p99 ms" "server us/req" "redis us/req" "other"
row "seed script: EVALSHA -P 16" "$SEED_RPS" "" "" "" "$SEED_US" ""
row "limit: EVALSHA pipelined (-P 16)" "$LIMIT_RPS" "" "" "" "$LIMIT_PIPE_US" ""
row "limit: EVALSHA unpipelined" "$LIMIT_NOPIPE_RPS" "" "" "" "" ""
row "limit: 16 per EVALSHA, -P 16" "$LIMIT_BATCH_RPS" "" "" "" "$LIMIT_BATCH_US" ""
wrow "purchase, autopipeline=true" purchase-apt
wrow "purchase, autopipeline=false" purchase-apf
wrow "sold-out (SKU gone, valid tokens)" soldout
wrow "bare net/http 410" bare
note "(us/req: CPU microseconds per request of the server and of Redis, steadier than req/s"
note " on a shared machine; other: cores taken by processes outside the bench during the run)"
CONTENDED=$(for n in purchase-apt purchase-apf soldout bare; do field "$n" cpu_other; done | awk '$1 > 0.25 { c++ } END { print c + 0 }')
if ((CONTENDED > 0)); then
  note "WARNING: in $CONTENDED of 4 runs, processes outside the bench took more than 0.25 of the"
  note "         $NCPU cores: req/s and the ratios are skewed; rerun on a quiet machine to trust them."
fi
echo
verdict() { if short "$1" "$2"; then echo "SHORT of $2"; else echo "ok (target >= $2)"; fi; }
printf '   %-44s %6s  %s\n' "purchase/limit (autopipeline=true)" "$R_PURCHASE" "$(verdict "$R_PURCHASE" $TARGET_PURCHASE)"
printf '   %-44s %6s  %s\n' "purchase/limit (autopipeline=false)" "$R_PURCHASE_F" "$(verdict "$R_PURCHASE_F" $TARGET_PURCHASE)"
printf '   %-44s %6s  (the limit of 16 purchases per call)\n' "purchase/batched limit (autopipeline=true)" "$R_PURCHASE_B"
printf '   %-44s %6s  %s\n' "sold-out/bare" "$R_SOLDOUT" "$(verdict "$R_SOLDOUT" $TARGET_SOLDOUT)"
echo
note "Redis main-thread CPU per admitted purchase (INFO cpu, private redis-server, this run):"
US_APT=$(field purchase-apt redis_us_per_purchase n/a)
US_APF=$(field purchase-apf redis_us_per_purchase n/a)
printf '   %-44s %6s us\n' "seed's 5-command script, redis-benchmark -P 16" "$SEED_US"
printf '   %-44s %6s us  (%sx the seed)\n' "ours, redis-benchmark -P 16" "$LIMIT_PIPE_US" "$(ratio "$LIMIT_PIPE_US" "$SEED_US")"
printf '   %-44s %6s us  (%sx the seed)\n' "ours, 16 per call, redis-benchmark -P 16" "$LIMIT_BATCH_US" "$(ratio "$LIMIT_BATCH_US" "$SEED_US")"
printf '   %-44s %6s us  (%sx the seed)\n' "ours through the API, autopipeline=true" "$US_APT" "$(ratio "$US_APT" "$SEED_US")"
printf '   %-44s %6s us  (%sx the seed)\n' "ours through the API, autopipeline=false" "$US_APF" "$(ratio "$US_APF" "$SEED_US")"
# The figure `flashsale plan` sizes shards with, next to what this run measured:
# one core at US_APT us per purchase admits 1e6/US_APT purchases/s; the budget is about half that.
BUDGET=$("$FLASHSALE" plan --help | sed -n 's/.*--shard-budget int .*(default \([0-9]*\)).*/\1/p')
per_core() { awk -v u="$1" -v f="$2" 'BEGIN { if (u + 0 > 0) printf "%.0f", f * 1e6 / u; else print "n/a" }'; }
note "plan figures: per-shard budget $BUDGET purchases/s (flashsale plan --shard-budget); this run: one Redis core at $US_APT us/purchase admits $(per_core "$US_APT" 1)/s, half a core $(per_core "$US_APT" 0.5)/s"
printf 'BENCH-SUMMARY seed_us %s ours_limit_us %s ours_batch16_us %s ours_api_us %s ratio %s purchase_rps %s purchase_p99_ms %s purchase_per_limit %s\n' \
  "$SEED_US" "$LIMIT_PIPE_US" "$LIMIT_BATCH_US" "$US_APT" "$(ratio "$US_APT" "$SEED_US")" "$(field purchase-apt rps)" "$(ms "$(field purchase-apt p99_us)")" "$R_PURCHASE"

# ---------------------------------------------------------------- cluster ----

# One SKU with 1 and 3 buckets on a local 3-master Redis Cluster (processes
# started by testutil.RedisCluster), through the seckill handler in-process:
# purchases/s and each primary's main-thread CPU per purchase. With 3 buckets
# the busiest primary must not work more than twice the idlest.
log "cluster: one SKU, 1 vs 3 buckets, on a local 3-master Redis Cluster (BenchmarkBucketsOnCluster)"
if go test ./runtime/seckill/ -run '^$' -bench BenchmarkBucketsOnCluster -benchtime "${BENCH_CLUSTER_N:-30000}x" \
  -count 1 -timeout 10m >"$OUT/cluster.txt" 2>&1; then
  grep -E '^(Benchmark|    buckets_bench_test)' "$OUT/cluster.txt" | sed 's/^/   /'
  SPREAD=$(awk '$1 ~ /buckets=3/ { for (i = 1; i < NF; i++) { if ($(i+1) == "busiest-shard-µs/purchase") hi = $i; if ($(i+1) == "idlest-shard-µs/purchase") lo = $i } }
    END { if (lo > 0) printf "%.2f", hi / lo; else print "n/a" }' "$OUT/cluster.txt")
  note "3 buckets: busiest/idlest primary CPU per purchase = $SPREAD"
  awk -v r="$SPREAD" 'BEGIN { exit !(r != "n/a" && r + 0 <= 2) }' ||
    fail "cluster: with 3 buckets the busiest primary worked $SPREAD x the idlest (> 2): the load did not spread"
else
  tail -n 30 "$OUT/cluster.txt" | sed 's/^/   /'
  fail "cluster: BenchmarkBucketsOnCluster failed (output above, all of it in $OUT/cluster.txt)"
fi

# --------------------------------------------------------------- profiles ----

# profile NAME TOKENS SKU MODE EXPECT: a 10 s CPU profile of the autopipeline
# server during a wrk run of that kind; prints its top entries.
profile() {
  local name=$1 tok=$2 sku=$3 mode=$4 expect=$5 file="$OUT/$1.cpu.pprof"
  curl -s -o "$file" "http://$AP_DEBUG/debug/pprof/profile?seconds=10" &
  local cpid=$!
  PIDS+=("$cpid")
  SERVER_PID=$AP_PID
  run_wrk "$name-profiled" 11 "http://$AP_ADDR$PURCHASE_PATH" "$tok" "$sku" "$mode" "$expect"
  wait "$cpid" || true
  if [[ ! -s "$file" ]] || ! go tool pprof -top -nodecount=25 "$FLASHSALE" "$file" >"$OUT/$name.top.txt" 2>&1; then
    fail "no CPU profile from $AP_DEBUG (see $OUT/$name.top.txt)"
    return
  fi
  note "$name: $(field "$name-profiled" rps) req/s while profiled (CPU in cores: $(sed -n 's/^BENCH cpu //p' "$OUT/$name-profiled.txt")); profile $file; top 25 (also in $OUT/$name.top.txt):"
  sed 's/^/      /' "$OUT/$name.top.txt"
}

want_profile() { [[ "$PROFILE" == always ]] || { [[ "$PROFILE" == auto ]] && short "$1" "$2"; }; }
if want_profile "$R_PURCHASE" $TARGET_PURCHASE; then
  log "profile: purchase run (autopipeline=true), 10 s CPU profile"
  XTOK=$(tokens "x-" "$(awk -v r="$(field purchase-apt rps)" 'BEGIN { printf "%d", r * 11 * 1.5 + 50000 }')")
  profile purchase "$XTOK" b1 once 202
fi
if want_profile "$R_SOLDOUT" $TARGET_SOLDOUT; then
  log "profile: sold-out run, 10 s CPU profile"
  profile soldout "$GONE_TOKENS" gone wrap 410
fi

log "done in $((SECONDS - T0)) s; raw outputs in bin/bench/"
if ((${#FAILURES[@]} > 0)); then
  printf '   %d check(s) FAILED:\n' "${#FAILURES[@]}"
  printf '    - %s\n' "${FAILURES[@]}"
  exit 1
fi
note "all correctness checks passed (distinct buyers, conservation, statuses)"
