#!/usr/bin/env bash
# Install what the browser test (test/browser) needs, when it is missing:
#   Debian's Chromium (/usr/bin/chromium), Node.js and npm  (apt-get)
#   playwright-core as pinned in test/browser/package-lock.json  (npm ci)
#
#   bash hack/browser.sh        (or `make browser-deps`; `make test` runs it)
#
# Idempotent: with everything in place it only checks. npm ci runs when
# test/browser/node_modules is missing or was installed from another
# package-lock.json (a checksum kept in node_modules says which). Needs root
# for apt-get (uses sudo when run as another user). playwright-core never
# downloads a browser of its own: the test drives /usr/bin/chromium.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib/sys.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DIR=test/browser
STAMP="$DIR/node_modules/.package-lock.sha256"
NODE_MAJOR_MIN=20 # playwright-core's engines

log() { echo "hack/browser.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ensure_packages installs the Debian packages of whatever is missing.
ensure_packages() {
  local missing=()
  [[ -x /usr/bin/chromium ]] || missing+=(chromium)
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  ((${#missing[@]})) || return 0
  apt_install "${missing[@]}"
  [[ -x /usr/bin/chromium ]] || die "/usr/bin/chromium still missing after apt-get install chromium"
  command -v node >/dev/null && command -v npm >/dev/null || die "node or npm still missing after apt-get install"
}

check_node() {
  local major
  major="$(node -p 'process.versions.node.split(".")[0]')"
  ((major >= NODE_MAJOR_MIN)) || die "node $(node --version) is too old for playwright-core (needs >= $NODE_MAJOR_MIN)"
}

# ensure_modules runs npm ci when node_modules does not match package-lock.json.
ensure_modules() {
  local want
  want="$(sha256sum "$DIR/package-lock.json" | cut -d' ' -f1)"
  if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -f "$DIR/node_modules/playwright-core/package.json" ]]; then
    return 0
  fi
  log "npm ci in $DIR (playwright-core as package-lock.json pins it)"
  (cd "$DIR" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >&2)
  echo "$want" >"$STAMP"
}

ensure_packages
check_node
ensure_modules
log "ready: $(/usr/bin/chromium --version 2>/dev/null | head -n1), node $(node --version), playwright-core $(node -p "require('./$DIR/node_modules/playwright-core/package.json').version")"
