"""The one seam to RabbitMQ: a session (connection, consuming channel, confirming publishing channel) and connect."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
from collections.abc import Sequence
from urllib.parse import urlsplit

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    DeliveryMode,
)

from worker.broker import topology as t
from worker.broker.acks import AckCoalescer
from worker.broker.errors import mapped
from worker.broker.inbound import Handler, Inbound, encodable, inbound_of, properties_of
from worker.errors import BrokerUnavailable, Code, DeliveryFailed, MessageError
from worker.message import Outbound
from worker.settings import BrokerSettings


class Session:
    """One connection: a consuming channel with a bounded prefetch, a confirming publishing channel."""

    def __init__(self, settings: BrokerSettings, conn: AbstractConnection, node: int = 0) -> None:
        self.settings = settings
        self.conn = conn
        self.node = node  # index into settings.amqp_urls of the node this session is connected to
        self.closed: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        conn.close_callbacks.add(self._on_close)
        self._consume: AbstractChannel | None = None
        self._publish: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._acks = AckCoalescer()  # of the consuming channel, which lives as long as this session
        self._renew_publish = False  # set by a nack: the next publish goes out on a fresh channel
        self._retired: set[asyncio.Task[None]] = set()

    def _on_close(self, _: object, exc: BaseException | None = None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)

    @property
    def server(self) -> str:
        """``RabbitMQ 4.3.6`` — what the broker said of itself at connection start."""
        transport = getattr(self.conn, "transport", None)
        props = getattr(getattr(transport, "connection", None), "server_properties", None) or {}
        product, version = props.get("product", "?"), props.get("version", "?")
        as_text = [v.decode() if isinstance(v, bytes) else str(v) for v in (product, version)]
        return " ".join(as_text)

    async def open(self, prefetch_count: int) -> None:
        # Separate channels: a slow consumer never stalls confirms, and a channel error on publish
        # (e.g. a missing exchange) does not take the consumer down with it.
        with mapped("channel.open"):
            self._publish = await self.conn.channel(publisher_confirms=True, on_return_raises=True)
            self._consume = await self.conn.channel(publisher_confirms=False)
            await self._consume.set_qos(prefetch_count=prefetch_count)
            # A consumer cancelled by the broker (its queue deleted, or a node of a cluster gone) leaves
            # the channel open and idle: treat it like a lost connection, so the caller re-consumes.
            underlay = await self._consume.get_underlay_channel()
            underlay.on_consumer_cancel_callbacks.add(self._on_consumer_cancel)
        # A channel closed by the broker (e.g. a precondition failure) ends the session like a lost
        # connection does: the caller reconnects instead of idling with a dead consumer.
        self._publish.close_callbacks.add(self._on_close)
        self._consume.close_callbacks.add(self._on_close)

    def _on_consumer_cancel(self, frame: object) -> None:
        if getattr(frame, "consumer_tag", None) == self._tag:
            self._on_close(None, BrokerUnavailable("the broker cancelled our consumer (queue deleted or moved?)"))

    @property
    def alive(self) -> bool:
        return not self.closed.done() and not self.conn.is_closed

    async def declare(
        self, host: str, port_names: Sequence[str], retry_intervals_s: Sequence[float], others: Sequence[str] = ()
    ) -> None:
        """SPEC topology for one host, idempotent; all durable, queues quorum. ``others``: send ports
        of other hosts, unbound from this host's queue (a port moved to another host)."""
        ch = self._channel(self._publish)
        with mapped("declare"):
            outbound = await ch.declare_exchange(t.OUTBOUND, aio_pika.ExchangeType.DIRECT, durable=True)
            await ch.declare_exchange(t.DELIVERY, aio_pika.ExchangeType.TOPIC, durable=True)
            suspended = await ch.declare_exchange(t.SUSPENDED, aio_pika.ExchangeType.DIRECT, durable=True)
            susp_q = await ch.declare_queue(t.suspended_queue(host), durable=True, arguments=t.suspended_queue_args())
            await susp_q.bind(suspended, routing_key=host)
            queue = await ch.declare_queue(t.host_queue(host), durable=True, arguments=t.host_queue_args(host))
            for name in port_names:
                await queue.bind(outbound, routing_key=name)
            for name in others:
                await queue.unbind(outbound, routing_key=name)
            for interval in sorted(set(retry_intervals_s)):
                await ch.declare_queue(
                    t.retry_queue(host, interval), durable=True, arguments=t.retry_queue_args(host, interval)
                )

    async def consume(self, queue_name: str, handler: Handler) -> None:
        ch = self._channel(self._consume)

        async def on_message(raw: AbstractIncomingMessage) -> None:
            self._acks.delivered(raw)
            await handler(inbound_of(raw, self._acks))

        with mapped("basic.consume"):
            self._queue = await ch.get_queue(queue_name, ensure=True)
            self._tag = await self._queue.consume(on_message, no_ack=False)

    async def cancel(self) -> None:
        """Stop receiving new deliveries; unacked ones stay ours until acked or the channel closes."""
        if self._queue is not None and self._tag is not None and not self.closed.done():
            with mapped("basic.cancel"):
                await self._queue.cancel(self._tag)
            self._tag = None

    async def publish(
        self, exchange: str, message: Outbound, *, original: Inbound | None = None, stage: str = "deliver"
    ) -> None:
        """Publish persistent and mandatory; return only once the broker confirmed it.

        Raises MessageError ``message-too-large`` (permanent) for a body over the broker's
        ``max_message_size`` before anything is sent; DeliveryFailed when the broker nacks, returns it
        unroutable, or does not confirm in ``publish_timeout_s``; BrokerUnavailable when the channel
        or connection fails — the caller must then not ack the input.
        """
        limit = self.settings.broker_max_message_bytes
        if len(message.body) > limit:
            raise MessageError(
                f"the {stage} message would be {len(message.body)} bytes, over the broker's max_message_size "
                f"(SENDPIPE_BROKER_MAX_MESSAGE_BYTES = {limit}); RabbitMQ would close the channel",
                code=Code.MESSAGE_TOO_LARGE,
                stage=stage,
            )
        if self._renew_publish:
            self._renew_publish = False
            await self._renew_publish_channel()
        ch = self._channel(self._publish)
        props = properties_of(original) if original is not None else {}
        props.update(headers=encodable(message.headers), delivery_mode=DeliveryMode.PERSISTENT)
        for name in ("message_id", "correlation_id", "content_type"):
            value = getattr(message, name)
            if value is not None:
                props[name] = value
        props.setdefault("timestamp", dt.datetime.now(dt.UTC))
        try:
            with mapped(f"publish to {exchange or '(default)'}"):
                target = self._exchanges.get(exchange)
                if target is None:
                    target = ch.default_exchange if exchange == "" else await ch.get_exchange(exchange, ensure=False)
                    self._exchanges[exchange] = target
                await target.publish(
                    aio_pika.Message(message.body, **props),
                    routing_key=message.routing_key,
                    mandatory=True,
                    timeout=self.settings.publish_timeout_s,
                )
        except BrokerUnavailable as exc:
            cause = exc.__cause__
            if isinstance(cause, aio_pika.exceptions.PublishError):
                raise DeliveryFailed(
                    f"{exchange or '(default)'} returned the message as unroutable (routing key "
                    f"{message.routing_key!r}): no queue is bound for it",
                    code=Code.DELIVERY_UNROUTABLE,
                    stage=stage,
                ) from cause
            if isinstance(cause, aio_pika.exceptions.DeliveryError):
                self._renew_publish = True
                raise DeliveryFailed(f"the broker refused the message on {exchange!r} (nack)", stage=stage) from cause
            if isinstance(cause, TimeoutError):
                raise DeliveryFailed(
                    f"no publisher confirm from {exchange!r} within {self.settings.publish_timeout_s}s",
                    code=Code.PUBLISH_TIMEOUT,
                    stage=stage,
                ) from cause
            raise

    async def _renew_publish_channel(self) -> None:
        """RabbitMQ 3.10 nacks every later publish of a channel whose first publish to a quorum queue met
        that queue's leader election, for as long as the channel lives (seen in the cluster scenario,
        docs/reliability.md); a new channel works at once. So after a nack, publishes go out on a fresh
        channel; the old one is closed once its pending confirms have had ``publish_timeout_s``."""
        old = self._publish
        with mapped("channel.open"):
            fresh = await self.conn.channel(publisher_confirms=True, on_return_raises=True)
        fresh.close_callbacks.add(self._on_close)
        self._publish, self._exchanges = fresh, {}
        if old is not None:
            old.close_callbacks.discard(self._on_close)  # its closing is ours, not the session's end
            task = asyncio.ensure_future(self._retire(old))
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)

    async def _retire(self, channel: AbstractChannel) -> None:
        await asyncio.sleep(self.settings.publish_timeout_s)
        with contextlib.suppress(BrokerUnavailable), mapped("channel.close"):
            if not channel.is_closed:
                await channel.close()

    async def count(self, queue_name: str) -> int:
        """Messages ready in a queue (passive declare: never creates it)."""
        with mapped("queue.declare passive"):
            queue = await self._channel(self._consume).declare_queue(queue_name, passive=True)
        return int(queue.declaration_result.message_count or 0)

    async def get(self, queue_name: str) -> Inbound | None:
        """One message from a queue without a consumer (operator tools); unacked until settled."""
        with mapped("basic.get"):
            queue = await self._channel(self._consume).get_queue(queue_name, ensure=True)
            raw = await queue.get(no_ack=False, fail=False)
        return None if raw is None else inbound_of(raw)

    async def close(self) -> None:
        for task in self._retired:
            task.cancel()
        with contextlib.suppress(BrokerUnavailable), mapped("connection.close"):
            if not self.conn.is_closed:
                await self.conn.close()

    @staticmethod
    def _channel(ch: AbstractChannel | None) -> AbstractChannel:
        if ch is None or ch.is_closed:
            raise BrokerUnavailable("broker channel is not open")
        return ch


async def connect(settings: BrokerSettings, *, name: str, prefetch_count: int = 1, start: int = 0) -> Session:
    """Open a Session on the first node that answers, trying the list in order from ``start`` (plain
    connections: reconnects are the caller's loop, so consumers are always re-established explicitly —
    aio-pika's robust connection has lost them in the past)."""
    urls = settings.amqp_urls
    reasons: list[str] = []
    for step in range(len(urls)):
        node = (start + step) % len(urls)
        try:
            return await _connect_one(settings, urls[node], node, name, prefetch_count)
        except BrokerUnavailable as exc:
            reasons.append(f"node {node + 1} ({_where(urls[node])}): {exc.message}" if len(urls) > 1 else exc.message)
    raise BrokerUnavailable("; ".join(reasons)[:1000])


async def _connect_one(settings: BrokerSettings, url: str, node: int, name: str, prefetch_count: int) -> Session:
    context = None
    if url.startswith("amqps://"):
        context = ssl.create_default_context(cafile=str(settings.amqp_ca_file) if settings.amqp_ca_file else None)
    try:
        with mapped("cannot connect to the broker"):
            conn = await aio_pika.connect(
                url,
                ssl_context=context,
                timeout=10,
                client_properties={"connection_name": name},
                heartbeat=settings.heartbeat_s,
            )
    except BrokerUnavailable as exc:
        # Say why (refused, TLS verification, authentication) without ever echoing the URL's password.
        password = urlsplit(url).password
        if password:
            exc.args = (exc.message.replace(password, "***"),)
        raise
    session = Session(settings, conn, node)
    try:
        await session.open(prefetch_count)
    except BaseException:
        await session.close()
        raise
    return session


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or (5671 if parts.scheme == 'amqps' else 5672)}"
