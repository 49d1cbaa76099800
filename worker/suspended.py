"""Operating on a host's suspended messages: list, show, resume (re-run the whole pipeline), discard."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from worker import routing, topology
from worker.broker import Inbound, Outbound, Session

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
            return "delivery-limit-exceeded"  # the message kept failing its consumer (crash, kill)
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


async def take_all(session: Session, host: str, limit: int) -> list[Suspended]:
    """Take up to ``limit`` messages off the suspended queue, unacked: each must then be settled
    (acked, or requeued by closing the session) — nothing is removed until an operator decides."""
    taken: list[Suspended] = []
    while len(taken) < limit:
        inbound = await session.get(topology.suspended_queue(host))
        if inbound is None:
            break
        taken.append(Suspended(inbound))
    return taken


def select(items: Sequence[Suspended], ids: Sequence[str], everything: bool) -> list[Suspended]:
    wanted = set(ids)
    return [s for s in items if everything or s.id in wanted]


async def resume(session: Session, items: Sequence[Suspended], on_done: Callable[[Suspended], None]) -> None:
    """Publish each back to ``sendpipe.outbound`` (its send port as routing key), confirmed, then ack."""
    for item in items:
        port = item.send_port
        headers = {k: v for k, v in routing.passthrough(item.inbound.headers).items() if k not in _FAILURE_HEADERS}
        await session.publish(topology.OUTBOUND, Outbound(item.inbound.body, port, headers=headers),
                              original=item.inbound, stage="resume")  # fmt: skip
        await item.inbound.ack()
        on_done(item)


async def discard(items: Sequence[Suspended], on_done: Callable[[Suspended], None]) -> None:
    for item in items:
        await item.inbound.ack()
        on_done(item)
