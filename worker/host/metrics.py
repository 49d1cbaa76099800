"""Prometheus `/metrics`, `/livez` and `/readyz` of one host instance (SPEC "Metrics", SENDPIPE_METRICS_LISTEN).

A minimal HTTP/1.1 responder on the instance's own event loop (stdlib asyncio, one request per
connection): that it answers at all is the liveness signal, since a wedged loop answers nothing.
Readiness = a consumer attached on a live connection and a usable signing certificate (the
preflight's verdict on the snapshot in force). The exposition is the Prometheus text format 0.0.4.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import structlog

from worker.errors import Code, ConfigError
from worker.host.budget import ByteBudget
from worker.host.stats import DURATION_BUCKETS_S, OTHER_PORT, Stats
from worker.pipeline.preflight import preflight
from worker.pipeline.runtime import Runtime
from worker.settings import parse_listen

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_MAX_REQUEST_BYTES = 8192  # request line and headers; probes and scrapers send a few hundred
_READ_TIMEOUT_S = 5.0
UNKNOWN_PORT = "_unknown"  # send_port label of a message whose routing key names no configured port


class Observed(Protocol):
    """What the metrics read of a host instance (worker.host.instance.HostInstance)."""

    host: str
    runtime: Runtime
    stats: Stats
    budget: ByteBudget
    reconnects: int

    @property
    def consuming(self) -> bool: ...


# -- the exposition format ---------------------------------------------------------------------


def escape_label(value: str) -> str:
    """A label value as the text format wants it: backslash, double quote and line feed escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{name}="{escape_label(value)}"' for name, value in pairs)
    return "{" + inner + "}" if inner else ""


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


@dataclass
class Family:
    """One metric family: its samples as (suffix, labels, value)."""

    name: str
    kind: str  # counter / gauge / histogram
    help: str
    samples: list[tuple[str, tuple[tuple[str, str], ...], float]]

    def render(self) -> str:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        lines += [f"{self.name}{suffix}{_labels(labels)} {format_value(v)}" for suffix, labels, v in self.samples]
        return "\n".join(lines) + "\n"


def histogram(stats: Stats) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    samples: list[tuple[str, tuple[tuple[str, str], ...], float]] = []
    cumulative = 0
    for bound, count in zip((*DURATION_BUCKETS_S, math.inf), stats.bucket_counts, strict=True):
        cumulative += count
        samples.append(("_bucket", (("le", format_value(bound)),), cumulative))
    samples.append(("_sum", (), stats.duration_sum_s))
    samples.append(("_count", (), cumulative))
    return samples


def certificates(runtime: Runtime, host: str) -> list[tuple[tuple[tuple[str, str], ...], float]]:
    """``(thumbprint, role)`` -> notAfter of every certificate the preflight looks at that is in the store."""
    out: dict[tuple[str, str], float] = {}
    store = runtime.store
    for finding in preflight(runtime.config, store, host, warn_days=0):
        tp = finding.thumbprint  # normalized by the config's validator
        folder = store.personal if finding.role == "signing" else store.other_people
        entry = folder.get(tp)
        if entry is not None:
            out[(tp, finding.role)] = entry.cert.not_valid_after_utc.timestamp()
    return [((("thumbprint", tp), ("role", role)), ts) for (tp, role), ts in sorted(out.items())]


def signing_usable(runtime: Runtime, host: str, now: dt.datetime | None = None) -> tuple[bool, str]:
    """The preflight's verdict on the signing certificate (no signing port: nothing to need)."""
    for finding in preflight(runtime.config, runtime.store, host, warn_days=0, now=now):
        if finding.role == "signing" and finding.level == "error":
            return False, f"signing certificate {finding.thumbprint}: {finding.status}"
    return True, "signing certificate usable"


def exposition(instance: Observed) -> str:
    """The whole `/metrics` body."""
    stats = instance.stats
    families = [
        Family(
            "sendpipe_messages_total",
            "counter",
            "Messages settled, by send port, outcome and error code (empty when delivered).",
            [
                ("", (("send_port", port), ("outcome", outcome), ("error_code", code)), n)
                for (port, outcome, code), n in sorted(stats.outcomes.items())
            ],
        ),
        Family(
            "sendpipe_message_duration_seconds",
            "histogram",
            "Time from receipt of a message to its settlement (delivered, retry scheduled or suspended).",
            histogram(stats),
        ),
        Family("sendpipe_in_flight_messages", "gauge", "Messages being processed.", [("", (), stats.in_flight)]),
        Family(
            "sendpipe_in_flight_bytes",
            "gauge",
            "Payload bytes of the messages being processed (the byte budget in use).",
            [("", (), instance.budget.in_use)],
        ),
        Family(
            "sendpipe_consuming",
            "gauge",
            "1 while a consumer is attached to the host queue on a live connection, else 0.",
            [("", (), 1 if instance.consuming else 0)],
        ),
        Family(
            "sendpipe_certificate_not_after_timestamp_seconds",
            "gauge",
            "End of validity (Unix time) of each certificate this instance uses, by thumbprint and role.",
            [("", labels, ts) for labels, ts in certificates(instance.runtime, instance.host)],
        ),
        Family(
            "sendpipe_broker_reconnects_total",
            "counter",
            "Broker sessions that ended other than by shutdown (connection lost, consumer cancelled).",
            [("", (), instance.reconnects)],
        ),
    ]
    return "".join(f.render() for f in families)


def ready(instance: Observed) -> tuple[bool, str]:
    if not instance.consuming:
        return False, "not consuming (no broker connection, or no consumer on the host queue)"
    return signing_usable(instance.runtime, instance.host)


def limit_port_labels(instance: Observed) -> None:
    """Only configured send ports become ``send_port`` label values (a routing key is the producer's choice)."""

    def label(port: str) -> str:
        return port if port in instance.runtime.config.send_ports else UNKNOWN_PORT

    instance.stats.port_label = label


# -- the HTTP responder ------------------------------------------------------------------------


def respond(instance: Observed, method: str, target: str) -> tuple[int, str, str]:
    """(status, content type, body) for one request."""
    path = target.split("?", 1)[0]
    if method not in {"GET", "HEAD"}:
        return 405, "text/plain; charset=utf-8", "method not allowed\n"
    if path == "/metrics":
        return 200, CONTENT_TYPE, exposition(instance)
    if path == "/livez":
        return 200, "text/plain; charset=utf-8", "live: process and event loop answering\n"
    if path == "/readyz":
        ok, why = ready(instance)
        return (200 if ok else 503), "text/plain; charset=utf-8", f"{'ready' if ok else 'not ready'}: {why}\n"
    return 404, "text/plain; charset=utf-8", "not found: /metrics, /livez, /readyz\n"


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


async def _handle(instance: Observed, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    log = structlog.get_logger("sendpipe")
    try:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT_S)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            return
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            status, ctype, body = 400, "text/plain; charset=utf-8", "bad request\n"
            method = "GET"
        else:
            method = parts[0]
            try:
                status, ctype, body = respond(instance, method, parts[1])
            except Exception:  # a bug must not take the listener (or the instance) down
                log.exception("metrics.request_failed", path=parts[1][:100])
                status, ctype, body = 503, "text/plain; charset=utf-8", "internal error\n"
        data = body.encode()
        writer.write(
            (
                f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
            ).encode("latin-1")
            + (b"" if method == "HEAD" else data)
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def start(instance: Observed, listen: str) -> asyncio.Server:
    """Listen on ``listen`` (HOST:PORT); one that cannot bind is a ConfigError (the instance refuses to start)."""
    host, port = parse_listen(listen)
    limit_port_labels(instance)
    try:
        server = await asyncio.start_server(
            lambda r, w: _handle(instance, r, w), host, port, limit=_MAX_REQUEST_BYTES, reuse_address=True
        )
    except OSError as exc:
        raise ConfigError(
            f"SENDPIPE_METRICS_LISTEN={listen}: cannot listen ({exc.strerror or exc})", code=Code.SETTINGS_INVALID
        ) from None
    structlog.get_logger("sendpipe").info("metrics.listening", listen=listen, paths=["/metrics", "/livez", "/readyz"])
    return server


__all__ = ["OTHER_PORT", "UNKNOWN_PORT", "exposition", "ready", "start"]
