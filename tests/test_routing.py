"""Routing rules (pure): which send port, how many attempts, which headers travel where."""

from __future__ import annotations

from worker.errors import Code, DeliveryFailed, MessageError
from worker.host import routing
from worker.message import Message

ME = routing.Identity("SendHost", "inst-1", "svc-a")


def test_port_comes_from_the_routing_key_for_producers_and_from_our_header_on_retries() -> None:
    assert routing.port_of("sendpipe.outbound", "Orders", {"sendpipe-send-port": "Spoofed"}) == "Orders"
    assert routing.port_of("", "sendpipe.host.SendHost", {"sendpipe-send-port": b"Orders"}) == "Orders"
    assert routing.port_of("", "sendpipe.host.SendHost", {}) == "sendpipe.host.SendHost"  # -> unknown port


def test_a_producer_cannot_pre_spend_retries() -> None:
    assert routing.prior_attempts("sendpipe.outbound", {"sendpipe-attempts": 99}) == 0
    assert routing.prior_attempts("", {"sendpipe-attempts": 2}) == 2
    assert routing.prior_attempts("", {"sendpipe-attempts": "2"}) == 0
    assert routing.prior_attempts("", {"sendpipe-attempts": -1}) == 0


def test_delivery_headers_pass_the_inputs_own_and_set_ours() -> None:
    inbound = {
        "x-trace": "t",
        "x-death": [{}],
        "x-delivery-count": 3,
        "sendpipe-attempts": 2,
        "sendpipe-host": "forged",
        "sendpipe-filename": "a.edi",
    }
    result = Message(
        b"entity",
        "m1",
        "Orders",
        headers=inbound,
        entity_content_type="application/pkcs7-mime",
        signer_thumbprint="AA" * 20,
        recipient_thumbprint=None,
        correlation_id="c1",
    )
    out = routing.delivery(result, "SignOnly", "fabrikam.orders", ME)
    assert out.routing_key == "fabrikam.orders" and out.message_id == "m1" and out.correlation_id == "c1"
    assert out.content_type == "application/pkcs7-mime"
    assert out.headers == {
        "x-trace": "t",
        "sendpipe-filename": "a.edi",
        "sendpipe-send-port": "Orders",
        "sendpipe-host": "SendHost",
        "sendpipe-host-instance": "inst-1",
        "sendpipe-service-account": "svc-a",
        "sendpipe-pipeline": "SignOnly",
        "sendpipe-signer-thumbprint": "AA" * 20,
    }


def test_retry_and_suspension_keep_the_original_body_and_say_why() -> None:
    err = DeliveryFailed("no queue", code=Code.DELIVERY_UNROUTABLE, stage="deliver")
    retry = routing.retry(b"orig", {"k": "v"}, "sendpipe.retry.SendHost.300000ms", "Orders", 1, err)
    assert retry.body == b"orig" and retry.routing_key == "sendpipe.retry.SendHost.300000ms"
    assert retry.headers == {
        "k": "v",
        "sendpipe-attempts": 1,
        "sendpipe-send-port": "Orders",
        "sendpipe-last-error-code": "delivery-unroutable",
    }
    bad = MessageError("too big", code=Code.MESSAGE_TOO_LARGE, stage="receive")
    susp = routing.suspension(b"orig", retry.headers, bad, "Orders", 2, ME)
    assert susp.body == b"orig" and susp.routing_key == "SendHost"
    h = susp.headers
    assert h["sendpipe-error-code"] == "message-too-large" and h["sendpipe-failed-stage"] == "receive"
    assert h["sendpipe-attempts"] == 2 and h["sendpipe-host-instance"] == "inst-1" and h["k"] == "v"
    assert "sendpipe-last-error-code" not in h and h["sendpipe-suspended-at"].endswith("Z")


def test_the_brokers_own_headers_never_reach_partners() -> None:
    """RabbitMQ 4.3 adds x-acquired-count to every redelivery (finding 4); shovels and federation add theirs."""
    inbound = {
        "x-acquired-count": 2,
        "x-delivery-count": 1,
        "x-first-death-queue": "q",
        "x-last-death-reason": "expired",
        "x-received-from": [{}],
        "x-shovelled": [{}],
        "x-opt-rabbitmq-received-time": 1,
        "x-trace": "kept: a producer's own x- header",
    }
    out = routing.passthrough(inbound)
    assert out == {"x-trace": "kept: a producer's own x- header"}
