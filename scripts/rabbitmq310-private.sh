#!/usr/bin/env bash
# A private RabbitMQ node of the machine's own packages (3.10 on Debian 12), for the one test that must stop
# a broker: the reliability harness' broker-restart scenario. The machine's node (rabbit@<host>, 5672, epmd
# 4369) is shared and never stopped; this one is the project's and nobody else's.
#
#   scripts/rabbitmq310-private.sh start        start it (idempotent), wait until it serves AMQP
#   scripts/rabbitmq310-private.sh stop         stop it (this node only)
#   scripts/rabbitmq310-private.sh ctl ARGS...  its rabbitmqctl
#   scripts/rabbitmq310-private.sh status       exit 0 when it is running and booted
#
# sendpipe310@localhost, AMQP 127.0.0.1:5692, distribution 127.0.0.1:25692, its own epmd on 4390, its own
# cookie (HOME), data, logs, config and plugins file under ${SENDPIPE_RMQ310_BASE:-/var/lib/sendpipe/rabbitmq310-private}.
# The real scripts in /usr/lib/rabbitmq/bin are run as root (Debian's wrappers would switch to `rabbitmq`).
set -euo pipefail

BASE="${SENDPIPE_RMQ310_BASE:-/var/lib/sendpipe/rabbitmq310-private}"
NODE="sendpipe310@localhost"
PID_NAME=sendpipe310.pid
AMQP_PORT=5692
DIST_PORT=25692
EPMD_PORT=4390
BIN=/usr/lib/rabbitmq/bin
START_TIMEOUT_S=60

LOG_PREFIX=rabbitmq310-private ROOT_REASON="a node of its own"
# shellcheck source=scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[ -x "$BIN/rabbitmq-server" ] || die "no $BIN/rabbitmq-server: the machine's rabbitmq-server package is missing"

# shellcheck source=scripts/rabbitmq-node-env.sh
. "$(dirname "${BASH_SOURCE[0]}")/rabbitmq-node-env.sh"

node_env() {
  mkdir -p "$BASE/log"
  node_env_vars
  env -i "${NODE_ENV[@]}" "$@"
}

# Without its cookie file the CLI cannot even start (and would leave a crash dump): the node never ran.
has_cookie() { [ -s "$BASE/.erlang.cookie" ]; }
ctl() {
  has_cookie || die "$NODE was never started (no $BASE/.erlang.cookie): scripts/rabbitmq310-private.sh start"
  (cd "$BASE" && node_env "$BIN/rabbitmqctl" -n "$NODE" "$@")
}
node_alive() { has_cookie && (cd "$BASE" && node_env "$BIN/rabbitmq-diagnostics" -n "$NODE" -q ping >/dev/null 2>&1); }
running() { has_cookie && ctl -q await_startup --timeout 1 >/dev/null 2>&1; }

amqp_port_answers() {
  timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$AMQP_PORT && printf 'XXXX\r\n\r\n' >&3 && head -c 4 <&3" 2>/dev/null |
    grep -q AMQP
}

write_node_files() {
  mkdir -p "$BASE/mnesia" "$BASE/log"
  chmod 700 "$BASE"
  if [ ! -s "$BASE/.erlang.cookie" ]; then
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$BASE/.erlang.cookie")
  fi
  chmod 400 "$BASE/.erlang.cookie"
  : >"$BASE/rabbitmq-env.conf"
  echo "[]." >"$BASE/enabled_plugins"
  echo "[]." >"$BASE/advanced.config"
  cat >"$BASE/rabbitmq.conf" <<EOF
# sendpipe's private RabbitMQ 3.10 node (scripts/rabbitmq310-private.sh), for the broker-restart scenario.
listeners.tcp.1 = 127.0.0.1:$AMQP_PORT
loopback_users.guest = true
log.console = false
EOF
}

start() {
  [ "$(id -u)" -eq 0 ] || die "must run as root"
  if running && amqp_port_answers; then
    return 0
  fi
  local started=$SECONDS
  write_node_files
  if ! node_alive; then
    ulimit -n 65536 2>/dev/null || ulimit -n 4096 2>/dev/null || true
    log "starting $NODE (AMQP 127.0.0.1:$AMQP_PORT, epmd $EPMD_PORT)"
    (cd "$BASE" && node_env "$BIN/rabbitmq-server" -detached >"$BASE/log/startup.log" 2>&1) || {
      cat "$BASE/log/startup.log" >&2
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
  tail -n 40 "$BASE/log/$NODE.log" >&2 2>/dev/null || true
  cat "$BASE/log/startup.log" >&2 2>/dev/null || true
  die "$NODE did not come up within $START_TIMEOUT_S s"
}

stop() {
  if node_alive; then
    log "stopping $NODE"
    ctl -q stop
  fi
}

status() {
  if running; then
    echo "$NODE: running, amqp://guest:guest@127.0.0.1:$AMQP_PORT/"
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
