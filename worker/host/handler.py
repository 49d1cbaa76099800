"""The per-message half of a host instance: run the port's pipeline, publish, settle (ack) each message once.

Split from the consumer's lifecycle (``worker.host.instance``): everything here happens to one delivery, in
its own task; the one place a message is acked is ``_settle``, after its delivery, retry or suspension is
publisher-confirmed (SPEC "Guarantees").
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import structlog

from worker.broker import topology
from worker.broker.inbound import Inbound, header_bytes
from worker.broker.session import Session
from worker.errors import (
    BrokerUnavailable,
    CertificateError,
    Code,
    InternalError,
    MessageError,
    RetriesExhausted,
    SendpipeError,
)
from worker.host import routing
from worker.host.budget import ByteBudget
from worker.host.stats import Stats
from worker.message import DEFAULT_CONTENT_TYPE, Message
from worker.pipeline.runtime import Runtime
from worker.pipeline.stage import Pipeline
from worker.settings import InstanceSettings

# A quorum queue dead-letters a message after this many failed deliveries (the broker's limit): we
# suspend it ourselves one delivery earlier, so it carries a code and a reason (SPEC "Suspended").
_SUSPEND_AT_DELIVERY_COUNT = topology.DELIVERY_LIMIT - 1
# Pause before returning a message that could not be settled, so it does not spin through the queue.
UNSETTLED_PAUSE_S = 1.0


@dataclass(frozen=True, slots=True)
class Outcome:
    event: str  # message.delivered / message.failed, then settled as retry_scheduled / suspended
    error: SendpipeError | None = None
    result: Message | None = None
    pipeline_cpu_ms: float | None = None  # the stages' CPU time on the thread that ran them


def _timed_run(pipeline: Pipeline, message: Message) -> tuple[Message, float]:
    """The pipeline's result and its CPU milliseconds on this thread (the loop's or a pool thread's): the
    encoder's cost in the worker itself, not preempted time, which a hot loop elsewhere does not show
    (docs/performance.md, target 1)."""
    started = time.thread_time()
    result = pipeline.run(message)
    return result, (time.thread_time() - started) * 1000


class MessageHandling:
    """What a host instance does with one delivery; the instance (``HostInstance``) provides the state."""

    inst: InstanceSettings
    runtime: Runtime
    host: str
    me: routing.Identity
    stats: Stats
    log: Any  # structlog's bound logger
    budget: ByteBudget
    _pool: ThreadPoolExecutor
    # Set by the supervisor: before a certificate error suspends a message, look at the store and
    # config again (stat; reload if they changed); True when a newer runtime is now in force.
    refresh: Callable[[Runtime], Awaitable[bool]] | None

    async def _handle(self, session: Session, inbound: Inbound) -> None:
        port = routing.port_of(inbound.exchange, inbound.routing_key, inbound.headers)
        attempt = routing.prior_attempts(inbound.exchange, inbound.headers) + 1
        # Bound in this task's context: every line logged while the message is handled carries them.
        with structlog.contextvars.bound_contextvars(message_id=inbound.message_id, send_port=port, attempt=attempt):
            async with self.budget.hold(len(inbound.body)):
                if inbound.message_id is None:
                    await self._guarded(inbound, self._assign_id(session, inbound, port))
                else:
                    await self._guarded(
                        inbound, self._handle_bound(session, inbound, inbound.message_id, port, attempt)
                    )

    async def _guarded(self, inbound: Inbound, work: Awaitable[None]) -> None:
        """Whatever happens to the work, the delivery ends acked (by the work) or returned to the broker."""
        try:
            await work
        except asyncio.CancelledError:
            # The session died or the drain deadline passed: give the message back without spending its
            # delivery budget; the release must not be cut short, nor leave an unretrieved exception.
            release = asyncio.ensure_future(inbound.release())
            release.add_done_callback(_retrieve)
            with contextlib.suppress(BrokerUnavailable, asyncio.CancelledError):
                await asyncio.shield(release)
            raise
        except Exception as exc:
            # Could not settle (connection gone, the suspend/retry publish failed, or a bug): leave
            # the message to the broker, which redelivers it; never ack what is not safely elsewhere.
            # A reject counts toward the quorum queue's delivery limit on every version, so a message
            # that can never be settled ends suspended (delivery-limit-reached), not retried forever.
            if isinstance(exc, SendpipeError):
                self.log.warning(
                    "message.unsettled",
                    error_code=exc.code,
                    error=exc.message[:300],
                    delivery_count=inbound.delivery_count,
                )
            else:
                self.log.exception("message.unsettled", error=type(exc).__name__, delivery_count=inbound.delivery_count)
            await asyncio.sleep(UNSETTLED_PAUSE_S)
            with contextlib.suppress(BrokerUnavailable):
                await inbound.return_failed()

    async def _assign_id(self, session: Session, inbound: Inbound, port: str) -> None:
        """SPEC: a message without ``message_id`` gets one that is stable across its redeliveries. It is
        republished (confirmed) with the id to the host queue, then acked; the copy is then processed
        like any other message, and every attempt, retry and suspension of it carries the same id."""
        message_id = f"sendpipe-{uuid.uuid4()}"
        out = routing.with_assigned_id(inbound.body, inbound.headers, inbound.exchange, port, message_id, self.host)
        await session.publish("", out, original=inbound, stage="receive")
        await inbound.ack()
        self.log.info("message.id_assigned", assigned_message_id=message_id, size_in=len(inbound.body))

    async def _handle_bound(self, session: Session, inbound: Inbound, message_id: str, port: str, attempt: int) -> None:
        started = time.perf_counter()
        self.stats.started()
        event: str | None = None
        code: str | None = None
        try:
            outcome = await self._process(session, inbound, message_id, port)
            outcome = await self._settle(session, inbound, outcome, port, attempt)
            event, code = outcome.event, (outcome.error.code if outcome.error else None)
        finally:
            duration_ms = (time.perf_counter() - started) * 1000
            self.stats.finished(event, duration_ms, send_port=port, error_code=code)
        fields: dict[str, Any] = {"size_in": len(inbound.body), "duration_ms": round(duration_ms, 2)}
        if outcome.result is not None:
            res = outcome.result
            fields.update(
                size_out=len(res.body),
                signer_thumbprint=res.signer_thumbprint,
                recipient_thumbprint=res.recipient_thumbprint,
            )
            if res.mic is not None:
                fields["mic"] = res.mic  # what the partner's MDN must return (RFC 4130 §7.3.1)
        if outcome.pipeline_cpu_ms is not None:
            fields["pipeline_cpu_ms"] = round(outcome.pipeline_cpu_ms, 3)
        err = outcome.error
        if err is not None:
            fields.update(error_code=err.code, error=err.message[:500], failed_stage=err.stage)
        (self.log.info if err is None else self.log.warning)(outcome.event, **fields)

    async def _process(
        self, session: Session, inbound: Inbound, message_id: str, port: str, *, fresh: bool = False
    ) -> Outcome:
        runtime = self.runtime  # one snapshot for the whole message, even if a reload swaps it
        try:
            if inbound.delivery_count >= _SUSPEND_AT_DELIVERY_COUNT:
                raise MessageError(
                    f"delivered {inbound.delivery_count + 1} times without being settled (instances crashed "
                    "or lost the broker while processing it); suspended before the queue's delivery limit "
                    f"({topology.DELIVERY_LIMIT}) would dead-letter it without a reason",
                    code=Code.DELIVERY_LIMIT_REACHED,
                    stage="receive",
                )
            if header_bytes(inbound.headers) > self.inst.max_header_bytes:
                raise MessageError(
                    f"the message's headers exceed SENDPIPE_MAX_HEADER_BYTES ({self.inst.max_header_bytes}) "
                    "encoded; they could not be forwarded in one AMQP frame",
                    code=Code.HEADERS_TOO_LARGE,
                    stage="receive",
                )
            if len(inbound.body) > self.inst.max_message_bytes:
                raise MessageError(
                    f"message of {len(inbound.body)} bytes exceeds SENDPIPE_MAX_MESSAGE_BYTES "
                    f"({self.inst.max_message_bytes})",
                    code=Code.MESSAGE_TOO_LARGE,
                    stage="receive",
                )
            pipeline = runtime.pipelines.get(port)
            if pipeline is None:
                raise MessageError(
                    f"send port {port!r} is not configured for host {self.host!r}",
                    code=Code.UNKNOWN_SEND_PORT,
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
                result, cpu_ms = _timed_run(pipeline, message)  # cheaper than a hop to the pool (docs/performance.md)
            else:
                loop = asyncio.get_running_loop()
                result, cpu_ms = await loop.run_in_executor(self._pool, _timed_run, pipeline, message)
            delivery_key = runtime.config.send_ports[port].delivery_key
            await session.publish(topology.DELIVERY, routing.delivery(result, pipeline.name, delivery_key, self.me))
            return Outcome("message.delivered", result=result, pipeline_cpu_ms=cpu_ms)
        except BrokerUnavailable:
            raise  # the channel itself is gone: nothing to settle on, the broker redelivers
        except SendpipeError as exc:
            if (
                isinstance(exc, CertificateError)
                and not fresh
                and self.refresh is not None
                and await self.refresh(runtime)
            ):
                # An operator just fixed the store or config: run once more with it rather than suspend.
                return await self._process(session, inbound, message_id, port, fresh=True)
            return Outcome("message.failed", error=exc)
        except Exception as exc:  # a bug must suspend one message, not kill the instance
            self.log.exception("message.internal_error", message_id=message_id)
            return Outcome("message.failed", error=InternalError(f"internal error: {type(exc).__name__}"))

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
                    err = RetriesExhausted(
                        f"gave up after {attempt} attempts; last error: {err.message}",
                        code=Code.RETRIES_EXHAUSTED,
                        stage=err.stage,
                    )
                # Headers too large to forward are dropped from the suspended copy (only ours remain).
                kept = {} if err.code == Code.HEADERS_TOO_LARGE else inbound.headers
                out = routing.suspension(inbound.body, kept, err, port, attempt, self.me)
                await session.publish(topology.SUSPENDED, out, original=inbound, stage="suspend")
                outcome = Outcome("message.suspended", error=err)
        await inbound.ack()
        return outcome


def _retrieve(task: asyncio.Future[None]) -> None:
    # Mark a background settle's exception as seen: the session it ran on is gone, which is logged already.
    if not task.cancelled():
        task.exception()
