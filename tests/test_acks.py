"""Ack coalescing logic (worker/acks.py) with recorded deliveries; tests/broker/test_acks.py runs it on RabbitMQ."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import pytest

from worker.broker.acks import AckCoalescer


@dataclass
class Channel:
    frames: list[tuple[int, bool]] = field(default_factory=list)  # (tag, multiple) as written
    fail: BaseException | None = None


@dataclass
class Delivery:
    channel: Channel
    delivery_tag: int | None

    async def ack(self, multiple: bool = False) -> None:
        await asyncio.sleep(0)
        if self.channel.fail is not None:
            raise self.channel.fail
        self.channel.frames.append((self.delivery_tag or 0, multiple))


def deliver(acks: AckCoalescer, channel: Channel, count: int) -> list[Delivery]:
    out = [Delivery(channel, tag) for tag in range(1, count + 1)]
    for d in out:
        acks.delivered(d)
    return out


async def test_a_settled_prefix_goes_out_as_one_multiple_ack() -> None:
    acks, ch = AckCoalescer(), Channel()
    d = deliver(acks, ch, 5)
    await asyncio.gather(*(acks.ack(x) for x in reversed(d[:4])))  # settled in the same tick, any order
    assert ch.frames == [(4, True)]
    assert len(acks) == 1  # tag 5 still in progress
    await acks.ack(d[4])
    assert ch.frames == [(4, True), (5, False)]
    assert len(acks) == 0


async def test_a_delivery_behind_one_in_progress_is_acked_alone_and_at_once() -> None:
    acks, ch = AckCoalescer(), Channel()
    d = deliver(acks, ch, 4)
    await asyncio.gather(acks.ack(d[1]), acks.ack(d[3]))  # 1 and 3 in progress: 2 and 4 must not wait
    assert sorted(ch.frames) == [(2, False), (4, False)]
    await asyncio.gather(acks.ack(d[0]), acks.ack(d[2]))
    # 1 and 3 are the only outstanding ones left: one frame acks both (multiple skips the acked 2)
    assert ch.frames[2:] == [(3, True)]


async def test_a_requeued_delivery_no_longer_blocks_the_prefix() -> None:
    acks, ch = AckCoalescer(), Channel()
    d = deliver(acks, ch, 3)
    acks.forget(d[0])  # nacked: not outstanding any more
    await asyncio.gather(acks.ack(d[1]), acks.ack(d[2]))
    assert ch.frames == [(3, True)]


async def test_a_failed_write_fails_every_waiter_it_covered() -> None:
    acks, ch = AckCoalescer(), Channel(fail=ConnectionResetError("gone"))
    d = deliver(acks, ch, 3)
    results = await asyncio.gather(*(acks.ack(x) for x in d), return_exceptions=True)
    assert all(isinstance(r, ConnectionResetError) for r in results)
    assert ch.frames == []


async def test_deliveries_it_was_not_told_of_are_acked_directly() -> None:
    acks, ch = AckCoalescer(), Channel()
    await acks.ack(Delivery(ch, 9))
    await acks.ack(Delivery(ch, None))
    assert ch.frames == [(9, False), (0, False)]


async def test_a_second_ack_of_the_same_delivery_is_not_swallowed() -> None:
    acks, ch = AckCoalescer(), Channel()
    (d,) = deliver(acks, ch, 1)
    first = asyncio.ensure_future(acks.ack(d))
    await asyncio.sleep(0)
    await acks.ack(d)  # passed straight to the client, which rejects a double ack on a real channel
    await first
    assert ch.frames.count((1, False)) == 2


@pytest.mark.parametrize("seed", range(20))
async def test_random_settlement_never_acks_what_is_in_progress(seed: int) -> None:
    rng = random.Random(seed)
    acks, ch = AckCoalescer(), Channel()
    d = deliver(acks, ch, 30)
    order = list(range(30))
    rng.shuffle(order)
    acked: set[int] = set()
    requeued: set[int] = set()
    while order:
        size = rng.randint(1, 5)
        batch, order = order[:size], order[size:]
        waits = []
        for i in batch:
            if rng.random() < 0.15:
                acks.forget(d[i])
                requeued.add(i + 1)
            else:
                waits.append(acks.ack(d[i]))
                acked.add(i + 1)
        await asyncio.gather(*waits)
        # the broker's view: a multiple ack covers every outstanding tag up to it
        outstanding = set(range(1, 31)) - requeued
        covered: set[int] = set()
        for tag, multiple in ch.frames:
            covered |= {t for t in outstanding if t <= tag} if multiple else {tag}
        assert covered <= acked, "acked a delivery that was still in progress"
        assert acked <= covered, "a settled delivery was not acked"
