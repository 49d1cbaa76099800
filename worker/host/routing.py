"""Where a processed message goes and with which headers (SPEC "Messages"): pure rules, no I/O."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from worker.broker.topology import OUTBOUND, host_queue
from worker.errors import SendpipeError
from worker.message import Message, Outbound

# Our retry bookkeeping, and the headers we set on the way out: never taken over from the input.
RETRY_HEADERS = frozenset({"sendpipe-attempts", "sendpipe-last-error-code"})
OURS = frozenset(
    {
        "sendpipe-send-port",
        "sendpipe-host",
        "sendpipe-host-instance",
        "sendpipe-service-account",
        "sendpipe-signer-thumbprint",
        "sendpipe-recipient-thumbprint",
        "sendpipe-mic",
        "sendpipe-pipeline",
        "sendpipe-error-code",
        "sendpipe-error",
        "sendpipe-failed-stage",
        "sendpipe-suspended-at",
    }
)
# The broker's own bookkeeping is not the producer's: dead-lettering (x-death, x-first-/x-last-death-*),
# the quorum queue's counters (x-delivery-count; x-acquired-count since 4.3), shovel and federation
# marks, AMQP 1.0 annotations RabbitMQ 4 maps into 0-9-1 headers (x-opt-*). Prefixes, as they grow.
BROKER_HEADER_PREFIXES = (
    "x-death",
    "x-first-death-",
    "x-last-death-",
    "x-delivery-count",
    "x-acquired-count",
    "x-received-from",
    "x-shovelled",
    "x-opt-",
)


def passthrough(headers: Mapping[str, Any]) -> dict[str, Any]:
    """The input's own headers: what SPEC calls "the input's other headers"."""
    return {
        k: v
        for k, v in headers.items()
        if k not in RETRY_HEADERS and k not in OURS and not k.startswith(BROKER_HEADER_PREFIXES)
    }


@dataclass(frozen=True, slots=True)
class Identity:
    """Who processed the message, stamped on every delivery and suspension."""

    host: str
    host_instance: str
    service_account: str


def port_of(exchange: str, routing_key: str, headers: Mapping[str, Any]) -> str:
    """From producers the routing key names the send port; a retry comes back through the default
    exchange and carries the port in a header we set ourselves."""
    if exchange == OUTBOUND:
        return routing_key
    value = headers.get("sendpipe-send-port")
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or routing_key)


def prior_attempts(exchange: str, headers: Mapping[str, Any]) -> int:
    if exchange == OUTBOUND:
        return 0  # a producer cannot pre-spend our retries
    value = headers.get("sendpipe-attempts")
    return value if isinstance(value, int) and value >= 0 else 0


def delivery(result: Message, pipeline: str, delivery_key: str, me: Identity) -> Outbound:
    headers = passthrough(result.headers)
    headers.update(
        {
            "sendpipe-send-port": result.send_port,
            "sendpipe-host": me.host,
            "sendpipe-host-instance": me.host_instance,
            "sendpipe-service-account": me.service_account,
            "sendpipe-pipeline": pipeline,
        }
    )
    if result.signer_thumbprint:
        headers["sendpipe-signer-thumbprint"] = result.signer_thumbprint
    if result.recipient_thumbprint:
        headers["sendpipe-recipient-thumbprint"] = result.recipient_thumbprint
    if result.mic:
        headers["sendpipe-mic"] = result.mic
    return Outbound(
        result.body,
        delivery_key,
        message_id=result.message_id,
        correlation_id=result.correlation_id,
        content_type=result.entity_content_type,
        headers=headers,
    )


def retry(body: bytes, headers: Mapping[str, Any], queue: str, port: str, attempt: int, err: SendpipeError) -> Outbound:
    kept = {
        **passthrough(headers),
        "sendpipe-attempts": attempt,
        "sendpipe-send-port": port,
        "sendpipe-last-error-code": err.code,
    }
    return Outbound(body, queue, headers=kept)


def with_assigned_id(
    body: bytes, headers: Mapping[str, Any], exchange: str, port: str, message_id: str, host: str
) -> Outbound:
    """The copy of an id-less input that carries its assigned id, back into the host queue (the default
    exchange, like a retry: the send port travels in our header)."""
    if exchange == OUTBOUND:
        kept = passthrough(headers)  # from a producer: it cannot pre-spend our retries
    else:
        kept = {k: v for k, v in headers.items() if not k.startswith(BROKER_HEADER_PREFIXES)}
    kept["sendpipe-send-port"] = port
    return Outbound(body, host_queue(host), message_id=message_id, headers=kept)


def suspension(
    body: bytes, headers: Mapping[str, Any], err: SendpipeError, port: str, attempt: int, me: Identity
) -> Outbound:
    kept = passthrough(headers)
    kept.update(
        {
            "sendpipe-error-code": err.code,
            "sendpipe-error": err.message[:1000],
            "sendpipe-failed-stage": err.stage or "unknown",
            "sendpipe-send-port": port,
            "sendpipe-host-instance": me.host_instance,
            "sendpipe-attempts": attempt,
            "sendpipe-suspended-at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        }
    )
    return Outbound(body, me.host, headers=kept)
