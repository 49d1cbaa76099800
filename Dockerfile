# One container = one sendpipe host instance (SPEC): `docker build -t sendpipe .`, then see docker-compose.yml.
# Settings come from SENDPIPE_* variables and /run/secrets/<lower-case name> (e.g. sendpipe_store_password).

# Stage 1: sendpipe's wheel. It has one C module (worker/smime/_crlf.c, the base64 line cutter), so it is
# compiled here, with gcc from Debian's archive; the runtime image below gets the wheel, never a compiler.
# The dependencies are not needed to build it: only the locked setuptools, checked against its hash.
FROM python:3.11-slim AS wheel
ARG PIP_INDEX=
ARG BUILD_CA_BUNDLE=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update -qq \
    && apt-get install -qq -y --no-install-recommends gcc libc6-dev >/dev/null \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /tmp/sendpipe-src
COPY . .
RUN set -eu; \
    if [ -n "$BUILD_CA_BUNDLE" ]; then \
        test -f "$BUILD_CA_BUNDLE" || { echo "BUILD_CA_BUNDLE=$BUILD_CA_BUNDLE: not in the build context" >&2; exit 1; }; \
        export PIP_CERT="$PWD/$BUILD_CA_BUNDLE"; \
    fi; \
    awk '/^setuptools==/ { on = 1 } on { print } on && !/\\$/ { exit }' requirements/lock.txt >/tmp/setuptools.txt; \
    pip install ${PIP_INDEX:+--index-url "$PIP_INDEX"} --require-hashes --only-binary :all: -r /tmp/setuptools.txt; \
    pip wheel --no-deps --no-build-isolation --no-index --wheel-dir /wheels .

# Stage 2: the runtime image.
FROM python:3.11-slim

# MALLOC_ARENA_MAX=2: glibc malloc otherwise makes up to 8 arenas per core for the encoder threads,
# and a long-running worker's RSS grows with them; two arenas keep it flat for a small cost in allocator contention.
# MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ at 1 MiB: large message buffers come from mmap and go
# back to the OS when freed; measured: peak RSS -1.4x the payload at 16 MiB, no speed change (docs/performance.md).
# SENDPIPE_HEALTH_FILE: the heartbeat `sendpipe run` keeps fresh and `sendpipe health` checks (in /tmp,
# so the container's root filesystem can be read-only with a tmpfs on /tmp).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MALLOC_ARENA_MAX=2 \
    MALLOC_MMAP_THRESHOLD_=1048576 \
    MALLOC_TRIM_THRESHOLD_=1048576 \
    SENDPIPE_HEALTH_FILE=/tmp/sendpipe.health

RUN groupadd --system --gid 10001 sendpipe \
    && useradd --system --uid 10001 --gid sendpipe --home-dir /srv/sendpipe --create-home \
       --shell /usr/sbin/nologin sendpipe

# Installed as root into the system site-packages and the source removed: the runtime user cannot change the code.
# Reproducible: the dependencies are exactly requirements/lock.txt, every file checked against its hash
# (`make lock` refreshes it), then sendpipe itself without dependencies: the wheel stage 1 built.
# Behind a proxy or a private index (both optional; no BuildKit needed, the classic builder takes them too):
#   --build-arg PIP_INDEX=https://pypi.example/simple   the index pip installs from
#   --build-arg BUILD_CA_BUNDLE=proxy-ca.pem             a CA bundle (PEM) in the build context that pip trusts,
#                                                        e.g. a TLS-inspecting proxy's (public certificates only:
#                                                        removed from the file system, it stays in the COPY layer)
# (the proxy itself: --build-arg HTTPS_PROXY=..., one of Docker's predefined build args).
ARG PIP_INDEX=
ARG BUILD_CA_BUNDLE=
WORKDIR /tmp/sendpipe-src
COPY . .
COPY --from=wheel /wheels /wheels
RUN set -eu; \
    if [ -n "$BUILD_CA_BUNDLE" ]; then \
        test -f "$BUILD_CA_BUNDLE" || { echo "BUILD_CA_BUNDLE=$BUILD_CA_BUNDLE: not in the build context" >&2; exit 1; }; \
        export PIP_CERT="$PWD/$BUILD_CA_BUNDLE"; \
    fi; \
    pip install ${PIP_INDEX:+--index-url "$PIP_INDEX"} --require-hashes --only-binary :all: -r requirements/lock.txt; \
    pip install --no-deps --no-index /wheels/sendpipe-*.whl && rm -rf /tmp/sendpipe-src /wheels

USER sendpipe
# Relative defaults (config/sendpipe.toml, stores/) resolve here; the compose file sets absolute paths.
WORKDIR /srv/sendpipe

# Readiness (default --ready): with SENDPIPE_METRICS_LISTEN set it asks /readyz, else the heartbeat file.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 CMD ["sendpipe", "health"]
# SIGTERM (Docker's default stop signal) drains in-flight messages and exits 0.
ENTRYPOINT ["sendpipe"]
CMD ["run"]
