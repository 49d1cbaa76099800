"""SPEC's guarantees where RabbitMQ 4 and 3.10 differ (issue 10's findings), on every broker of tests/brokers.py."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pika
from brokerkit import SENDPIPE, Client, Deployment

MIB = 1 << 20


def sendpipe(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SENDPIPE, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def _publish_without_id(url: str, port: str, body: bytes) -> None:
    """As a producer whose client sets no message_id (pika; aiormq would assign one)."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = conn.channel()
        channel.confirm_delivery()
        channel.basic_publish("sendpipe.outbound", port, body, pika.BasicProperties(delivery_mode=2), mandatory=True)
    finally:
        conn.close()


def _rows(listing: subprocess.CompletedProcess[str]) -> list[list[str]]:
    assert listing.returncode == 0, listing.stderr
    return [line.split() for line in listing.stdout.splitlines()[2:-1]]


async def test_listing_suspended_messages_never_uses_up_their_delivery_budget(
    vhost: str, deployment: Deployment, workers: Any, client: Client
) -> None:
    """Finding 1: on 4.x every `suspended list` returned each message once (channel close), and the
    21st made the quorum queue drop them all (its default delivery limit is 20)."""
    env = deployment.env(vhost, "svc-b")
    worker = workers(env)
    worker.wait_for("consumer.started")
    for i in range(3):
        await client.publish("Ghost", b"ghost %d" % i, message_id=f"g{i}")
    worker.wait_for("message.suspended", 3)
    for _ in range(22):
        rows = await asyncio.to_thread(lambda: _rows(sendpipe(env, "suspended", "list")))
        assert sorted(r[0] for r in rows) == ["g0", "g1", "g2"]
    for _ in range(3):
        shown = await asyncio.to_thread(sendpipe, env, "suspended", "show", "g1")
        assert shown.returncode == 0 and '"g1"' in shown.stdout
    discarded = await asyncio.to_thread(sendpipe, env, "suspended", "discard", "g2")
    assert discarded.returncode == 0 and "suspended.discarded" in discarded.stderr  # the audit line
    assert await client.count("sendpipe.suspended.SendHost") == 2
    kept = await client.drain("sendpipe.suspended.SendHost", 2)
    assert sorted(str(m.message_id) for m in kept) == ["g0", "g1"]
    for m in kept:  # the original body and our failure headers, untouched by being listed 25 times
        assert m.body == b"ghost %d" % int(str(m.message_id)[1:])
        assert m.headers["sendpipe-error-code"] == "encryption-cert-not-found"


async def test_an_entity_over_the_brokers_size_limit_is_suspended_before_it_is_published(
    vhost: str, deployment: Deployment, workers: Any, client: Client, tmp_path: Path
) -> None:
    """Finding 2: a 7 MiB payload is an ~18 MiB BlobSign+AES256 entity; RabbitMQ 4 closes the channel
    for anything over 16 MiB, and the instance crash-looped through reconnects."""
    env = deployment.env(vhost, "svc-b")
    worker = workers(env)
    worker.wait_for("consumer.started")
    capture = await client.capture()
    await client.publish("Orders", b"\x00" * (7 * MIB), message_id="big")
    await client.publish("Orders", b"small after it", message_id="small")
    (suspended,) = worker.wait_for("message.suspended", timeout_s=60)
    assert suspended["error_code"] == "message-too-large" and suspended["failed_stage"] == "deliver"
    assert "SENDPIPE_BROKER_MAX_MESSAGE_BYTES" in suspended["error"]
    worker.wait_for("message.delivered")
    delivered = await client.drain(capture.name, 1)
    assert [m.message_id for m in delivered] == ["small"]
    assert not worker.events("broker.connection_lost") and not worker.events("broker.session_failed")
    (held,) = await client.drain("sendpipe.suspended.SendHost", 1)
    assert held.message_id == "big" and held.headers["sendpipe-error-code"] == "message-too-large"
    # A producer is told before it publishes, not with a traceback.
    big = tmp_path / "big.bin"
    big.write_bytes(b"\x00" * (17 * MIB))
    sent = await asyncio.to_thread(sendpipe, env, "send", "--port", "Orders", str(big))
    assert sent.returncode == 1 and sent.stderr.startswith("sendpipe: error [message-too-large]:"), sent.stderr


async def test_a_message_that_cannot_be_settled_spends_its_delivery_budget(
    vhost: str, deployment: Deployment, workers: Any, client: Client
) -> None:
    """Finding 3: returned with basic.nack, which RabbitMQ 4.3 no longer counts, such a message was
    requeued once a second forever; basic.reject counts on every version."""
    env = deployment.env(vhost, "svc-b")
    worker = workers(env)
    worker.wait_for("consumer.started")
    suspended_q = await client.channel.get_queue("sendpipe.suspended.SendHost")
    await suspended_q.unbind("sendpipe.suspended", "SendHost")  # the suspension publish is now unroutable
    await client.publish("Ghost", b"cannot be suspended yet", message_id="u1")
    unsettled = worker.wait_for("message.unsettled", 3, timeout_s=30)
    assert [e["delivery_count"] for e in unsettled[:3]] == [0, 1, 2]
    assert unsettled[0]["error_code"] == "delivery-unroutable"
    await suspended_q.bind("sendpipe.suspended", "SendHost")
    (done,) = worker.wait_for("message.suspended", timeout_s=30)
    assert done["error_code"] == "encryption-cert-not-found" and done["message_id"] == "u1"


async def test_the_brokers_counters_never_reach_the_partner(
    vhost: str, deployment: Deployment, workers: Any, client: Client
) -> None:
    """Finding 4: RabbitMQ 4.3 adds x-acquired-count to a redelivered message (3.10: x-delivery-count)."""
    env = deployment.env(vhost, "svc-b")
    first = workers(env)
    first.wait_for("consumer.started")
    first.signal()
    assert first.wait() == 0
    capture = await client.capture()
    await client.publish("Orders", b"returned twice first", message_id="r1", headers={"x-trace": "t-1"})
    host_q = await client.channel.get_queue("sendpipe.host.SendHost")
    for settle in ("nack", "reject"):
        taken = await host_q.get(no_ack=False, timeout=10)
        await (taken.nack(requeue=True) if settle == "nack" else taken.reject(requeue=True))
    again = await host_q.get(no_ack=False, timeout=10)
    counters = {k for k in (again.headers or {}) if k in {"x-delivery-count", "x-acquired-count"}}
    assert counters, "the broker did not count the returns: this test would prove nothing"
    await again.reject(requeue=True)
    workers(env).wait_for("message.delivered")
    (out,) = await client.drain(capture.name, 1)
    assert out.headers["x-trace"] == "t-1"  # the producer's own x- header passes
    assert not {k for k in out.headers if k.startswith(("x-delivery", "x-acquired", "x-death"))}


async def test_a_message_without_id_keeps_one_id_across_retries_and_suspension(
    vhost: str, deployment: Deployment, workers: Any, client: Client
) -> None:
    """Finding 11: each attempt made a new id, and the retry and suspended copies had none."""
    env = deployment.env(vhost, "svc-b")
    worker = workers(env)
    worker.wait_for("consumer.started")
    # Nothing is bound to sendpipe.delivery: unroutable, retried twice (1 s), then suspended.
    await asyncio.to_thread(_publish_without_id, vhost, "Orders", b"anonymous")
    (suspended,) = worker.wait_for("message.suspended", timeout_s=30)
    (assigned,) = worker.events("message.id_assigned")
    the_id = assigned["assigned_message_id"]
    assert suspended["error_code"] == "retries-exhausted" and suspended["message_id"] == the_id
    retries = worker.events("message.retry_scheduled")
    assert len(retries) == 2 and {e["message_id"] for e in retries} == {the_id}
    (held,) = await client.drain("sendpipe.suspended.SendHost", 1)
    assert held.message_id == the_id


async def test_a_consumer_cancelled_by_the_broker_is_noticed_and_consuming_resumes(
    vhost: str, deployment: Deployment, workers: Any, client: Client
) -> None:
    """Finding 9: with its queue deleted, the instance kept an open channel and a green health check."""
    env = deployment.env(vhost, "svc-b")
    worker = workers(env)
    worker.wait_for("consumer.started")
    await client.channel.queue_delete("sendpipe.host.SendHost")
    lost = worker.wait_for("broker.connection_lost")
    assert "cancelled our consumer" in lost[0]["reason"]
    worker.wait_for("consumer.started", 2)  # re-declared and consuming again
    capture = await client.capture()
    await client.publish("Orders", b"after the queue came back", message_id="after")
    worker.wait_for("message.delivered")
    assert [m.message_id for m in await client.drain(capture.name, 1)] == ["after"]


async def test_the_node_list_is_tried_in_order(
    vhost: str, deployment: Deployment, workers: Any, client: Client
) -> None:
    """Finding 6: SENDPIPE_AMQP_URL with commas = the nodes of one cluster (the first one here is down)."""
    vhost_name = vhost.rsplit("/", 1)[1]
    nodes = f"amqp://guest:guest@127.0.0.1:1/{vhost_name},{vhost}"
    worker = workers(deployment.env(vhost, "svc-b", SENDPIPE_AMQP_URL=nodes))
    (started,) = worker.wait_for("consumer.started")
    assert started["node"] == 2
    capture = await client.capture()
    await client.publish("Orders", b"via node 2", message_id="n2")
    worker.wait_for("message.delivered")
    assert len(await client.drain(capture.name, 1)) == 1


def test_a_mistyped_broker_variable_refuses_to_start(vhost: str, deployment: Deployment) -> None:
    env = deployment.env(vhost, "svc-b")
    env["SENDPIPE_AMQP_URLS"] = env.pop("SENDPIPE_AMQP_URL")
    done = subprocess.run([SENDPIPE, "run"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "SENDPIPE_AMQP_URL is not set but SENDPIPE_AMQP_URLS is" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
