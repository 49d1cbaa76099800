"""One host instance's consumer lifecycle: connect, declare, consume, reconnect with backoff, drain on stop.

What happens to each delivery (pipeline, publish, settle) is ``worker.host.handler``; this module owns the
session, the tasks that run the handler, and the pool large messages are encoded in.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog

from worker.broker import session as broker
from worker.broker import topology
from worker.broker.inbound import Inbound
from worker.broker.session import Session
from worker.errors import BrokerUnavailable, SendpipeError
from worker.host import routing
from worker.host.budget import ByteBudget
from worker.host.handler import UNSETTLED_PAUSE_S, MessageHandling, Outcome
from worker.host.stats import Stats
from worker.pipeline.runtime import Runtime
from worker.settings import BrokerSettings, InstanceSettings, memory_limit_bytes

__all__ = ["UNSETTLED_PAUSE_S", "HostInstance", "Outcome", "derived_prefetch"]


class HostInstance(MessageHandling):
    """Consumes ``sendpipe.host.<host>`` and publishes to delivery, retry or suspended."""

    def __init__(self, inst: InstanceSettings, brk: BrokerSettings, runtime: Runtime, host: str) -> None:
        self.inst = inst
        self.brk = brk
        self.runtime = runtime
        self.host = host
        self.me = routing.Identity(host, inst.host_instance, runtime.store.account)
        self.prefetch = brk.prefetch_count or derived_prefetch(
            inst.threads, memory_limit_bytes(), min(inst.max_message_bytes, brk.broker_max_message_bytes)
        )
        self.stats = Stats()
        self.log = structlog.get_logger("sendpipe").bind(
            host=host, host_instance=inst.host_instance, service_account=self.me.service_account
        )
        self.session: Session | None = None  # the live one, for topology updates on reload
        self.budget = ByteBudget(inst.in_flight_budget, small_bytes=inst.inline_max_bytes)
        self.reconnects = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._pool = ThreadPoolExecutor(inst.threads, thread_name_prefix="pipeline")
        # Set by the supervisor: before a certificate error suspends a message, look at the store and
        # config again (stat; reload if they changed); True when a newer runtime is now in force.
        self.refresh: Callable[[Runtime], Awaitable[bool]] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop``; reconnect with backoff and jitter whenever the connection drops.

        The backoff grows on every failed connect *and* every session that ended before it was
        stable (``reconnect_max_s``): a broker that accepts the connection but then refuses the
        declare or the consumer must not be hammered. After a loss, the next node of the list is
        tried first (SPEC: cluster nodes, tried in order).
        """
        failures, start = 0, 0
        try:
            while not stop.is_set():
                try:
                    session = await broker.connect(
                        self.brk, name=self.inst.host_instance, prefetch_count=self.prefetch, start=start
                    )
                except BrokerUnavailable as exc:
                    failures += 1
                    await self._backoff(stop, failures, "broker.unavailable", exc)
                    continue
                opened = time.monotonic()
                error = await self._serve(session, stop)
                if stop.is_set():
                    break
                self.reconnects += 1
                start = (session.node + 1) % len(self.brk.amqp_urls)
                stable = time.monotonic() - opened >= self.brk.reconnect_max_s
                failures = 1 if stable else failures + 1
                if error is not None or not stable:
                    await self._backoff(stop, failures, "broker.session_failed", error)
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def _backoff(self, stop: asyncio.Event, failures: int, event: str, exc: SendpipeError | None) -> None:
        delay = min(self.brk.reconnect_max_s, self.brk.reconnect_initial_s * 2**failures)
        delay *= random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto
        fields = {"error_code": exc.code, "error": exc.message} if exc is not None else {}
        self.log.warning(event, retry_in_s=round(delay, 2), attempt=failures, **fields)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)

    async def declare(self, session: Session) -> None:
        config = self.runtime.config
        ports = config.ports_of(self.host)
        others = sorted(name for name in config.send_ports if name not in ports)
        await session.declare(self.host, sorted(ports), [p.retry_interval_s for p in ports.values()], others)

    async def _serve(self, session: Session, stop: asyncio.Event) -> SendpipeError | None:
        """One session: declare, consume until stop or loss. Returns why it failed, if it did."""
        failure: SendpipeError | None = None
        try:
            await self.declare(session)
            await session.consume(topology.host_queue(self.host), lambda m: self._spawn(session, m))
            self.session = session
            self.log.info(
                "consumer.started",
                queue=topology.host_queue(self.host),
                prefetch_count=self.prefetch,
                broker=session.server,
                node=session.node + 1,
                in_flight_budget_bytes=self.budget.limit_bytes,
            )
            stopping = asyncio.create_task(stop.wait())
            waiters: list[asyncio.Future[Any]] = [stopping, session.closed]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if stop.is_set() and not session.closed.done():
                await self._drain(session)
                return None
            why = session.closed.result() if session.closed.done() else None
            self.log.warning(
                "broker.connection_lost",
                in_flight=len(self._tasks),
                node=session.node + 1,
                reason=(why.message if isinstance(why, SendpipeError) else type(why).__name__ if why else None),
            )
        except BrokerUnavailable as exc:
            failure = exc
        finally:
            self.session = None
            # Deliveries of a dead channel are redelivered by the broker: abandon their tasks.
            for task in list(self._tasks):
                task.cancel()
            await session.close()
        return failure

    @property
    def consuming(self) -> bool:
        """True while a consumer is attached on a live connection (the health signal)."""
        return self.session is not None and self.session.alive

    async def _drain(self, session: Session) -> None:
        """SIGTERM: stop taking messages, let in-flight ones finish (bounded), requeue the rest."""
        with contextlib.suppress(BrokerUnavailable):
            await session.cancel()
        in_flight = len(self._tasks)
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self.inst.drain_timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        self.log.info("consumer.drained", in_flight=in_flight, stats=self.stats.totals())

    async def _spawn(self, session: Session, inbound: Inbound) -> None:
        # Return to aio-pika at once so deliveries overlap; prefetch bounds how many run together.
        task = asyncio.create_task(self._handle(session, inbound))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def derived_prefetch(threads: int, memory_limit: int, largest_input: int) -> int:
    """Deliveries held unacked at once, by default: 8 per worker thread (throughput), but never so many that
    that many of the largest inputs would fill more than a quarter of the memory limit. The byte budget
    bounds what is being encoded; this bounds what the broker has already handed over and is waiting."""
    by_memory = memory_limit // 4 // max(largest_input, 1)
    return max(1, min(threads * 8, by_memory))
