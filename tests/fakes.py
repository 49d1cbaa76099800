"""A fake of the broker seam (like httpx's MockTransport): scripted sessions to drive failure paths.

``FakeBroker.connect`` stands in for ``worker.broker.connect``; each connect takes the next entry of a
script (a session behaviour or an exception). Deliveries are ``RawDelivery`` objects that record how
they were settled (ack / nack / reject), so a test can tell what the worker told the broker.
Logic only: tests/broker and tests/reliability prove the same paths against real RabbitMQ.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from aio_pika.abc import AbstractIncomingMessage

from worker.broker import topology
from worker.broker.acks import AckCoalescer
from worker.broker.inbound import Handler, Inbound
from worker.errors import BrokerUnavailable, SendpipeError
from worker.message import Outbound
from worker.settings import BrokerSettings


@dataclass
class RawDelivery:
    """What aio-pika's IncomingMessage offers the seam: a tag and the three ways to settle."""

    delivery_tag: int
    settled: list[str] = field(default_factory=list)  # "ack", "ack-multiple", "nack-requeue", "reject-requeue"

    async def ack(self, multiple: bool = False) -> None:
        await asyncio.sleep(0)
        self.settled.append("ack-multiple" if multiple else "ack")

    async def nack(self, requeue: bool = True) -> None:
        self.settled.append("nack-requeue" if requeue else "nack")

    async def reject(self, requeue: bool = False) -> None:
        self.settled.append("reject-requeue" if requeue else "reject")


@dataclass
class Behaviour:
    """How one fake session acts: which calls fail, and with what."""

    declare_error: SendpipeError | None = None
    consume_error: SendpipeError | None = None
    publish: Callable[[str, Outbound], SendpipeError | None] = lambda _exchange, _message: None


class FakeSession:
    """Implements what HostInstance uses of ``worker.broker.Session``."""

    def __init__(self, behaviour: Behaviour, node: int) -> None:
        self.behaviour = behaviour
        self.node = node
        self.server = "FakeMQ 0.0"
        self.closed: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self.published: list[tuple[str, Outbound]] = []
        self.handler: Handler | None = None
        self.acks = AckCoalescer()
        self._tags = 0

    @property
    def alive(self) -> bool:
        return not self.closed.done()

    async def declare(self, *_: Any, **__: Any) -> None:
        if self.behaviour.declare_error is not None:
            raise self.behaviour.declare_error

    async def consume(self, queue_name: str, handler: Handler) -> None:
        if self.behaviour.consume_error is not None:
            raise self.behaviour.consume_error
        self.handler = handler

    async def cancel(self) -> None:
        pass

    async def publish(self, exchange: str, message: Outbound, **_: Any) -> None:
        await asyncio.sleep(0)
        error = self.behaviour.publish(exchange, message)
        if error is not None:
            raise error
        self.published.append((exchange, message))

    async def close(self) -> None:
        self.lose(None)

    def lose(self, why: BaseException | None) -> None:
        if not self.closed.done():
            self.closed.set_result(why)

    def inbound(
        self,
        body: bytes,
        *,
        port: str = "Orders",
        message_id: str | None = "m-1",
        headers: dict[str, Any] | None = None,
    ) -> tuple[Inbound, RawDelivery]:
        self._tags += 1
        raw = RawDelivery(self._tags)
        self.acks.delivered(raw)
        # RawDelivery is the part of aio-pika's IncomingMessage that the seam uses.
        fake = cast(AbstractIncomingMessage, raw)
        inbound = Inbound(
            body, topology.OUTBOUND, port, message_id, None, None, headers or {}, False, _raw=fake, _acks=self.acks
        )
        return inbound, raw

    async def deliver(self, body: bytes, **kwargs: Any) -> RawDelivery:
        assert self.handler is not None, "not consuming"
        inbound, raw = self.inbound(body, **kwargs)
        await self.handler(inbound)
        return raw


class FakeBroker:
    """``connect`` replacement: takes the next script entry; the last one repeats."""

    def __init__(self, *script: Behaviour | BaseException) -> None:
        self.script = list(script)
        self.sessions: list[FakeSession] = []
        self.connects: list[int] = []  # the ``start`` node of each call

    async def connect(self, settings: BrokerSettings, *, name: str, prefetch_count: int = 1, start: int = 0) -> Any:
        self.connects.append(start)
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, BaseException):
            raise step
        session = FakeSession(step, start)
        self.sessions.append(session)
        return session

    async def wait_sessions(self, count: int, timeout_s: float = 5) -> FakeSession:
        async with asyncio.timeout(timeout_s):
            while len(self.sessions) < count or self.sessions[count - 1].handler is None:
                await asyncio.sleep(0.005)
        return self.sessions[count - 1]


def unavailable(text: str = "PRECONDITION_FAILED") -> BrokerUnavailable:
    return BrokerUnavailable(text)
