"""Shutdown under load and broker connection loss: nothing lost, duplicates bounded and counted."""

from __future__ import annotations

import asyncio
import collections
import signal
import time
from typing import Any

import aio_pika
from brokerkit import Client, Deployment
from brokers import broker_of

N = 1000  # enough that an instance is still busy when the fault lands (it does ~300-600/s here)


async def _publish_many(client: Client, n: int, prefix: str) -> list[str]:
    ids = [f"{prefix}-{i}" for i in range(n)]
    for mid in ids:
        await client.publish("Orders", f"payload {mid}".encode(), message_id=mid)
    return ids


async def _fill_paused(worker: Any, client: Client, prefix: str) -> list[str]:
    """Publish N while the instance is stopped (SIGSTOP), so the fault always hits it with a full queue."""
    worker.signal(signal.SIGSTOP)
    try:
        return await _publish_many(client, N, prefix)
    finally:
        worker.signal(signal.SIGCONT)


async def _wait_count(client: Client, queue: str, at_least: int, timeout_s: float = 60) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        n = await client.count(queue)
        if n >= at_least:
            return n
        await asyncio.sleep(0.05)
    raise AssertionError(f"{queue}: fewer than {at_least} messages within {timeout_s}s")


def _reconcile(published: list[str], delivered: list[Any]) -> dict[str, int]:
    seen = collections.Counter(m.message_id for m in delivered)
    lost = [mid for mid in published if mid not in seen]
    unexpected = [mid for mid in seen if mid not in set(published)]
    return {
        "published": len(published),
        "delivered": len(seen),
        "duplicated": sum(c - 1 for c in seen.values()),
        "lost": len(lost),
        "unexpected": len(unexpected),
    }


async def test_sigterm_under_load_drains_and_loses_nothing(
    vhost: str, deployment: Deployment, workers: Any, client: Client
) -> None:
    capture = await client.capture()
    first = workers(deployment.env(vhost, "svc-a", SENDPIPE_DRAIN_TIMEOUT_S="10"))
    first.wait_for("consumer.started")
    published = await _fill_paused(first, client, "t")
    await _wait_count(client, capture.name, 30)
    first.signal()
    assert first.wait(30) == 0  # drained and exited cleanly
    assert first.events("consumer.drained") and first.events("instance.stopped")
    # The rest was returned to the queue; a second instance (other account) finishes the work.
    second = workers(deployment.env(vhost, "svc-b"))
    second.wait_for("consumer.started")
    delivered_a = len(first.events("message.delivered"))
    await _wait_count(client, capture.name, N)
    got = await client.drain(capture.name, await client.count(capture.name))
    figures = _reconcile(published, got)
    figures["suspended"] = await client.count("sendpipe.suspended.SendHost")
    print(f"\nSIGTERM under load: {figures}, first instance delivered {delivered_a} before stopping")
    assert 0 < delivered_a < N
    assert figures["lost"] == 0 and figures["unexpected"] == 0 and figures["suspended"] == 0
    # A graceful stop finishes or returns what it holds: no message is published twice.
    assert figures["duplicated"] == 0


async def test_killed_connections_are_recovered_and_processing_continues(
    vhost: str, deployment: Deployment, workers: Any, client: Client
) -> None:
    capture = await client.capture()
    worker = workers(deployment.env(vhost, "svc-a", SENDPIPE_PREFETCH_COUNT="8"))
    worker.wait_for("consumer.started")
    published = await _fill_paused(worker, client, "k")
    await _wait_count(client, capture.name, 40)
    started = time.monotonic()
    name = vhost.rsplit("/", 1)[1]
    broker_of(vhost).ctl("close_all_connections", "-p", name, "sendpipe test: killed", timeout_s=60)
    worker.wait_for("consumer.started", count=2, timeout_s=30)
    recovery_s = time.monotonic() - started
    # Our own client connection was closed as well; a producer would reconnect too.
    conn = await aio_pika.connect(vhost)
    try:
        fresh = Client(conn, await conn.channel())
        await _wait_count(fresh, capture.name, N, timeout_s=90)
        got = await fresh.drain(capture.name, await fresh.count(capture.name))
        # Duplicates (allowed, below) count towards N: the last distinct ones may still be on their way.
        deadline = time.monotonic() + 30
        while _reconcile(published, got)["lost"] and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            more = await fresh.count(capture.name)
            if more:
                got += await fresh.drain(capture.name, more)
        figures = _reconcile(published, got)
        figures["suspended"] = await fresh.count("sendpipe.suspended.SendHost")
    finally:
        await conn.close()
    print(f"\nclose_all_connections under load: {figures}, consuming again after {recovery_s:.1f}s")
    assert figures["lost"] == 0 and figures["unexpected"] == 0 and figures["suspended"] == 0
    # Deliveries in flight when the channel died are redelivered: at most one prefetch window twice.
    assert figures["duplicated"] <= 8
    assert worker.events("broker.connection_lost")
    assert worker.proc is not None and worker.proc.poll() is None
