"""One host instance: consume the host queue, run each port's pipeline off the loop, settle each message once."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import structlog

from worker import broker, routing, topology
from worker.broker import Inbound, Session
from worker.config import Config
from worker.errors import MessageError, SendpipeError, TransientError
from worker.message import DEFAULT_CONTENT_TYPE, Message
from worker.settings import BrokerSettings, InstanceSettings
from worker.stages import Pipeline
from worker.stages.registry import build_pipeline
from worker.stats import Stats
from worker.store import CertificateStore

# Failures after which a message cannot be settled on this channel: leave it to redelivery.
_UNSETTLED: tuple[type[BaseException], ...] = (*broker.CONNECTION_ERRORS, TransientError)


@dataclass(frozen=True)
class Runtime:
    """The config and store in force, with the pipelines built from them; replaced whole on reload."""

    config: Config
    store: CertificateStore
    pipelines: dict[str, Pipeline]

    @classmethod
    def build(cls, config: Config, store: CertificateStore, host: str) -> Runtime:
        return cls(config, store, {name: build_pipeline(config, name, store) for name in config.ports_of(host)})


@dataclass(frozen=True, slots=True)
class Outcome:
    event: str  # message.delivered / message.failed, then settled as retry_scheduled / suspended
    error: SendpipeError | None = None
    result: Message | None = None


class HostInstance:
    """Consumes ``sendpipe.host.<host>`` and publishes to delivery, retry or suspended."""

    def __init__(self, inst: InstanceSettings, brk: BrokerSettings, runtime: Runtime, host: str) -> None:
        self.inst = inst
        self.brk = brk
        self.runtime = runtime
        self.host = host
        self.me = routing.Identity(host, inst.host_instance, runtime.store.account)
        self.prefetch = brk.prefetch_count or inst.threads * 8
        self.stats = Stats()
        self.log = structlog.get_logger("sendpipe").bind(
            host=host, host_instance=inst.host_instance, service_account=self.me.service_account
        )
        self.session: Session | None = None  # the live one, for topology updates on reload
        self._tasks: set[asyncio.Task[None]] = set()
        self._pool = ThreadPoolExecutor(inst.threads, thread_name_prefix="pipeline")

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop``; reconnect with backoff and jitter whenever the connection drops."""
        failures = 0
        try:
            while not stop.is_set():
                try:
                    session = await broker.connect(self.brk, name=self.inst.host_instance, prefetch_count=self.prefetch)
                except TransientError as exc:
                    failures += 1
                    delay = min(self.brk.reconnect_max_s, self.brk.reconnect_initial_s * 2**failures)
                    delay *= random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto
                    self.log.warning(
                        "broker.unavailable", error_code=exc.code, error=exc.message, retry_in_s=round(delay, 2)
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    continue
                failures = 0
                await self._serve(session, stop)
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def declare(self, session: Session) -> None:
        ports = self.runtime.config.ports_of(self.host)
        await session.declare(self.host, sorted(ports), [p.retry_interval_s for p in ports.values()])

    async def _serve(self, session: Session, stop: asyncio.Event) -> None:
        try:
            await self.declare(session)
            await session.consume(topology.host_queue(self.host), lambda m: self._spawn(session, m))
            self.session = session
            self.log.info("consumer.started", queue=topology.host_queue(self.host), prefetch_count=self.prefetch)
            stopping = asyncio.create_task(stop.wait())
            waiters: list[asyncio.Future[Any]] = [stopping, session.closed]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if stop.is_set() and not session.closed.done():
                await self._drain(session)
                return
            self.log.warning("broker.connection_lost", in_flight=len(self._tasks))
        except _UNSETTLED as exc:
            self.log.warning("broker.session_failed", error=type(exc).__name__, detail=str(exc)[:200])
        finally:
            self.session = None
            # Deliveries of a dead channel are redelivered by the broker: abandon their tasks.
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(*broker.CONNECTION_ERRORS):
                await session.close()

    @property
    def consuming(self) -> bool:
        """True while a consumer is attached on a live connection (the health signal)."""
        return self.session is not None and self.session.alive

    async def _drain(self, session: Session) -> None:
        """SIGTERM: stop taking messages, let in-flight ones finish (bounded), requeue the rest."""
        with contextlib.suppress(*broker.CONNECTION_ERRORS):
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

    # -- one message -------------------------------------------------------------------------

    async def _handle(self, session: Session, inbound: Inbound) -> None:
        message_id = inbound.message_id or f"sendpipe-{uuid.uuid4()}"
        port = routing.port_of(inbound.exchange, inbound.routing_key, inbound.headers)
        attempt = routing.prior_attempts(inbound.exchange, inbound.headers) + 1
        # Bound in this task's context: every line logged while the message is handled carries them.
        with structlog.contextvars.bound_contextvars(message_id=message_id, send_port=port, attempt=attempt):
            await self._handle_bound(session, inbound, message_id, port, attempt)

    async def _handle_bound(self, session: Session, inbound: Inbound, message_id: str, port: str, attempt: int) -> None:
        started = time.perf_counter()
        log = self.log
        if inbound.message_id is None:
            log.info("message.id_assigned")
        self.stats.started()
        try:
            outcome = await self._process(session, inbound, message_id, port)
            outcome = await self._settle(session, inbound, outcome, port, attempt)
        except asyncio.CancelledError:
            self.stats.finished(None, 0.0)
            with contextlib.suppress(*broker.CONNECTION_ERRORS):
                await asyncio.shield(inbound.requeue())
            raise
        except Exception as exc:
            # Could not settle (connection gone, the suspend/retry publish failed, or a bug): leave
            # the message to the broker, which redelivers it; never ack what is not safely elsewhere.
            # The quorum queue's delivery limit ends a message that can never be settled.
            self.stats.finished(None, 0.0)
            if isinstance(exc, _UNSETTLED):
                log.warning("message.unsettled", error=type(exc).__name__, detail=str(exc)[:200])
            else:
                log.exception("message.unsettled", error=type(exc).__name__)
            await self._requeue_later(inbound)
            return
        duration_ms = (time.perf_counter() - started) * 1000
        self.stats.finished(outcome.event, duration_ms)
        fields: dict[str, Any] = {"size_in": len(inbound.body), "duration_ms": round(duration_ms, 2)}
        if outcome.result is not None:
            res = outcome.result
            fields.update(
                size_out=len(res.body),
                signer_thumbprint=res.signer_thumbprint,
                recipient_thumbprint=res.recipient_thumbprint,
            )
        err = outcome.error
        if err is not None:
            fields.update(error_code=err.code, error=err.message[:500], failed_stage=err.stage)
        (log.info if err is None else log.warning)(outcome.event, **fields)

    async def _process(self, session: Session, inbound: Inbound, message_id: str, port: str) -> Outcome:
        runtime = self.runtime  # one snapshot for the whole message, even if a reload swaps it
        try:
            if broker.header_bytes(inbound.headers) > self.inst.max_header_bytes:
                raise MessageError(
                    f"the message's headers exceed SENDPIPE_MAX_HEADER_BYTES ({self.inst.max_header_bytes}) "
                    "encoded; they could not be forwarded in one AMQP frame",
                    code="headers-too-large",
                    stage="receive",
                )
            if len(inbound.body) > self.inst.max_message_bytes:
                raise MessageError(
                    f"message of {len(inbound.body)} bytes exceeds SENDPIPE_MAX_MESSAGE_BYTES "
                    f"({self.inst.max_message_bytes})",
                    code="message-too-large",
                    stage="receive",
                )
            pipeline = runtime.pipelines.get(port)
            if pipeline is None:
                raise MessageError(
                    f"send port {port!r} is not configured for host {self.host!r}",
                    code="unknown-send-port",
                    stage="receive",
                )
            message = Message(
                body=inbound.body,
                message_id=message_id,
                send_port=port,
                content_type=inbound.content_type or DEFAULT_CONTENT_TYPE,
                correlation_id=inbound.correlation_id,
                headers=inbound.headers,
            )
            if not pipeline.steps or len(message.body) <= self.inst.inline_max_bytes:
                result = pipeline.run(message)  # cheaper than a hop to the pool (docs/performance.md)
            else:
                result = await asyncio.get_running_loop().run_in_executor(self._pool, pipeline.run, message)
            delivery_key = runtime.config.send_ports[port].delivery_key
            await session.publish(topology.DELIVERY, routing.delivery(result, pipeline.name, delivery_key, self.me))
            return Outcome("message.delivered", result=result)
        except SendpipeError as exc:
            if type(exc) is TransientError:
                raise  # the channel itself is gone: nothing to settle on, the broker redelivers
            return Outcome("message.failed", error=exc)
        except broker.CONNECTION_ERRORS:
            raise
        except Exception as exc:  # a bug must suspend one message, not kill the instance
            self.log.exception("message.internal_error", message_id=message_id)
            return Outcome("message.failed", error=SendpipeError(f"internal error: {type(exc).__name__}"))

    async def _settle(self, session: Session, inbound: Inbound, outcome: Outcome, port: str, attempt: int) -> Outcome:
        """The one place a message is acked: after its delivery, retry or suspension is confirmed."""
        err = outcome.error
        if err is not None:
            send_port = self.runtime.config.send_ports.get(port)
            if err.transient and send_port is not None and attempt <= send_port.retry_count:
                queue = topology.retry_queue(self.host, send_port.retry_interval_s)
                out = routing.retry(inbound.body, inbound.headers, queue, port, attempt, err)
                await session.publish("", out, original=inbound, stage="retry")
                outcome = Outcome("message.retry_scheduled", error=err)
            else:
                if err.transient:
                    err = SendpipeError(
                        f"gave up after {attempt} attempts; last error: {err.message}",
                        code="retries-exhausted",
                        stage=err.stage,
                    )
                # Headers too large to forward are dropped from the suspended copy (only ours remain).
                kept = {} if err.code == "headers-too-large" else inbound.headers
                out = routing.suspension(inbound.body, kept, err, port, attempt, self.me)
                await session.publish(topology.SUSPENDED, out, original=inbound, stage="suspend")
                outcome = Outcome("message.suspended", error=err)
        await inbound.ack()
        return outcome

    async def _requeue_later(self, inbound: Inbound) -> None:
        # A pause before requeueing, so an unsettleable message does not spin; the quorum queue's
        # delivery limit finally dead-letters it to the suspended queue.
        await asyncio.sleep(1.0)
        with contextlib.suppress(*broker.CONNECTION_ERRORS):
            await inbound.requeue()
