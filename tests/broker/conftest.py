"""Broker fixtures: the broker (each of tests/brokers.py in turn), a fresh vhost on it per test, a deployment on
disk, and worker processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from brokers import BROKERS, RABBITMQ_310, Broker, add_vhost_expr
from pki import Issued, TestPKI, write_other_people, write_personal_pem, write_personal_pfx

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


@pytest.fixture(params=[pytest.param(b, id=b.name) for b in BROKERS])
def broker(request: pytest.FixtureRequest) -> Broker:
    """Each broker test runs once per node of ``tests/brokers.py``: the machine's 3.10 and our own 4.3.

    A node that does not answer fails the test (with how to start it), never skips it.
    """
    target: Broker = request.param
    target.require()
    return target


@pytest.fixture
def vhost(broker: Broker) -> Iterator[str]:
    """A vhost of its own on the test's broker (the SPEC topology names are fixed, so isolation is per
    vhost); its AMQP URL. Two ctl calls per test: create with permissions, delete."""
    name = f"sendpipe-test-{uuid.uuid4().hex[:12]}"
    ctl_retrying(broker, "eval", add_vhost_expr(name))
    yield broker.url_for(name)
    ctl_retrying(broker, "delete_vhost", name)


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


@pytest.fixture
def deployment(tmp_path: Path, pki: TestPKI, signer_rsa2048: Issued, partner: Issued) -> Deployment:
    """Accounts svc-a (PKCS#12) and svc-b (PEM) hold the group signing cert; svc-c does not."""
    dep = Deployment(
        tmp_path,
        pki,
        signer_rsa2048,
        partner,
        partner.write_key_pem(tmp_path / "partner.key"),
        partner.write_cert_pem(tmp_path / "partner.pem"),
    )
    stores = dep.store_root
    write_personal_pfx(stores, "svc-a", "group-signing", signer_rsa2048, STORE_PASSWORD.encode())
    write_personal_pem(stores, "svc-b", "group-signing", signer_rsa2048)
    for account in ("svc-a", "svc-b", "svc-c"):
        write_other_people(stores, account, "fabrikam", partner)
    dep.write_config()
    return dep


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
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.strip():
                out.append(json.loads(line))  # every line must be JSON: a test in itself
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


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Any]:
    """Factory ``workers(env) -> Worker`` (started); every worker is killed at teardown."""
    started: list[Worker] = []

    def start(env: dict[str, str]) -> Worker:
        worker = Worker(env, tmp_path / f"worker-{len(started)}.log").start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


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


@pytest.fixture
async def client(vhost: str) -> AsyncIterator[Client]:
    conn = await aio_pika.connect(vhost)
    channel = await conn.channel()
    yield Client(conn, channel)
    await conn.close()
