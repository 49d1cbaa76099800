# Sourced by the project's service scripts: their one way to log, fail and insist on root.
# Needs LOG_PREFIX (the script's name in its messages) and ROOT_REASON (what root is needed for).
# shellcheck shell=bash
log() { echo "$LOG_PREFIX: $*" >&2; }
die() {
  log "error: $*"
  exit 1
}
need_root() { [ "$(id -u)" -eq 0 ] || die "must run as root ($ROOT_REASON)"; }
timed() { # timed LABEL CMD...: run, then print how long it took
  local label=$1 t0=$SECONDS
  shift
  "$@"
  log "$label: $((SECONDS - t0)) s"
}
