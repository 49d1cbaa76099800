#!/usr/bin/env bash
# A private Docker engine and Compose v2 for the container test (tests/containers/), nothing system-wide.
#
#   scripts/containers.sh setup      engine + Compose (Debian packages, extracted), stand-in base images, once
#   scripts/containers.sh start      start the private dockerd (idempotent) and wait until it answers
#   scripts/containers.sh build [TAG]  build the project's Dockerfile (default sendpipe:local), pip's CA and index
#   scripts/containers.sh env        print the exports a client needs (DOCKER_HOST, DOCKER_CONFIG, PATH)
#   scripts/containers.sh stop       remove every container, volume and network, the test's images, stop dockerd
#   scripts/containers.sh teardown   stop, then delete the engine's data (cached base images included)
#
# Nothing is installed or reconfigured on the machine: Debian 12's docker.io (engine 20.10), containerd, runc
# and tini are `apt-get download`ed and unpacked under $STATE/tools; Compose v2 is Debian trixie's
# docker-compose package (a static Go binary), fetched with a private sources list and apt state, used as a
# CLI plugin of a private DOCKER_CONFIG. dockerd runs with --bridge=none --iptables=false (containers use
# host networking on 127.0.0.1) and its own data root, exec root, pid file and socket. Docker Hub is not
# reachable from here, so the two registry images docker-compose.yml and the Dockerfile name are built
# locally under those names: python:3.11-slim (Debian 12 minbase + python3, a venv at /usr/local) and
# rabbitmq:4-management (Debian sid's rabbitmq-server 4.x, management plugin, guest from any host). Their
# root file systems and images are cached under $STATE; `stop` keeps them, `teardown` removes the engine data.
set -euo pipefail

STATE="${SENDPIPE_CONTAINERS_STATE:-/var/lib/sendpipe/containers}"
TOOLS="$STATE/tools"
ROOTS="$STATE/roots"
PY_STANDIN=2 # the python stand-in's version: a cached root or image of another version is rebuilt
DATA_ROOT="$STATE/docker"
EXEC_ROOT=/run/sendpipe-docker
PIDFILE=/run/sendpipe-docker.pid
SOCK=/run/sendpipe-docker.sock
MIRROR="${SENDPIPE_CONTAINERS_MIRROR:-http://deb.debian.org/debian}"
RMQ4_ROOT="${SENDPIPE_RMQ4_ROOT:-/var/lib/sendpipe/rabbitmq4-sid}" # scripts/rabbitmq4.sh's chroot (read only)
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STANDINS="$HERE/../tests/containers/standins"
START_TIMEOUT_S=60

LOG_PREFIX=containers ROOT_REASON="dockerd, debootstrap"
# shellcheck source=scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# Clients use Debian's docker 20.10 CLI from $TOOLS (first on PATH); a newer CLI also works (v28 negotiates
# API 1.41 with this engine), as does Compose v2 2.26 (the CLI plugin of DOCKER_CONFIG).
client_env() {
  export DOCKER_HOST="unix://$SOCK"
  export DOCKER_CONFIG="$STATE/docker-config"
  export PATH="$TOOLS/usr/bin:$TOOLS/usr/sbin:$PATH"
  export DOCKER_BUILDKIT=0
}

# --- setup: tools ------------------------------------------------------------------------------------

# apt-get with its own lists, cache and sources: the machine's apt configuration is not changed.
private_apt() { # private_apt NAME SOURCES-LINE apt-get-args...
  local name=$1 line=$2 dir="$STATE/apt/$1"
  shift 2
  mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$dir/etc/preferences.d" "$dir/etc/apt.conf.d"
  echo "$line" >"$dir/sources.list"
  local opts=(-o "Dir::Etc::sourcelist=$dir/sources.list" -o "Dir::Etc::sourceparts=-"
    -o "Dir::Etc::preferencesparts=$dir/etc/preferences.d" -o "Dir::State::Lists=$dir/lists"
    -o "Dir::Cache=$dir/cache" -o "Debug::NoLocking=1" -o "Acquire::Check-Valid-Until=false"
    -o "APT::Sandbox::User=root")
  if [ ! -f "$dir/.updated" ]; then
    apt-get -qq "${opts[@]}" update || die "apt-get update ($name) failed"
    touch "$dir/.updated"
  fi
  apt-get -qq "${opts[@]}" "$@"
}

fetch_debs() { # fetch_debs NAME SUITE PACKAGE...: download and unpack into $TOOLS
  local name=$1 suite=$2 work="$STATE/apt/$1/debs"
  shift 2
  mkdir -p "$work" "$TOOLS"
  if ! (cd "$work" && private_apt "$name" "deb $MIRROR $suite main" download "$@"); then
    # Cached lists may name files the mirror has since dropped (sid, trixie move on): update once, retry.
    rm -f "$STATE/apt/$name/.updated"
    (cd "$work" && private_apt "$name" "deb $MIRROR $suite main" download "$@") || die "apt-get download $* failed"
  fi
  local deb
  for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$TOOLS"; done
  rm -f "$work"/*.deb
}

setup_tools() {
  if [ ! -x "$TOOLS/usr/sbin/dockerd" ]; then
    log "fetching Debian 12's docker.io, containerd, runc, tini (unpacked under $TOOLS)"
    timed "engine packages" fetch_debs bookworm bookworm docker.io containerd runc tini
  fi
  if [ ! -x "$TOOLS/usr/libexec/docker/cli-plugins/docker-compose" ]; then
    log "fetching Debian trixie's docker-compose (Compose v2, static)"
    timed "compose package" fetch_debs trixie trixie docker-compose
  fi
  mkdir -p "$STATE/docker-config/cli-plugins"
  ln -sf "$TOOLS/usr/libexec/docker/cli-plugins/docker-compose" "$STATE/docker-config/cli-plugins/docker-compose"
  [ -f "$STATE/docker-config/config.json" ] || echo '{}' >"$STATE/docker-config/config.json"
  local missing=()
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v rsync >/dev/null || missing+=(rsync)
  if [ ${#missing[@]} -gt 0 ]; then # build tools only (no service): the stand-in roots and the build context
    log "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# --- setup: stand-in base images ---------------------------------------------------------------------

python_root() {
  local root="$ROOTS/python-3.11" marker="$ROOTS/python-3.11.$PY_STANDIN.ready"
  [ -f "$marker" ] && return 0
  rm -rf --one-file-system "$root"
  mkdir -p "$ROOTS"
  log "debootstrap Debian 12 minbase + python3 into $root"
  # python3-dev: the official image has Python's headers (the Dockerfile compiles worker/smime/_crlf.c).
  debootstrap --variant=minbase --include=python3,python3-venv,python3-dev bookworm "$root" "$MIRROR" \
    >"$ROOTS/python-debootstrap.log" 2>&1 || {
    tail -n 20 "$ROOTS/python-debootstrap.log" >&2
    die "debootstrap (python) failed"
  }
  # The official image's layout: python, pip and the scripts pip installs live in /usr/local/bin.
  chroot "$root" /usr/bin/python3 -m venv /usr/local
  chroot "$root" apt-get -qq clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
  touch "$marker"
}

rabbitmq_root() {
  local root="$ROOTS/rabbitmq-4" marker="$ROOTS/rabbitmq-4.ready"
  [ -f "$marker" ] && return 0
  rm -rf --one-file-system "$root"
  mkdir -p "$root"
  if [ -f "$RMQ4_ROOT/.sendpipe-rabbitmq4-ready" ]; then
    # A copy of the project's sid chroot without its running node's data and mounts (only read here).
    log "copying $RMQ4_ROOT (without its node's data) into $root"
    rsync -a --one-file-system --exclude=/proc/ --exclude=/sys/ --exclude=/dev/ --exclude=/var/lib/sendpipe43/ \
      --exclude=/var/lib/rabbitmq/ --exclude=/var/log/rabbitmq/ "$RMQ4_ROOT/" "$root/"
    mkdir -p "$root/proc" "$root/sys" "$root/dev" "$root/var/lib/rabbitmq" "$root/var/log/rabbitmq"
  else
    log "debootstrap Debian sid minbase + rabbitmq-server into $root"
    debootstrap --variant=minbase sid "$root" "$MIRROR" >"$ROOTS/rabbitmq-debootstrap.log" 2>&1 ||
      die "debootstrap (rabbitmq) failed: $ROOTS/rabbitmq-debootstrap.log"
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d" && chmod 755 "$root/usr/sbin/policy-rc.d"
    chroot "$root" apt-get -qq -o Acquire::Check-Valid-Until=false update
    chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      rabbitmq-server >"$ROOTS/rabbitmq-apt.log" 2>&1 || die "apt-get install rabbitmq-server failed"
    chroot "$root" apt-get -qq clean
    rm -rf "$root"/var/lib/apt/lists/*
  fi
  local version
  version=$(chroot "$root" dpkg-query -W -f='${Version}' rabbitmq-server)
  [[ $version == 4.* ]] || die "rabbitmq-server $version in $root: need 4.x"
  # As the official image: management plugin on, guest allowed from other hosts, logs to the console.
  mkdir -p "$root/etc/rabbitmq/conf.d"
  echo "[rabbitmq_management,rabbitmq_prometheus]." >"$root/etc/rabbitmq/enabled_plugins"
  printf 'loopback_users = none\nlog.console = true\nlog.file = false\n' >"$root/etc/rabbitmq/conf.d/10-defaults.conf"
  rm -f "$root/etc/rabbitmq/rabbitmq-env.conf"
  chroot "$root" chown -R rabbitmq:rabbitmq /etc/rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
  touch "$marker"
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

import_root() { # import_root ROOT TAG CHANGES...
  local root=$1 tag=$2
  shift 2
  local changes=() c
  for c in "$@"; do changes+=(--change "$c"); done
  tar -C "$root" --numeric-owner -cf - . | docker import "${changes[@]}" - "$tag" >/dev/null
}

setup_images() {
  if [ "$(docker image inspect -f '{{index .Config.Labels "sendpipe.standin"}}' python:3.11-slim 2>/dev/null)" != "$PY_STANDIN" ]; then
    timed "python root" python_root
    timed "import python:3.11-slim" import_root "$ROOTS/python-3.11" python:3.11-slim \
      'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' 'ENV LANG=C.UTF-8' 'CMD ["python3"]' \
      "LABEL sendpipe.standin=$PY_STANDIN"
  fi
  if ! have_image rabbitmq:4-management; then
    if ! have_image sendpipe-standin/rabbitmq-root:4; then
      timed "rabbitmq root" rabbitmq_root
      timed "import rabbitmq root" import_root "$ROOTS/rabbitmq-4" sendpipe-standin/rabbitmq-root:4
    fi
    timed "build rabbitmq:4-management" docker build -q --network host -t rabbitmq:4-management "$STANDINS/rabbitmq" >/dev/null
  fi
}

# --- the project's image ------------------------------------------------------------------------------

# The CA bundle and index the machine's pip uses (a TLS-inspecting proxy's CA is in that bundle).
pip_setting() { # pip_setting ENV-NAME CONFIG-KEY
  local value=${!1:-}
  [ -n "$value" ] || value=$(python3 -m pip config get "global.$2" 2>/dev/null || true)
  echo "$value"
}

# build [TAG]: the project's Dockerfile with the classic builder, from a copy of the work tree (so the CA
# bundle can join the build context without touching the tree), pip's CA bundle and index passed as args.
build() {
  local tag=${1:-sendpipe:local} ctx cert index args=()
  client_env
  ctx=$(mktemp -d /tmp/sendpipe-build.XXXXXX)
  rsync -a --exclude=/.git --exclude=/.venv --exclude=/demo --exclude=__pycache__ "$HERE/../" "$ctx/"
  cert=$(pip_setting PIP_CERT cert)
  [ -n "$cert" ] || cert=${REQUESTS_CA_BUNDLE:-${SSL_CERT_FILE:-}}
  if [ -n "$cert" ] && [ -f "$cert" ]; then
    cp "$cert" "$ctx/build-ca.pem"
    args+=(--build-arg BUILD_CA_BUNDLE=build-ca.pem)
  fi
  index=$(pip_setting PIP_INDEX_URL index-url)
  case "$index" in http://* | https://*) args+=(--build-arg "PIP_INDEX=$index") ;; esac
  local t0=$SECONDS rc=0
  docker build -q --network host "${args[@]}" -t "$tag" "$ctx" >"$STATE/build.log" 2>&1 || rc=$?
  rm -rf "$ctx"
  [ $rc -eq 0 ] || { tail -n 40 "$STATE/build.log" >&2; die "docker build failed (log: $STATE/build.log)"; }
  log "built $tag ($((SECONDS - t0)) s)"
}

# --- the engine --------------------------------------------------------------------------------------

engine_up() { [ -S "$SOCK" ] && docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

start() {
  need_root
  [ -x "$TOOLS/usr/sbin/dockerd" ] || die "not set up: run scripts/containers.sh setup"
  client_env
  engine_up && return 0
  local t0=$SECONDS
  mkdir -p "$DATA_ROOT" "$EXEC_ROOT"
  log "starting dockerd (data $DATA_ROOT, socket $SOCK, no bridge, no iptables)"
  # containerd and runc from $TOOLS (PATH); no system containerd is used (its own under the exec root).
  setsid "$TOOLS/usr/sbin/dockerd" --bridge=none --iptables=false --ip-masq=false --ip6tables=false \
    --data-root "$DATA_ROOT" --exec-root "$EXEC_ROOT" --pidfile "$PIDFILE" -H "unix://$SOCK" \
    --containerd-namespace sendpipe --containerd-plugins-namespace sendpipe-plugins \
    --userland-proxy=false --log-level warn >"$STATE/dockerd.log" 2>&1 </dev/null &
  local deadline=$((SECONDS + START_TIMEOUT_S))
  while [ $SECONDS -lt $deadline ]; do
    if engine_up; then
      log "dockerd $(docker version --format '{{.Server.Version}}') is up ($((SECONDS - t0)) s)"
      return 0
    fi
    kill -0 "$!" 2>/dev/null || break
    sleep 0.5
  done
  tail -n 40 "$STATE/dockerd.log" >&2
  die "dockerd did not come up (log: $STATE/dockerd.log)"
}

setup() {
  need_root
  local t0=$SECONDS
  setup_tools
  start
  setup_images
  log "setup done ($((SECONDS - t0)) s)"
}

# Everything the test made goes; the stand-in base images stay (unless teardown).
clean_engine() {
  local ids
  ids=$(docker ps -aq)
  [ -z "$ids" ] || docker rm -f $ids >/dev/null
  docker volume prune -f >/dev/null
  docker network prune -f >/dev/null
  docker image rm -f sendpipe:local >/dev/null 2>&1 || true # the project's image, built by the test
  docker image prune -f >/dev/null
  docker builder prune -f >/dev/null 2>&1 || true
}

stop() {
  need_root
  client_env
  if engine_up; then clean_engine; fi
  if [ -f "$PIDFILE" ]; then
    local pid
    pid=$(cat "$PIDFILE")
    if kill -0 "$pid" 2>/dev/null; then
      log "stopping dockerd ($pid)"
      kill -TERM "$pid"
      for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -0 "$pid" 2>/dev/null && die "dockerd $pid did not stop"
    fi
  fi
  # Mounts a killed engine may leave behind (overlay, netns, shm) under its own roots only.
  awk -v a="$DATA_ROOT" -v b="$EXEC_ROOT" 'index($2, a "/") == 1 || index($2, b "/") == 1 { print $2 }' /proc/mounts |
    sort -r | while IFS= read -r m; do umount -l "$m" || true; done
  rm -f "$SOCK" "$PIDFILE"
  rm -rf --one-file-system "$EXEC_ROOT"
}

teardown() {
  stop
  rm -rf --one-file-system "$DATA_ROOT"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  setup) setup ;;
  start) start ;;
  stop) stop ;;
  teardown) teardown ;;
  build) build "$@" ;;
  env)
    client_env
    printf 'export DOCKER_HOST=%q DOCKER_CONFIG=%q PATH=%q DOCKER_BUILDKIT=0\n' "$DOCKER_HOST" "$DOCKER_CONFIG" "$PATH"
    ;;
  *)
    echo "usage: $0 setup | start | env | stop | teardown" >&2
    exit 2
    ;;
esac
