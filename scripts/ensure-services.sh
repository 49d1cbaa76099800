#!/usr/bin/env bash
# Make sure what the tests need is here: the openssl CLI (interop checks), strace, the machine's RabbitMQ
# running, and the project's own RabbitMQ 4.3 node (scripts/rabbitmq4.sh).
set -euo pipefail
need_apt=()
command -v openssl >/dev/null || need_apt+=(openssl)
command -v rabbitmqctl >/dev/null || need_apt+=(rabbitmq-server)
command -v strace >/dev/null || need_apt+=(strace)  # the security test traces which files an instance opens
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
"$(dirname "$0")/interop-receivers.sh"  # Bouncy Castle (+ JDK) and gpgsm, the interop tests' other receivers

machine_broker() {
  # Only manage the local broker; a remote SENDPIPE_AMQP_URL is the operator's business.
  case "${SENDPIPE_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}" in
    *127.0.0.1*|*localhost*) ;;
    *) return 0 ;;
  esac
  if ! rabbitmqctl -q status >/dev/null 2>&1; then
    echo "starting RabbitMQ"
    rabbitmq-server -detached
  fi
  for _ in $(seq 1 60); do
    if rabbitmqctl -q await_startup >/dev/null 2>&1 && rabbitmq-diagnostics -q check_port_connectivity >/dev/null 2>&1; then
      return 0
    fi
    sleep 1
  done
  echo "RabbitMQ did not come up within 60 s" >&2
  return 1
}

machine_broker
# The project's own RabbitMQ 4.3 node, which the broker tests run on as well: a Debian sid chroot outside
# the work tree (built once, about a minute; later runs reuse it), its own ports, epmd and cookie.
"$(dirname "$0")/rabbitmq4.sh" setup
"$(dirname "$0")/rabbitmq4.sh" start
