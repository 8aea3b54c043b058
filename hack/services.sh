#!/usr/bin/env bash
# Start the local services the tests use, if they are not already up:
#   Redis   on 127.0.0.1:6379 (no persistence)
#   MariaDB on 127.0.0.1:3306, user root with an empty password over TCP
#
#   bash hack/services.sh
#
# Idempotent: when both answer it only prints their versions. Installs
# redis-server / mariadb-server with apt when they are missing. Needs root
# (uses sudo when run as another user). .ci/run calls it.
set -euo pipefail

REDIS_HOST=127.0.0.1
REDIS_PORT="${REDIS_PORT:-6379}"
MYSQL_HOST=127.0.0.1
REDIS_DIR=/var/lib/redis
REDIS_LOG="${REDIS_LOG:-/var/log/redis/ci.log}"
MARIADB_LOG=/var/log/mysql/error.log

log() { echo "hack/services.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

source "$(dirname "${BASH_SOURCE[0]}")/lib/sys.sh"


# wait_for SECONDS WHAT CMD...: retry CMD every half second until it succeeds.
wait_for() {
  local secs=$1 what=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      return 1
    fi
    sleep 0.5
  done
  log "${what} is up"
}

redis_up() { [[ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; }
mariadb_up() { mysqladmin -uroot -h"$MYSQL_HOST" --protocol=TCP --connect-timeout=2 ping >/dev/null 2>&1; }
# mysqladmin ping succeeds even when the login is refused; this checks the login.
mariadb_login() { mysql -uroot -h"$MYSQL_HOST" --protocol=TCP --connect-timeout=2 -e 'SELECT 1' >/dev/null 2>&1; }

# --- packages ---------------------------------------------------------------
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v mariadbd >/dev/null || [[ -x /usr/sbin/mariadbd ]] || missing+=(mariadb-server)
command -v mysqladmin >/dev/null || missing+=(mariadb-client)
if ((${#missing[@]})); then
  apt_install "${missing[@]}"
fi

# --- Redis ------------------------------------------------------------------
if ! redis_up; then
  log "starting redis-server on ${REDIS_HOST}:${REDIS_PORT}"
  as_root mkdir -p "$REDIS_DIR" "$(dirname "$REDIS_LOG")"
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" \
    --save "" --appendonly no --dir "$REDIS_DIR" --logfile "$REDIS_LOG"
  if ! wait_for 30 "Redis" redis_up; then
    as_root tail -n 30 "$REDIS_LOG" >&2 || true
    die "Redis did not answer on ${REDIS_HOST}:${REDIS_PORT} within 30 s (log above: ${REDIS_LOG})"
  fi
fi

# --- MariaDB ----------------------------------------------------------------
if ! mariadb_up; then
  log "starting mariadbd"
  as_root mkdir -p /run/mysqld "$(dirname "$MARIADB_LOG")"
  as_root chown mysql:mysql /run/mysqld "$(dirname "$MARIADB_LOG")"
  if [[ ! -d /var/lib/mysql/mysql ]]; then
    log "initializing the MariaDB data directory /var/lib/mysql"
    as_root mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  fi
  as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- \
    --user=mysql --log-error="$MARIADB_LOG"
  if ! wait_for 60 "MariaDB" mariadb_up; then
    as_root tail -n 30 "$MARIADB_LOG" >&2 || true
    die "MariaDB did not answer on ${MYSQL_HOST}:3306 within 60 s (log above: ${MARIADB_LOG}); is it configured with skip-networking or another port?"
  fi
fi

# A fresh Debian install lets root in only over the Unix socket (unix_socket
# auth); the tests log in over TCP with an empty password.
if ! mariadb_login; then
  log "allowing root to log in over TCP with an empty password"
  as_root mysql -uroot --protocol=SOCKET <<'SQL'
ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('');
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
CREATE USER IF NOT EXISTS 'root'@'::1' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'::1' WITH GRANT OPTION;
FLUSH PRIVILEGES;
SQL
  mariadb_login || die "root still cannot log in to MariaDB over TCP with an empty password"
fi

# The test packages run in parallel, each with its own connection pools (and
# a local cluster's pods may be connected too): MariaDB's default of 151
# connections was seen exhausted ("Error 1040: Too many connections"). Raise
# it for this server's lifetime; a higher setting is kept.
mysql -uroot -h"$MYSQL_HOST" --protocol=TCP -e 'SET GLOBAL max_connections = GREATEST(@@GLOBAL.max_connections, 1000)' ||
  die "could not raise MariaDB's max_connections"

log "Redis   $(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" info server | tr -d '\r' | awk -F: '$1 == "redis_version" { print $2 }') on ${REDIS_HOST}:${REDIS_PORT}"
log "MariaDB $(mysql -uroot -h"$MYSQL_HOST" --protocol=TCP -N -B -e 'SELECT VERSION()') on ${MYSQL_HOST}:3306"
