"""`sendpipe demo mailbox`: the demo partners' side of the broker, a mailbox queue per partner on sendpipe.delivery.

sendpipe publishes protected messages to the ``sendpipe.delivery`` topic exchange *mandatory*: with nothing
bound for a send port's ``delivery_key`` every message is unroutable, retried, then suspended
``retries-exhausted``. Binding a queue there is the receiving side's business (a partner's transport,
an AS2 gateway), never a host instance's, whose topology is fixed by SPEC. The demo has no partners, so
this command plays them: it declares (idempotently) one durable quorum queue per demo partner, bound to
the delivery keys of the demo config. Like a partner it talks to the broker with aio-pika directly.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import aio_pika

from worker import settings
from worker.errors import BrokerUnavailable
from worker.settings import BrokerSettings

DELIVERY = "sendpipe.delivery"  # SPEC's delivery exchange (declared the same way by every host instance)
# Mailbox queue -> the delivery keys bound to it (the demo config's send ports: `sendpipe demo init`).
MAILBOXES: dict[str, tuple[str, ...]] = {
    "demo.partner.fabrikam": ("fabrikam.#",),
    "demo.partner.northwind": ("northwind.#",),
    "demo.partner.audit": ("audit.#",),
}


def register(actions: Any) -> None:
    """Add `sendpipe demo mailbox` under `sendpipe demo`."""
    box = actions.add_parser(
        "mailbox",
        help="Declare the demo partners' mailbox queues, bound to sendpipe.delivery (SENDPIPE_AMQP_URL).",
        description="Declare, idempotently, one quorum queue per demo partner bound to the sendpipe.delivery "
        "exchange with the demo config's delivery keys, so the demo's messages are delivered, not suspended. "
        + ", ".join(f"{q} <- {' '.join(keys)}" for q, keys in MAILBOXES.items()),
    )
    box.add_argument(
        "--wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="keep trying to connect this long (default 60: a broker whose health check passes may not "
        "listen yet), then fail with broker-unavailable",
    )
    box.set_defaults(func=cmd_mailbox)


def cmd_mailbox(args: argparse.Namespace) -> int:
    brk = settings.load(BrokerSettings)
    asyncio.run(declare(brk.amqp_urls[0], wait_s=args.wait))
    for queue, keys in MAILBOXES.items():
        print(f"{queue}: bound to {DELIVERY} with {', '.join(keys)}")
    return 0


async def declare(url: str, *, wait_s: float = 0.0) -> None:
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        try:
            conn = await aio_pika.connect(url)
            break
        except (OSError, aio_pika.exceptions.AMQPError) as exc:
            # `rabbitmq-diagnostics ping` (compose's health check) passes before the AMQP listener is up.
            if asyncio.get_running_loop().time() >= deadline:
                raise BrokerUnavailable(
                    f"cannot connect to the broker (SENDPIPE_AMQP_URL): {type(exc).__name__}"
                ) from None
            await asyncio.sleep(1.0)
    async with conn:
        channel = await conn.channel()
        exchange = await channel.declare_exchange(DELIVERY, aio_pika.ExchangeType.TOPIC, durable=True)
        for name, keys in MAILBOXES.items():
            queue = await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
            for key in keys:
                await queue.bind(exchange, routing_key=key)
