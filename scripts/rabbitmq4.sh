#!/usr/bin/env bash
# A RabbitMQ 4.3 node of the project's own, next to the machine's RabbitMQ 3.10 (which this never touches).
#
#   scripts/rabbitmq4.sh setup        build the chroot (Debian sid + rabbitmq-server 4.3.x), once
#   scripts/rabbitmq4.sh start        start the node (idempotent) and wait until it serves AMQP
#   scripts/rabbitmq4.sh stop         stop this node only
#   scripts/rabbitmq4.sh ctl ARGS...  this node's rabbitmqctl (in the chroot, with the node's environment)
#   scripts/rabbitmq4.sh status       exit 0 when the node is running and booted
#
# The chroot lives outside the work tree (SENDPIPE_RMQ4_ROOT, default /var/lib/sendpipe/rabbitmq4-sid) so
# every clone on the machine reuses it. The node: sendpipe43@localhost, AMQP 127.0.0.1:5682, distribution
# 127.0.0.1:25682, its own epmd on port 4380 (ERL_EPMD_PORT; the machine's epmd on 4369 is left alone),
# its own cookie, data and logs under /var/lib/sendpipe43 inside the chroot, and a rabbitmq.conf with
# upstream 4.3's defaults (Debian's package permits transient non-exclusive queues; upstream does not).
# Runs as root (debootstrap, chroot). The Debian wrappers switch to the `rabbitmq` user: the real scripts
# in /usr/lib/rabbitmq/bin are called directly, as root, with HOME set.
set -euo pipefail

ROOT="${SENDPIPE_RMQ4_ROOT:-/var/lib/sendpipe/rabbitmq4-sid}"
MIRROR="${SENDPIPE_RMQ4_MIRROR:-http://deb.debian.org/debian}"
MARKER="$ROOT/.sendpipe-rabbitmq4-ready"
NODE="sendpipe43@localhost"
PID_NAME=sendpipe43.pid
AMQP_PORT=5682
DIST_PORT=25682
EPMD_PORT=4380
BASE=/var/lib/sendpipe43 # inside the chroot
START_TIMEOUT_S=60

LOG_PREFIX=rabbitmq4 ROOT_REASON="debootstrap and chroot"
# shellcheck source=scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# --- setup -----------------------------------------------------------------------------------------

# Mount points left under ROOT by an interrupted debootstrap (proc, sys, ...): unmount before removing.
umount_under_root() {
  local mounts
  mounts=$(awk -v root="$ROOT" '$2 == root || index($2, root "/") == 1 { print $2 }' /proc/mounts | sort -r)
  if [ -n "$mounts" ]; then
    while IFS= read -r m; do umount -l "$m" || die "cannot unmount $m"; done <<<"$mounts"
  fi
}

installed_version() {
  chroot "$ROOT" dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null | cut -d- -f1
}

check_version() {
  local version=$1 major minor
  major=${version%%.*}
  minor=${version#*.}
  minor=${minor%%.*}
  [[ $major =~ ^[0-9]+$ && $minor =~ ^[0-9]+$ ]] || die "cannot read the rabbitmq-server version ('$version')"
  if [ "$major" -ne 4 ] || [ "$minor" -lt 3 ]; then
    die "rabbitmq-server $version in $ROOT: need 4.x >= 4.3 (Debian sid moved on?)"
  fi
}

setup() {
  need_root
  if [ -f "$MARKER" ]; then
    return 0
  fi
  local started=$SECONDS
  if [ -e "$ROOT" ]; then
    log "removing the half-built chroot $ROOT (no $(basename "$MARKER"))"
    stop_quietly_from_chroot
    umount_under_root
    rm -rf --one-file-system "$ROOT"
  fi
  if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null 2>&1 || {
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    }
  fi
  mkdir -p "$(dirname "$ROOT")"
  log "debootstrap sid into $ROOT (about 30 s)"
  debootstrap --variant=minbase sid "$ROOT" "$MIRROR" >"$(dirname "$ROOT")/debootstrap.log" 2>&1 || {
    tail -n 30 "$(dirname "$ROOT")/debootstrap.log" >&2
    die "debootstrap failed (log: $(dirname "$ROOT")/debootstrap.log)"
  }
  printf '#!/bin/sh\n# sendpipe: no service starts inside this chroot\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
  chmod 755 "$ROOT/usr/sbin/policy-rc.d"
  # Without it the node cannot resolve its own host name: "epmd error for host localhost: nxdomain".
  printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"
  log "installing rabbitmq-server in the chroot"
  chroot "$ROOT" apt-get -qq -o Acquire::Check-Valid-Until=false update
  chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    rabbitmq-server >"$(dirname "$ROOT")/apt.log" 2>&1 || {
    tail -n 30 "$(dirname "$ROOT")/apt.log" >&2
    die "apt-get install rabbitmq-server failed in the chroot"
  }
  chroot "$ROOT" apt-get -qq clean
  local version
  version=$(installed_version)
  check_version "$version"
  echo "$version" >"$MARKER"
  log "rabbitmq-server $version ready in $ROOT ($((SECONDS - started)) s)"
}

# --- the node ----------------------------------------------------------------------------------------

require_setup() {
  [ -f "$MARKER" ] || die "$ROOT is not set up: run scripts/rabbitmq4.sh setup"
}

# shellcheck source=scripts/rabbitmq-node-env.sh
. "$(dirname "${BASH_SOURCE[0]}")/rabbitmq-node-env.sh"

# Run a command in the chroot with the node's environment (and nothing of the caller's).
in_chroot() {
  node_env_vars
  chroot "$ROOT" /usr/bin/env -i "${NODE_ENV[@]}" "$@"
}

ctl() {
  require_setup
  in_chroot /usr/lib/rabbitmq/bin/rabbitmqctl -n "$NODE" "$@"
}

# Is the Erlang node up at all (booted or not)?
node_alive() {
  in_chroot /usr/lib/rabbitmq/bin/rabbitmq-diagnostics -n "$NODE" -q ping >/dev/null 2>&1
}

write_node_files() {
  local base="$ROOT$BASE"
  mkdir -p "$base/mnesia" "$base/log"
  chmod 700 "$base"
  if [ ! -s "$base/.erlang.cookie" ]; then
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$base/.erlang.cookie")
  fi
  chmod 400 "$base/.erlang.cookie"
  : >"$base/rabbitmq-env.conf"
  echo "[]." >"$base/enabled_plugins"
  echo "[]." >"$base/advanced.config"
  cat >"$base/rabbitmq.conf" <<EOF
# sendpipe's RabbitMQ 4.3 test node (scripts/rabbitmq4.sh). Upstream 4.3 defaults where Debian differs.
listeners.tcp.1 = 127.0.0.1:$AMQP_PORT
deprecated_features.permit.transient_nonexcl_queues = false
loopback_users.guest = true
log.file.level = info
log.console = false
EOF
}

amqp_port_answers() {
  # An AMQP server answers a wrong protocol header with its own ("AMQP\0\0\t\1") and closes.
  timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$AMQP_PORT && printf 'XXXX\r\n\r\n' >&3 && head -c 4 <&3" 2>/dev/null |
    grep -q AMQP
}

running() {
  ctl -q await_startup --timeout 1 >/dev/null 2>&1
}

start() {
  need_root
  require_setup
  if running && amqp_port_answers; then
    return 0
  fi
  local started=$SECONDS
  write_node_files
  # The node's memory monitor reads /proc (meminfo, its own statm); disk monitoring runs df.
  mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
  if ! node_alive; then
    ulimit -n 65536 2>/dev/null || ulimit -n 4096 2>/dev/null || log "warning: nofile limit stays $(ulimit -n)"
    log "starting $NODE (AMQP 127.0.0.1:$AMQP_PORT, epmd $EPMD_PORT)"
    # -detached can fail silently: its output goes to a file, the node's log says why.
    in_chroot /usr/lib/rabbitmq/bin/rabbitmq-server -detached >"$ROOT$BASE/log/startup.log" 2>&1 ||
      {
        cat "$ROOT$BASE/log/startup.log" >&2
        die "rabbitmq-server -detached failed"
      }
  fi
  local deadline=$((SECONDS + START_TIMEOUT_S))
  while [ $SECONDS -lt $deadline ]; do
    if ctl -q await_startup --timeout 5 >/dev/null 2>&1 && amqp_port_answers; then
      log "$NODE is up ($((SECONDS - started)) s)"
      return 0
    fi
    sleep 1
  done
  log "node log tail:"
  tail -n 40 "$ROOT$BASE/log/$NODE.log" >&2 2>/dev/null || true
  cat "$ROOT$BASE/log/startup.log" >&2 2>/dev/null || true
  [ -f "$ROOT$BASE/log/erl_crash.dump" ] && head -n 3 "$ROOT$BASE/log/erl_crash.dump" >&2
  die "$NODE did not come up within $START_TIMEOUT_S s"
}

stop_quietly_from_chroot() {
  if [ -x "$ROOT/usr/lib/rabbitmq/bin/rabbitmqctl" ] && [ -d "$ROOT$BASE" ]; then
    in_chroot /usr/lib/rabbitmq/bin/rabbitmqctl -n "$NODE" -q stop >/dev/null 2>&1 || true
  fi
}

stop() {
  need_root
  require_setup
  if node_alive; then
    log "stopping $NODE"
    ctl -q stop
  fi
  if mountpoint -q "$ROOT/proc"; then umount "$ROOT/proc" || umount -l "$ROOT/proc"; fi
}

status() {
  require_setup
  if running; then
    echo "$NODE: running, rabbitmq-server $(cat "$MARKER"), amqp://guest:guest@127.0.0.1:$AMQP_PORT/"
  else
    echo "$NODE: not running (rabbitmq-server $(cat "$MARKER") in $ROOT)"
    return 3
  fi
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  setup) setup ;;
  start) start ;;
  stop) stop ;;
  ctl) ctl "$@" ;;
  status) status ;;
  *)
    echo "usage: $0 setup | start | stop | ctl ARGS... | status" >&2
    exit 2
    ;;
esac
