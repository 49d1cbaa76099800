"""`sendpipe health [--live | --ready]`: the container probes (SPEC), asked of the instance's own listener.

With ``SENDPIPE_METRICS_LISTEN`` set, the probe is a GET of ``/livez`` or ``/readyz`` on it (a wildcard
address is reached on loopback): 200 = healthy. Without a listener it falls back to the heartbeat file
(``SENDPIPE_HEALTH_FILE``), which the instance touches only while it consumes: then both modes mean
"ready", so a liveness probe would also fail during a broker outage — configure the listener for that.
"""

from __future__ import annotations

import argparse
import socket
import time
from typing import Any

from worker import settings
from worker.errors import Code, ConfigError
from worker.settings import InstanceSettings


def register(sub: Any) -> None:
    """Add `health` to the `sendpipe` parser."""
    hlt = sub.add_parser(
        "health",
        help="Container probe: exit 0 if this instance is live (--live) or ready (--ready, the default).",
        description="Exit 0 if this instance is healthy, else 1. --live: the process and its event loop answer. "
        "--ready (default): also connected to the broker and consuming, with a usable signing certificate. "
        "Asks the instance's SENDPIPE_METRICS_LISTEN listener (/livez, /readyz); without one, checks that the "
        "heartbeat file (SENDPIPE_HEALTH_FILE) was touched within SENDPIPE_HEALTH_MAX_AGE_S (both modes).",
    )
    mode = hlt.add_mutually_exclusive_group()
    mode.add_argument("--live", dest="mode", action="store_const", const="live", help="liveness only")
    mode.add_argument("--ready", dest="mode", action="store_const", const="ready", help="readiness (default)")
    hlt.set_defaults(func=cmd_health, mode="ready")


def cmd_health(args: argparse.Namespace) -> int:
    inst = settings.load(InstanceSettings)
    if inst.metrics_listen is not None:
        return _probe(inst.metrics_listen, f"/{args.mode}z", inst.health_timeout_s)
    return _heartbeat(inst)


def http_get(listen: str, path: str, timeout_s: float) -> tuple[int, str]:
    """(status, body) of ``GET path`` on the listener; OSError/ValueError when it does not answer properly."""
    host, port = settings.probe_address(listen)
    deadline = time.monotonic() + timeout_s
    with socket.create_connection((host, port), timeout=timeout_s) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode("latin-1"))
        chunks: list[bytes] = []
        while time.monotonic() < deadline:
            conn.settimeout(max(deadline - time.monotonic(), 0.01))
            chunk = conn.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split(b" ")
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise ValueError("not an HTTP response")
    return int(status_line[1]), body.decode("utf-8", "replace")


def _probe(listen: str, path: str, timeout_s: float) -> int:
    try:
        status, body = http_get(listen, path, timeout_s)
    except (OSError, ValueError) as exc:
        # No answer at all: the process is gone or its event loop is wedged - unhealthy in both modes.
        print(f"unhealthy: no answer from {listen}{path} within {timeout_s:g}s ({exc})")
        return 1
    text = body.strip() or f"HTTP {status}"
    print(("healthy: " if status == 200 else "unhealthy: ") + text)
    return 0 if status == 200 else 1


def _heartbeat(inst: InstanceSettings) -> int:
    if inst.health_file is None:
        raise ConfigError(
            "neither SENDPIPE_METRICS_LISTEN nor SENDPIPE_HEALTH_FILE is set: nothing to check",
            code=Code.SETTINGS_INVALID,
        )
    try:
        age = time.time() - inst.health_file.stat().st_mtime
    except FileNotFoundError:
        print(f"unhealthy: no heartbeat at {inst.health_file} (consumer never started)")
        return 1
    if age > inst.health_max_age_s:
        print(f"unhealthy: heartbeat {age:.0f}s old (max {inst.health_max_age_s:.0f}s): consumer not running")
        return 1
    print(f"healthy: heartbeat {age:.1f}s old")
    return 0
