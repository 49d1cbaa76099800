#!/bin/sh
# The stand-in's entry point: listener addresses and ports from the environment (RABBITMQ_NODE_PORT,
# RABBITMQ_DIST_PORT and ERL_EPMD_PORT are read by rabbitmq-server itself), then the node in the foreground.
set -eu
{
  echo "management.tcp.port = ${RABBITMQ_MANAGEMENT_PORT:-15672}"
  echo "prometheus.tcp.port = ${RABBITMQ_PROMETHEUS_PORT:-15692}"
  if [ -n "${RABBITMQ_MANAGEMENT_IP:-}" ]; then echo "management.tcp.ip = $RABBITMQ_MANAGEMENT_IP"; fi
} >/etc/rabbitmq/conf.d/20-listeners.conf
exec "$@"
