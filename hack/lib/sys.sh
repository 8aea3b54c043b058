# Sourced by hack scripts that install or start system services. The caller
# defines log and die first.

# as_root CMD...: run CMD as root (directly, or with sudo).
as_root() {
  if [[ $EUID -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    die "need root to run: $*"
  fi
}

# apt_install PKG...: install Debian packages without prompting.
apt_install() {
  log "installing with apt: $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" </dev/null >/dev/null
}
