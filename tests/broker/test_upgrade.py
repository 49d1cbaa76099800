"""Upgrade path: a deployment whose queues the previous release (0.1.0, commit e212721) declared keeps working.

A queue's arguments cannot change once declared: a redeclare with other arguments fails with
PRECONDITION_FAILED and the instance could never consume again. This release keeps every argument
equivalent (the suspended queue's delivery budget is protected by how it is read, not by a new argument),
and this test pins that: the old topology is declared with the literal arguments 0.1.0 used, holding a
suspended message and a pending retry, and the new instance must consume, deliver and list them.
"""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import aio_pika
from brokerkit import SENDPIPE, Client, Deployment

# Exactly what worker/topology.py of 0.1.0 declared (quorum, reject-publish, at-least-once dead lettering).
OLD_QUORUM: dict[str, Any] = {"x-queue-type": "quorum", "x-overflow": "reject-publish"}
OLD_HOST_QUEUE: dict[str, Any] = {
    **OLD_QUORUM,
    "x-delivery-limit": 20,
    "x-dead-letter-exchange": "sendpipe.suspended",
    "x-dead-letter-routing-key": "SendHost",
    "x-dead-letter-strategy": "at-least-once",
}
OLD_RETRY_1S: dict[str, Any] = {
    **OLD_QUORUM,
    "x-message-ttl": 1000,
    "x-dead-letter-exchange": "",
    "x-dead-letter-routing-key": "sendpipe.host.SendHost",
    "x-dead-letter-strategy": "at-least-once",
}


async def _declare_old_topology(client: Client) -> None:
    ch = client.channel
    outbound = await ch.declare_exchange("sendpipe.outbound", "direct", durable=True)
    await ch.declare_exchange("sendpipe.delivery", "topic", durable=True)
    suspended = await ch.declare_exchange("sendpipe.suspended", "direct", durable=True)
    susp_q = await ch.declare_queue("sendpipe.suspended.SendHost", durable=True, arguments=OLD_QUORUM)
    await susp_q.bind(suspended, routing_key="SendHost")
    host_q = await ch.declare_queue("sendpipe.host.SendHost", durable=True, arguments=OLD_HOST_QUEUE)
    for port in ("Orders", "Invoices", "Ghost"):
        await host_q.bind(outbound, routing_key=port)
    await ch.declare_queue("sendpipe.retry.SendHost.1000ms", durable=True, arguments=OLD_RETRY_1S)


async def test_queues_declared_by_the_previous_release_keep_working(
    vhost: str, deployment: Deployment, workers: Any, client: Client
) -> None:
    await _declare_old_topology(client)
    capture = await client.capture()
    # What the old release left behind: a suspended message and a pending retry.
    await client.channel.default_exchange.publish(
        aio_pika.Message(
            b"suspended by 0.1.0",
            message_id="old-s",
            headers={"sendpipe-error-code": "encryption-cert-not-found", "sendpipe-send-port": "Orders"},
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key="sendpipe.suspended.SendHost",
    )
    await client.channel.default_exchange.publish(
        aio_pika.Message(
            b"retried by 0.1.0",
            message_id="old-r",
            headers={"sendpipe-attempts": 1, "sendpipe-send-port": "Orders"},
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key="sendpipe.retry.SendHost.1000ms",
    )
    env = deployment.env(vhost, "svc-b")
    worker = workers(env)
    worker.wait_for("consumer.started")
    await client.publish("Orders", b"after the upgrade", message_id="new")
    worker.wait_for("message.delivered", 2, timeout_s=30)  # the new one and the old retry
    got = await client.drain(capture.name, 2)
    assert sorted(str(m.message_id) for m in got) == ["new", "old-r"]
    assert not worker.events("broker.session_failed") and not worker.events("broker.connection_lost")
    listing = await asyncio.to_thread(
        subprocess.run, [SENDPIPE, "suspended", "list"], env=env, capture_output=True, text=True, timeout=60
    )
    assert listing.returncode == 0 and "old-s" in listing.stdout, listing.stderr
