"""Coalesced acks on the real broker: what is acked is gone, what is requeued or unsettled comes back."""

from __future__ import annotations

import asyncio
import random

import aio_pika
from pydantic import SecretStr

from worker.broker import session as broker
from worker.broker.inbound import Inbound
from worker.settings import BrokerSettings

COUNT = 60


async def test_out_of_order_settlement_acks_exactly_the_settled(vhost: str) -> None:
    conn = await aio_pika.connect(vhost)
    ch = await conn.channel()
    queue = await ch.declare_queue("acks-test", durable=True, arguments={"x-queue-type": "quorum"})
    for i in range(COUNT):
        await ch.default_exchange.publish(aio_pika.Message(str(i).encode()), routing_key=queue.name)

    first: dict[int, Inbound] = {}
    arrived = asyncio.Event()

    async def handler(inbound: Inbound) -> None:
        if not inbound.redelivered:  # a requeued message comes back to us: leave it unsettled
            first[int(inbound.body)] = inbound
            if len(first) == COUNT:
                arrived.set()

    session = await broker.connect(BrokerSettings(amqp_url=SecretStr(vhost)), name="acks-test", prefetch_count=COUNT)
    await session.consume(queue.name, handler)
    await asyncio.wait_for(arrived.wait(), 30)

    rng = random.Random(7)
    order = list(range(COUNT))
    rng.shuffle(order)
    held = {order.pop(), order.pop()}  # never settled: back to the queue when the channel closes
    requeued: set[int] = set()
    while order:
        size = rng.randint(1, 8)
        batch, order = order[:size], order[size:]
        settle = []
        for i in batch:
            if rng.random() < 0.1:
                requeued.add(i)
                settle.append(first[i].release())
            else:
                settle.append(first[i].ack())
        await asyncio.gather(*settle)  # one tick: the acks among them coalesce
    await asyncio.sleep(0.2)
    await session.close()

    expected = sorted(held | requeued)
    back: list[int] = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        back.append(int(message.body))
    await conn.close()
    assert sorted(back) == expected, "an ack covered a message that was not settled, or a settled one came back"
