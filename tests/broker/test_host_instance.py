"""`sendpipe run` against the real RabbitMQ: delivery, competing accounts, refusal, suspension, retries."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aio_pika
from brokerkit import STORE_PASSWORD, Client, Deployment
from smime_check import unwrap

MARKER = b"PAYLOAD-MARKER-7f3a"  # must never appear in a log line


def _check_delivered(msg: Any, dep: Deployment, work: Path, payload: bytes) -> str:
    """Decrypt and verify with openssl; returns the payload part's Content-Type."""
    result = unwrap(msg.body, work, ca_pem=dep.pki.ca_pem, recip_cert=dep.partner_cert, recip_key=dep.partner_key)
    assert result.payload == payload
    assert result.signer_thumbprint == dep.signer.thumbprint
    assert msg.headers["sendpipe-signer-thumbprint"] == dep.signer.thumbprint
    assert msg.headers["sendpipe-recipient-thumbprint"] == dep.partner.thumbprint
    assert msg.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert msg.content_type.startswith("application/pkcs7-mime; smime-type=enveloped-data")
    return result.content_type


async def test_end_to_end_delivery_is_verified_by_openssl(
    vhost: str, deployment: Deployment, workers: Any, client: Client, tmp_path: Path
) -> None:
    worker = workers(deployment.env(vhost, "svc-a"))
    worker.wait_for("consumer.started")
    capture = await client.capture()
    payloads = {
        "text-1": (b"line one\nline two\n" + MARKER, "Orders", "text/plain; charset=utf-8"),
        "bin-1": (bytes(range(256)) * 4 + b"\r\n\x00\r" + MARKER, "Orders", None),
        "as2-1": (b"\x00\xff\r\n\n" + os.urandom(3000) + MARKER, "Invoices", "application/edi-x12"),
        # above SENDPIPE_INLINE_MAX_BYTES: encoded in the thread pool rather than on the event loop
        "big-1": (os.urandom(300_000) + MARKER, "Orders", None),
    }
    for mid, (body, port, ctype) in payloads.items():
        props: dict[str, Any] = {"message_id": mid, "correlation_id": f"corr-{mid}", "headers": {"x-trace": "t1"}}
        if ctype:
            props["content_type"] = ctype
        await client.publish(port, body, **props)
    got = {m.message_id: m for m in await client.drain(capture.name, len(payloads))}
    assert set(got) == set(payloads)
    for mid, (body, port, ctype) in payloads.items():
        msg = got[mid]
        assert _check_delivered(msg, deployment, tmp_path / mid, body) == (ctype or "application/octet-stream")
        assert msg.correlation_id == f"corr-{mid}"
        assert msg.routing_key == {"Orders": "fabrikam.orders", "Invoices": "fabrikam.invoices"}[port]
        headers = msg.headers
        assert headers["sendpipe-send-port"] == port
        assert headers["sendpipe-host"] == "SendHost"
        assert headers["sendpipe-service-account"] == "svc-a"
        assert headers["sendpipe-host-instance"] == worker.env["SENDPIPE_HOST_INSTANCE"]
        assert headers["sendpipe-pipeline"] == {"Orders": "SignAndEncrypt", "Invoices": "AS2"}[port]
        assert headers["x-trace"] == "t1"  # the input's other headers pass through
    delivered = worker.wait_for("message.delivered", len(payloads))
    for line in delivered:
        for key in (
            "message_id",
            "send_port",
            "host",
            "host_instance",
            "service_account",
            "size_in",
            "size_out",
            "duration_ms",
            "pipeline_cpu_ms",
        ):
            assert key in line, (key, line)
        # The encoder's CPU on its thread: some, and never more than the whole handling took.
        assert 0 < line["pipeline_cpu_ms"] <= line["duration_ms"] + 0.01, line
    log_text = worker.log_path.read_bytes()
    assert MARKER not in log_text and STORE_PASSWORD.encode() not in log_text


async def test_two_service_accounts_compete_on_the_host_queue(
    vhost: str, deployment: Deployment, workers: Any, client: Client, tmp_path: Path
) -> None:
    a = workers(deployment.env(vhost, "svc-a", SENDPIPE_PREFETCH_COUNT="2"))
    b = workers(deployment.env(vhost, "svc-b", SENDPIPE_PREFETCH_COUNT="2"))
    a.wait_for("consumer.started")
    b.wait_for("consumer.started")
    capture = await client.capture()
    for i in range(40):
        await client.publish("Orders", b"order %d" % i, message_id=f"m{i}")
    got = await client.drain(capture.name, 40)
    assert sorted(str(m.message_id) for m in got) == sorted(f"m{i}" for i in range(40))
    accounts = {m.headers["sendpipe-service-account"] for m in got}
    assert accounts == {"svc-a", "svc-b"}
    # Each account signs with the group certificate from its own store.
    for account in ("svc-a", "svc-b"):
        sample = next(m for m in got if m.headers["sendpipe-service-account"] == account)
        _check_delivered(sample, deployment, tmp_path / account, b"order %d" % int(str(sample.message_id)[1:]))


def test_instance_without_the_group_cert_refuses_to_start(vhost: str, deployment: Deployment, workers: Any) -> None:
    worker = workers(deployment.env(vhost, "svc-c"))
    assert worker.wait(30) == 1
    refused = worker.events("instance.refused")
    assert len(refused) == 1
    line = refused[0]
    assert line["service_account"] == "svc-c"
    assert line["thumbprint"] == deployment.signer.thumbprint
    assert line["store"].endswith("svc-c/personal")
    assert line["error_code"] == "signing-cert-not-found"
    assert worker.events("consumer.started") == []


async def _suspended(client: Client, count: int) -> dict[str, Any]:
    return {str(m.message_id): m for m in await client.drain("sendpipe.suspended.SendHost", count)}


async def test_permanent_errors_are_suspended_with_their_code(
    vhost: str, deployment: Deployment, workers: Any, client: Client
) -> None:
    worker = workers(deployment.env(vhost, "svc-a", SENDPIPE_MAX_MESSAGE_BYTES="4096"))
    worker.wait_for("consumer.started")
    await client.capture()
    cases: dict[str, tuple[str, bytes, dict[str, Any]]] = {
        "encryption-cert-not-found": ("Ghost", b"to ghost", {}),
        "invalid-thumbprint": ("Orders", b"bad override", {"headers": {"sendpipe-encryption-thumbprint": "../../x"}}),
        "message-too-large": ("Orders", b"x" * 5000, {}),
        "invalid-content-type": ("Orders", b"ct", {"content_type": "text/plain\r\nBcc: evil@example.com"}),
    }
    for code, (port, body, props) in cases.items():
        await client.publish(port, body, message_id=code, correlation_id="c-" + code, **props)
    # A message routed to the host queue without a send port (e.g. a port removed from config).
    await client.channel.default_exchange.publish(
        aio_pika.Message(b"orphan", message_id="unknown-send-port"), routing_key="sendpipe.host.SendHost"
    )
    got = await _suspended(client, len(cases) + 1)
    for code in [*cases, "unknown-send-port"]:
        msg = got[code]
        assert msg.headers["sendpipe-error-code"] == code
        assert msg.headers["sendpipe-error"]
        assert msg.headers["sendpipe-failed-stage"]
        assert msg.headers["sendpipe-host-instance"] == worker.env["SENDPIPE_HOST_INSTANCE"]
        assert msg.headers["sendpipe-attempts"] == 1
        assert msg.headers["sendpipe-suspended-at"].endswith("Z")
        if code in cases:
            assert msg.body == cases[code][1]  # the original body, untouched
            assert msg.correlation_id == "c-" + code
            assert msg.headers["sendpipe-send-port"] == cases[code][0]
    assert got["invalid-content-type"].content_type == "text/plain\r\nBcc: evil@example.com"
    assert len(worker.wait_for("message.suspended", len(cases) + 1)) == len(cases) + 1  # logged after the ack
    assert await client.count("sendpipe.host.SendHost") == 0
    assert worker.proc is not None and worker.proc.poll() is None  # still running


async def test_transient_failure_is_retried_then_delivered(
    vhost: str, deployment: Deployment, workers: Any, client: Client, tmp_path: Path
) -> None:
    worker = workers(deployment.env(vhost, "svc-a"))
    worker.wait_for("consumer.started")
    # No queue bound to the delivery key yet: the mandatory publish comes back, a transient failure.
    await client.publish("Orders", b"retry me", message_id="r1")
    first = worker.wait_for("message.retry_scheduled")[0]
    assert first["error_code"] == "delivery-unroutable"
    capture = await client.capture("fabrikam.#")
    (msg,) = await client.drain(capture.name, 1, timeout_s=20)
    _check_delivered(msg, deployment, tmp_path / "r1", b"retry me")
    delivered = worker.wait_for("message.delivered")[0]
    assert delivered["attempt"] == 2 and delivered["message_id"] == "r1"
    assert "sendpipe-attempts" not in msg.headers  # our bookkeeping does not reach the partner


async def test_persistent_transient_failure_ends_retries_exhausted(
    vhost: str, deployment: Deployment, workers: Any, client: Client
) -> None:
    worker = workers(deployment.env(vhost, "svc-a"))
    worker.wait_for("consumer.started")
    await client.publish("Orders", b"never routable", message_id="x1", headers={"k": "v"})
    got = await _suspended(client, 1)
    msg = got["x1"]
    assert msg.headers["sendpipe-error-code"] == "retries-exhausted"
    assert msg.headers["sendpipe-attempts"] == 3  # retry_count = 2: one try and two retries
    assert msg.headers["k"] == "v"
    assert msg.body == b"never routable"
    assert len(worker.events("message.retry_scheduled")) == 2
