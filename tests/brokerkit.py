"""What the broker tests share (not fixtures): a deployment on disk, a real worker process, a producer/partner client.

tests/broker/conftest.py builds its fixtures from these; tests import them from here, never from a conftest.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from brokers import RABBITMQ_310, Broker
from pki import Issued, TestPKI

BROKER = RABBITMQ_310.url  # the machine's node; tests take theirs from the `vhost` / `broker` fixtures
SENDPIPE = str(Path(sys.executable).with_name("sendpipe"))
STORE_PASSWORD = "pfx-pass-Ω"  # a test secret, asserted never to appear in logs


def ctl_retrying(broker: Broker, *args: str) -> None:
    """``rabbitmqctl ARGS`` on ``broker``; a fault test may have just restarted its app: wait, do not fail."""
    error = ""
    for attempt in range(3):
        try:
            broker.ctl(*args, timeout_s=60)
            return
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            error = str(exc)
        broker.ctl_run("-q", "await_startup", "--timeout", "60", timeout_s=90)
        time.sleep(1 + attempt)
    raise AssertionError(error[:500])


@dataclass
class Deployment:
    """A group on disk: stores of several service accounts and a config with a few send ports."""

    root: Path
    pki: TestPKI
    signer: Issued
    partner: Issued
    partner_key: Path
    partner_cert: Path
    config: Path = field(init=False)

    def __post_init__(self) -> None:
        self.config = self.root / "sendpipe.toml"

    @property
    def store_root(self) -> Path:
        return self.root / "stores"

    def env(self, url: str, account: str, host: str = "SendHost", **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SENDPIPE_")}
        env.update(
            SENDPIPE_AMQP_URL=url,
            SENDPIPE_CONFIG=str(self.config),
            SENDPIPE_HOST=host,
            SENDPIPE_HOST_INSTANCE=f"{account}-{uuid.uuid4().hex[:6]}",
            SENDPIPE_SERVICE_ACCOUNT=account,
            SENDPIPE_STORE_ROOT=str(self.store_root),
            SENDPIPE_STORE_PASSWORD=STORE_PASSWORD,
            SENDPIPE_LOG_FORMAT="json",
            SENDPIPE_PUBLISH_TIMEOUT_S="5",
            SENDPIPE_RECONNECT_MAX_S="2",
        )
        env.update(extra)
        return env

    def write_config(self, extra: str = "", retry_interval_s: float = 1.0) -> None:
        missing = "AB" * 20  # a thumbprint no store holds
        self.config.write_text(f"""
[group]
name = "Contoso"
signing_thumbprint = "{self.signer.thumbprint}"

[pipelines.SignAndEncrypt]
encode = [ {{ component = "mime_smime_encoder", signature_type = "BlobSign",
             enable_encryption = true, encryption_algorithm = "AES256" }} ]

[pipelines.AS2]
encode = [ {{ component = "mime_smime_encoder", signature_type = "ClearSign", enable_encryption = true,
             content_transfer_encoding = "binary" }} ]

[send_ports.Orders]
host = "SendHost"
pipeline = "SignAndEncrypt"
encryption_thumbprint = "{self.partner.thumbprint}"
delivery_key = "fabrikam.orders"
retry_count = 2
retry_interval_s = {retry_interval_s}

[send_ports.Invoices]
host = "SendHost"
pipeline = "AS2"
encryption_thumbprint = "{self.partner.thumbprint}"
delivery_key = "fabrikam.invoices"
retry_count = 2
retry_interval_s = {retry_interval_s}

[send_ports.Ghost]
host = "SendHost"
pipeline = "SignAndEncrypt"
encryption_thumbprint = "{missing}"
delivery_key = "ghost"

[send_ports.Elsewhere]
host = "OtherHost"
pipeline = "SignAndEncrypt"
encryption_thumbprint = "{self.partner.thumbprint}"
delivery_key = "elsewhere"
{extra}
""")


class Worker:
    """A real `sendpipe run` process; its JSON log lines are kept in a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        out = self.log_path.open("ab")
        self.proc = subprocess.Popen([SENDPIPE, "run"], env=self.env, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        return self

    def lines(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        out = []
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        # Complete lines only: the worker may be half-way through writing the last one (read next time).
        text = text[: text.rfind("\n") + 1]
        for number, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))  # every line must be JSON: a test in itself
            except json.JSONDecodeError:
                rest = "\n".join(text.splitlines()[number : number + 60])
                raise AssertionError(f"{self.log_path}: line {number + 1} is not JSON:\n{rest}") from None
        return out

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == name]

    def wait_for(self, event: str, count: int = 1, timeout_s: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.events(event)
            if len(found) >= count:
                return found
            if self.proc is not None and self.proc.poll() is not None and event != "instance.stopped":
                break
            time.sleep(0.1)
        raise AssertionError(f"no {count}x {event} within {timeout_s}s; log tail: {self.lines()[-5:]}")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout_s: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Client:
    """What producers and partners do, with aio-pika directly: publish, capture deliveries, read queues."""

    def __init__(self, conn: AbstractConnection, channel: AbstractChannel) -> None:
        self.conn = conn
        self.channel = channel

    async def capture(self, binding: str = "#") -> AbstractQueue:
        exchange = await self.channel.declare_exchange("sendpipe.delivery", aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await self.channel.declare_queue(f"capture-{uuid.uuid4().hex[:8]}", durable=True)
        await queue.bind(exchange, routing_key=binding)
        return queue

    async def publish(self, port: str, body: bytes, **props: Any) -> None:
        exchange = await self.channel.declare_exchange("sendpipe.outbound", aio_pika.ExchangeType.DIRECT, durable=True)
        await exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, **props), routing_key=port
        )

    async def drain(self, queue_name: str, count: int, timeout_s: float = 30) -> list[AbstractIncomingMessage]:
        """Take ``count`` messages (acked) from a queue, or fail after ``timeout_s``."""
        queue = await self.channel.get_queue(queue_name, ensure=True)
        got: list[AbstractIncomingMessage] = []
        deadline = time.monotonic() + timeout_s
        while len(got) < count:
            msg = await queue.get(no_ack=True, fail=False)
            if msg is None:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{queue_name}: {len(got)} of {count} messages within {timeout_s}s")
                await asyncio.sleep(0.05)
                continue
            got.append(msg)
        return got

    async def count(self, queue_name: str) -> int:
        queue = await self.channel.declare_queue(queue_name, passive=True)
        return int(queue.declaration_result.message_count or 0)
