"""The RabbitMQ topology of SPEC: names, and the queue arguments that make retries and limits broker-held."""

from __future__ import annotations

from typing import Any

OUTBOUND = "sendpipe.outbound"
DELIVERY = "sendpipe.delivery"
SUSPENDED = "sendpipe.suspended"
# A quorum queue counts deliveries; a message that keeps killing its consumer (crash, OOM) is
# dead-lettered to the suspended queue after this many tries instead of looping forever.
DELIVERY_LIMIT = 20


def host_queue(host: str) -> str:
    return f"sendpipe.host.{host}"


def suspended_queue(host: str) -> str:
    return f"sendpipe.suspended.{host}"


def retry_queue(host: str, interval_s: float) -> str:
    return f"sendpipe.retry.{host}.{round(interval_s * 1000)}ms"


def _quorum(**extra: Any) -> dict[str, Any]:
    # At-least-once dead lettering (RabbitMQ 3.10+) needs reject-publish overflow: a dead-lettered
    # message is only dropped from the source once the target confirmed it.
    return {"x-queue-type": "quorum", "x-overflow": "reject-publish", **extra}


def host_queue_args(host: str) -> dict[str, Any]:
    return _quorum(**{
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": SUSPENDED,
        "x-dead-letter-routing-key": host,
        "x-dead-letter-strategy": "at-least-once",
    })  # fmt: skip


def retry_queue_args(host: str, interval_s: float) -> dict[str, Any]:
    # The retry is held by the broker (survives restarts): a TTL queue that dead-letters back into
    # the host queue when the interval has passed.
    return _quorum(**{
        "x-message-ttl": round(interval_s * 1000),
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": host_queue(host),
        "x-dead-letter-strategy": "at-least-once",
    })  # fmt: skip


def suspended_queue_args() -> dict[str, Any]:
    return _quorum()
