# Sourced by scripts/rabbitmq4.sh and scripts/rabbitmq310-private.sh: the environment of a RabbitMQ node of
# the project's own (and of its CLI), and nothing of the caller's. Needs BASE (the node's data, log and config
# folder as the node sees it), NODE, EPMD_PORT, AMQP_PORT, DIST_PORT, PID_NAME.
# shellcheck shell=bash
node_env_vars() {
  NODE_ENV=(
    PATH=/usr/sbin:/usr/bin:/sbin:/bin
    HOME="$BASE"
    LANG=C.UTF-8 LC_ALL=C.UTF-8
    ERL_EPMD_PORT="$EPMD_PORT"   # an epmd of its own: the machine's node and its epmd are never touched
    ERL_EPMD_ADDRESS=127.0.0.1
    ERL_CRASH_DUMP="$BASE/log/erl_crash.dump"
    RABBITMQ_CONF_ENV_FILE="$BASE/rabbitmq-env.conf"
    RABBITMQ_NODENAME="$NODE"
    RABBITMQ_USE_LONGNAME=false
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    RABBITMQ_NODE_PORT="$AMQP_PORT"
    RABBITMQ_DIST_PORT="$DIST_PORT"
    RABBITMQ_CONFIG_FILE="$BASE/rabbitmq.conf"
    RABBITMQ_ADVANCED_CONFIG_FILE="$BASE/advanced.config"
    RABBITMQ_ENABLED_PLUGINS_FILE="$BASE/enabled_plugins"
    RABBITMQ_MNESIA_BASE="$BASE/mnesia"
    RABBITMQ_LOG_BASE="$BASE/log"
    RABBITMQ_PID_FILE="$BASE/$PID_NAME"
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  )
}
