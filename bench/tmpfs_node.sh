#!/usr/bin/env bash
# A bench-only RabbitMQ 4.3 node whose data directory is on tmpfs: the project's node without the disk.
#
#   bench/tmpfs_node.sh start        mount the tmpfs, start the node, wait until it serves AMQP (<= 60 s)
#   bench/tmpfs_node.sh stop         stop the node, its epmd, unmount the tmpfs (idempotent, bounded)
#   bench/tmpfs_node.sh ctl ARGS...  its rabbitmqctl
#   bench/tmpfs_node.sh status       exit 0 when it is running and booted
#
# bench.latency starts and stops it around its run, to tell the disk's share of 4.3's publish -> delivery
# latency from the rest: quorum queues fsync their WAL before they confirm and deliver, and an fsync on
# tmpfs costs nothing. Same chroot (scripts/rabbitmq4.sh setup), same packages and the same rabbitmq.conf
# settings as the project's node (sendpipe43@localhost, 5682), which this never touches, nor the
# machine's 3.10 (5672): sendpipe43mem@localhost, AMQP 127.0.0.1:5702, distribution 127.0.0.1:25702, an
# epmd of its own on 4400 (killed by stop), its own cookie, data and logs under /var/lib/sendpipe43mem in
# the chroot, a tmpfs mounted there by start and unmounted by stop. Runs as root (mount, chroot).
set -euo pipefail

ROOT="${SENDPIPE_RMQ4_ROOT:-/var/lib/sendpipe/rabbitmq4-sid}"
MARKER="$ROOT/.sendpipe-rabbitmq4-ready"
NODE="sendpipe43mem@localhost"
PID_NAME=sendpipe43mem.pid
AMQP_PORT="${SENDPIPE_TMPFS_AMQP_PORT:-5702}"
DIST_PORT=$((AMQP_PORT + 20000))
EPMD_PORT="${SENDPIPE_TMPFS_EPMD_PORT:-4400}"
BASE=/var/lib/sendpipe43mem # inside the chroot; the tmpfs
TMPFS_SIZE="${SENDPIPE_TMPFS_SIZE:-3g}" # the quorum WAL rolls over at 512 MiB; segments follow it
PROC_FLAG="$ROOT/var/lib/.sendpipe43mem-mounted-proc" # start mounted the chroot's /proc (on disk, not tmpfs)
START_TIMEOUT_S=60
STOP_TIMEOUT_S=30
PROJECT_AMQP_PORT=5682 # the project's node in the same chroot: its /proc mount is left alone while it runs

LOG_PREFIX=tmpfs_node ROOT_REASON="mount and chroot"
SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")/../scripts" && pwd)"
# shellcheck source=scripts/common.sh
. "$SCRIPTS/common.sh"
# shellcheck source=scripts/rabbitmq-node-env.sh
. "$SCRIPTS/rabbitmq-node-env.sh"

# in_chroot SECONDS CMD...: CMD in the chroot with the node's environment (nothing of the caller's), bounded.
in_chroot() {
  local seconds=$1
  shift
  node_env_vars
  timeout "$seconds" chroot "$ROOT" /usr/bin/env -i "${NODE_ENV[@]}" "$@"
}

mounted() { mountpoint -q "$ROOT$BASE"; }
has_cookie() { mounted && [ -s "$ROOT$BASE/.erlang.cookie" ]; }
chroot_ctl() { in_chroot 120 /usr/lib/rabbitmq/bin/rabbitmqctl -n "$NODE" "$@"; }
ctl() {
  has_cookie || die "$NODE is not running (no tmpfs or cookie at $ROOT$BASE): bench/tmpfs_node.sh start"
  chroot_ctl "$@"
}
running() { has_cookie && chroot_ctl -q await_startup --timeout 1 >/dev/null 2>&1; }

listening() { [ -n "$(ss -Hltn "sport = :$1")" ]; }

amqp_port_answers() {
  timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$AMQP_PORT && printf 'XXXX\r\n\r\n' >&3 && head -c 4 <&3" 2>/dev/null |
    grep -q AMQP
}

# The same files as scripts/rabbitmq4.sh's write_node_files, with this node's port: same settings.
write_node_files() {
  local base="$ROOT$BASE"
  mkdir -p "$base/mnesia" "$base/log"
  (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$base/.erlang.cookie")
  chmod 400 "$base/.erlang.cookie"
  : >"$base/rabbitmq-env.conf"
  echo "[]." >"$base/enabled_plugins"
  echo "[]." >"$base/advanced.config"
  cat >"$base/rabbitmq.conf" <<EOF
# sendpipe's bench-only RabbitMQ 4.3 node on tmpfs (bench/tmpfs_node.sh): the settings of scripts/rabbitmq4.sh.
listeners.tcp.1 = 127.0.0.1:$AMQP_PORT
deprecated_features.permit.transient_nonexcl_queues = false
loopback_users.guest = true
log.file.level = info
log.console = false
EOF
}

start() {
  need_root
  [ -f "$MARKER" ] || die "$ROOT is not set up: run scripts/rabbitmq4.sh setup"
  if running && amqp_port_answers; then
    return 0
  fi
  local started=$SECONDS port
  for port in "$AMQP_PORT" "$DIST_PORT" "$EPMD_PORT"; do
    listening "$port" && die "port $port is taken by something else (a stale node? bench/tmpfs_node.sh stop)"
  done
  mkdir -p "$ROOT$BASE"
  mounted || mount -t tmpfs -o "size=$TMPFS_SIZE,mode=0700" sendpipe43mem "$ROOT$BASE"
  write_node_files
  if ! mountpoint -q "$ROOT/proc"; then
    mount -t proc proc "$ROOT/proc"
    : >"$PROC_FLAG"
  fi
  ulimit -n 65536 2>/dev/null || ulimit -n 4096 2>/dev/null || log "warning: nofile limit stays $(ulimit -n)"
  log "starting $NODE (AMQP 127.0.0.1:$AMQP_PORT, epmd $EPMD_PORT, data on tmpfs $ROOT$BASE)"
  if ! in_chroot 60 /usr/lib/rabbitmq/bin/rabbitmq-server -detached >"$ROOT$BASE/log/startup.log" 2>&1; then
    cat "$ROOT$BASE/log/startup.log" >&2
    stop
    die "rabbitmq-server -detached failed"
  fi
  local deadline=$((SECONDS + START_TIMEOUT_S))
  while [ $SECONDS -lt $deadline ]; do
    if chroot_ctl -q await_startup --timeout 5 >/dev/null 2>&1 && amqp_port_answers; then
      log "$NODE is up ($((SECONDS - started)) s)"
      return 0
    fi
    sleep 1
  done
  log "node log tail:"
  tail -n 40 "$ROOT$BASE/log/$NODE.log" >&2 2>/dev/null || true
  cat "$ROOT$BASE/log/startup.log" >&2 2>/dev/null || true
  stop
  die "$NODE did not come up within $START_TIMEOUT_S s"
}

# The node's beam.smp: from its pid file, only if that process is a beam.smp (not a recycled pid).
beam_pid() {
  local pid
  pid=$(cat "$ROOT$BASE/$PID_NAME" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = beam.smp ] && echo "$pid"
}

# The epmd listening on EPMD_PORT (ours: start refused to run when the port was taken).
epmd_pid() {
  ss -Hltnp "sport = :$EPMD_PORT" | grep -o 'pid=[0-9]*' | head -n 1 | cut -d= -f2
}

wait_gone() { # wait_gone PID SECONDS
  local deadline=$((SECONDS + $2))
  while [ -d "/proc/$1" ] && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  [ ! -d "/proc/$1" ]
}

stop() {
  need_root
  local pid
  if mounted; then
    pid=$(beam_pid || true)
    if [ -n "$pid" ]; then
      log "stopping $NODE"
      in_chroot "$STOP_TIMEOUT_S" /usr/lib/rabbitmq/bin/rabbitmqctl -n "$NODE" -q stop >/dev/null 2>&1 || true
      if ! wait_gone "$pid" 10; then
        log "$NODE (pid $pid) still running: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 10 || log "warning: pid $pid did not exit"
      fi
    fi
  fi
  pid=$(epmd_pid || true)
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = epmd ]; then
    kill -TERM "$pid" 2>/dev/null || true
    wait_gone "$pid" 5 || kill -KILL "$pid" 2>/dev/null || true
  fi
  if mounted; then
    umount "$ROOT$BASE" 2>/dev/null || umount -l "$ROOT$BASE" || die "cannot unmount $ROOT$BASE"
  fi
  [ -d "$ROOT$BASE" ] && rmdir "$ROOT$BASE" 2>/dev/null || true
  if [ -f "$PROC_FLAG" ]; then
    if ! listening "$PROJECT_AMQP_PORT" && mountpoint -q "$ROOT/proc"; then
      umount "$ROOT/proc" 2>/dev/null || umount -l "$ROOT/proc" || true
    fi
    rm -f "$PROC_FLAG"
  fi
}

status() {
  if running; then
    echo "$NODE: running, amqp://guest:guest@127.0.0.1:$AMQP_PORT/, data on tmpfs $ROOT$BASE"
  else
    echo "$NODE: not running"
    return 3
  fi
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  start) start ;;
  stop) stop ;;
  ctl) ctl "$@" ;;
  status) status ;;
  *)
    echo "usage: $0 start | stop | ctl ARGS... | status" >&2
    exit 2
    ;;
esac
