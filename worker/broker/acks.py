"""Acks on one consuming channel, coalesced: one ``basic.ack(multiple)`` per loop tick for the settled prefix.

AMQP 0-9-1 §1.8.3.13: ``basic.ack`` with ``multiple`` set acknowledges every outstanding delivery up to
and including the tag. One frame then settles a whole batch — fewer writes for us and, on a quorum
queue, one settle command through Raft instead of one per message (docs/performance.md: broker CPU per
message about a third lower). Only a *prefix* is acked together: every earlier delivery on the channel must already
be settled, or ``multiple`` would ack a message still being processed. A settled delivery behind one
still in progress is acked on its own at once, so a slow message never holds the others' prefetch slots.

No aio-pika here: a delivery is anything with a ``delivery_tag`` and an ``ack(multiple=...)`` coroutine.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Delivery(Protocol):
    @property
    def delivery_tag(self) -> int | None: ...

    async def ack(self, multiple: bool = False) -> None: ...


_Waiting = tuple[Delivery, "asyncio.Future[None]"]


class AckCoalescer:
    """The outstanding deliveries of one channel, in tag order (tags grow monotonically per channel)."""

    def __init__(self) -> None:
        # tag -> None while the message is in progress, (delivery, future) once it asked to be acked
        self._open: dict[int, _Waiting | None] = {}
        self._flush_scheduled = False
        self._sending: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._open)

    def delivered(self, delivery: Delivery) -> None:
        if delivery.delivery_tag is not None:
            self._open[delivery.delivery_tag] = None

    def forget(self, delivery: Delivery) -> bool:
        """Before a nack or reject: True if the delivery is still in progress (it stops blocking the
        prefix and may be returned); False if its ack was already asked for or sent — a message whose
        outcome is confirmed is acked, and a nack of the same tag would close the channel (406)."""
        tag = delivery.delivery_tag
        if tag is None:
            return True
        if tag not in self._open or self._open[tag] is not None:
            return False
        del self._open[tag]
        return True

    async def ack(self, delivery: Delivery) -> None:
        """Return once the frame acking this delivery is written; raise what writing it raised."""
        tag = delivery.delivery_tag
        if tag is None or tag not in self._open or self._open[tag] is not None:
            await delivery.ack()  # not ours to coalesce (or asked twice: let the client say so)
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._open[tag] = (delivery, done)
        if not self._flush_scheduled:
            # call_soon: every handler that settles in this tick (e.g. after one batch of publisher
            # confirms) is in before the frame goes out.
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        await done

    def _flush(self) -> None:
        self._flush_scheduled = False
        prefix: list[_Waiting] = []
        behind: list[_Waiting] = []
        blocked = False
        for tag, waiting in list(self._open.items()):
            if waiting is None:
                blocked = True
                continue
            del self._open[tag]
            (behind if blocked else prefix).append(waiting)
        if prefix:
            self._send(prefix[-1][0], multiple=len(prefix) > 1, waiting=prefix)
        for one in behind:
            self._send(one[0], multiple=False, waiting=[one])

    def _send(self, delivery: Delivery, *, multiple: bool, waiting: list[_Waiting]) -> None:
        task = asyncio.ensure_future(delivery.ack(multiple=multiple))
        self._sending.add(task)

        def settle(sent: asyncio.Task[None]) -> None:
            self._sending.discard(sent)
            error = None if sent.cancelled() else sent.exception()
            for _, done in waiting:
                if done.done():
                    continue
                if sent.cancelled():
                    done.cancel()
                elif error is not None:
                    done.set_exception(error)
                else:
                    done.set_result(None)

        task.add_done_callback(settle)
