"""A consumed message as the rest of sendpipe sees it (no aio-pika types leak), and the AMQP value rules."""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pamqp.encode
from aio_pika.abc import AbstractIncomingMessage

from worker.broker.acks import AckCoalescer
from worker.broker.errors import mapped


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message as consumed, with what the app needs and nothing of aio-pika's types."""

    body: bytes
    exchange: str
    routing_key: str
    message_id: str | None
    correlation_id: str | None
    content_type: str | None
    headers: Mapping[str, Any]
    redelivered: bool
    _raw: AbstractIncomingMessage = field(repr=False)
    _acks: AckCoalescer | None = field(default=None, repr=False)  # the consuming channel's, if consumed

    async def ack(self) -> None:
        with mapped("basic.ack"):
            if self._acks is None:
                await self._raw.ack()
            else:
                await self._acks.ack(self._raw)

    async def release(self) -> None:
        """Give the message back untouched (drain, cancelled handler): ``basic.nack(requeue)``, which
        RabbitMQ 4.3 no longer counts toward a quorum queue's delivery limit."""
        await self._return(count=False)

    async def return_failed(self) -> None:
        """Give back a message that could not be settled: ``basic.reject(requeue)``, which every version
        counts toward the delivery limit — so a message that can never be settled does not loop forever."""
        await self._return(count=True)

    async def _return(self, *, count: bool) -> None:
        if self._acks is not None and not self._acks.forget(self._raw):
            return  # its ack is already on the way (the outcome was confirmed): a nack would be a second settle
        with mapped("basic.reject" if count else "basic.nack"):
            if count:
                await self._raw.reject(requeue=True)
            else:
                await self._raw.nack(requeue=True)

    @property
    def delivery_count(self) -> int:
        """Failed deliveries so far as the quorum queue counts them (``x-delivery-count``; 0 if absent)."""
        value = self.headers.get("x-delivery-count")
        return value if isinstance(value, int) and value > 0 else 0


Handler = Callable[[Inbound], Awaitable[None]]


def header_bytes(headers: Mapping[str, Any]) -> int:
    """Encoded size of a header table: the content header frame must fit in the negotiated frame_max."""
    try:
        return len(pamqp.encode.field_table(encodable(headers)))
    except (TypeError, ValueError, struct.error):
        return 1 << 30  # not encodable at all: as good as too large


def encodable(value: Any) -> Any:
    # pamqp decodes a non-UTF-8 long string to bytes but cannot encode bytes again; AMQP's byte
    # array ('x') carries the same octets (what .NET and Java clients send for byte[] values).
    if isinstance(value, bytes):
        return bytearray(value)
    if isinstance(value, Mapping):
        return {k: encodable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encodable(v) for v in value]
    return value


def inbound_of(raw: AbstractIncomingMessage, acks: AckCoalescer | None = None) -> Inbound:
    return Inbound(
        body=raw.body,
        exchange=raw.exchange or "",
        routing_key=raw.routing_key or "",
        message_id=raw.message_id,
        correlation_id=raw.correlation_id,
        content_type=raw.content_type,
        headers=dict(raw.headers or {}),
        redelivered=bool(raw.redelivered),
        _raw=raw,
        _acks=acks,
    )


def properties_of(original: Inbound) -> dict[str, Any]:
    # "The original body and properties, untouched" (SPEC, suspended). Two exceptions: expiration
    # would let a suspended message silently vanish, and user_id must match the publishing user.
    raw = original._raw
    props = {
        "content_type": raw.content_type,
        "content_encoding": raw.content_encoding,
        "priority": raw.priority,
        "correlation_id": raw.correlation_id,
        "reply_to": raw.reply_to,
        "message_id": raw.message_id,
        "timestamp": raw.timestamp,
        "type": raw.type,
        "app_id": raw.app_id,
    }
    return {k: v for k, v in props.items() if v is not None}
