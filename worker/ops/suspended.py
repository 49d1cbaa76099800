"""Operating on a host's suspended messages: list, show, resume (re-run the whole pipeline), discard."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from worker.broker import topology
from worker.broker.inbound import Inbound
from worker.broker.session import Session
from worker.errors import Code
from worker.host import routing
from worker.message import Outbound

# Headers that described the failure; a resumed message starts afresh without them.
_FAILURE_HEADERS = frozenset({
    "sendpipe-error-code", "sendpipe-error", "sendpipe-failed-stage", "sendpipe-host-instance",
    "sendpipe-attempts", "sendpipe-suspended-at", "sendpipe-send-port", "sendpipe-last-error-code",
})  # fmt: skip


@dataclass(frozen=True, slots=True)
class Suspended:
    """One suspended message as an operator sees it."""

    inbound: Inbound

    @property
    def id(self) -> str:
        return self.inbound.message_id or "(none)"

    def header(self, name: str) -> str:
        value = self.inbound.headers.get(name)
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        return "" if value is None else str(value)

    @property
    def send_port(self) -> str:
        port = self.header("sendpipe-send-port")
        if port:
            return port
        # Dead-lettered by the host queue's delivery limit: the original routing key is in x-death.
        deaths = self.inbound.headers.get("x-death")
        if isinstance(deaths, list) and deaths and isinstance(deaths[-1], dict):
            keys = deaths[-1].get("routing-keys") or []
            if keys:
                key = keys[0]
                return key.decode() if isinstance(key, bytes) else str(key)
        return ""

    @property
    def error_code(self) -> str:
        code = self.header("sendpipe-error-code")
        if not code and "x-death" in self.inbound.headers:
            return Code.DELIVERY_LIMIT_EXCEEDED  # the message kept failing its consumer (crash, kill)
        return code

    def age(self, now: dt.datetime | None = None) -> str:
        stamp = self.header("sendpipe-suspended-at")
        try:
            at = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            return "?"
        seconds = int(((now or dt.datetime.now(dt.UTC)) - at).total_seconds())
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds >= size:
                return f"{seconds // size}{unit}"
        return f"{seconds}s"

    def details(self) -> dict[str, Any]:
        i = self.inbound
        return {
            "message_id": i.message_id, "correlation_id": i.correlation_id, "content_type": i.content_type,
            "size": len(i.body), "send_port": self.send_port, "error_code": self.error_code,
            "headers": {k: v if isinstance(v, str | int | float | bool) else repr(v) for k, v in i.headers.items()},
        }  # fmt: skip


class Action(enum.Enum):
    KEEP = "keep"  # moved to the queue's tail, untouched
    RESUME = "resume"
    DISCARD = "discard"
    STOP = "stop"  # keep this one and end the scan (found what was asked for)


# The quorum queue's counters of the copy we take off; the kept copy is a new message (count 0).
_COUNTERS = ("x-delivery-count", "x-acquired-count")


async def scan(
    session: Session, host: str, visit: Callable[[Suspended], Action], done: Callable[[], bool] = lambda: False
) -> int:
    """Visit each message that was in ``sendpipe.suspended.<host>`` when the scan started, one at a time.

    Why not ``basic.get`` and give the messages back: RabbitMQ 4's quorum queues count every return
    (a reject, or closing the channel with it unacked) as a failed delivery and drop the message after
    20 by default, and 4.3 puts a nacked one back at the head. So a message to keep is *moved*: the same
    body and properties republished to the queue's tail (publisher-confirmed), then the taken copy
    acked. No delivery budget is used on any version, memory holds one message, and a crash in between
    leaves a duplicate (same message id), never a loss. Returns how many messages were visited.
    """
    queue = topology.suspended_queue(host)
    total = await session.count(queue)
    seen = 0
    while seen < total and not done():
        inbound = await session.get(queue)
        if inbound is None:
            break
        seen += 1
        item = Suspended(inbound)
        action = visit(item)
        if action is Action.RESUME:
            await _resume_one(session, item)
        elif action is Action.DISCARD:
            await inbound.ack()
        else:
            headers = {k: v for k, v in inbound.headers.items() if not k.startswith(_COUNTERS)}
            await session.publish("", Outbound(inbound.body, queue, headers=headers), original=inbound, stage="keep")
            await inbound.ack()
            if action is Action.STOP:
                break
    return seen


async def _resume_one(session: Session, item: Suspended) -> None:
    """Publish back to ``sendpipe.outbound`` (its send port as routing key), confirmed, then ack."""
    port = item.send_port
    headers = {k: v for k, v in routing.passthrough(item.inbound.headers).items() if k not in _FAILURE_HEADERS}
    await session.publish(topology.OUTBOUND, Outbound(item.inbound.body, port, headers=headers),
                          original=item.inbound, stage="resume")  # fmt: skip
    await item.inbound.ack()
