"""The e2e bench's equipment: a vhost of its own, real `sendpipe run` processes, a producer and a partner.

Benches may use aio-pika directly (the worker's code keeps it to worker/broker/): the producer
pre-fills or paces ``sendpipe.outbound``, the partner consumes everything on ``sendpipe.delivery``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from bench.common import ACCOUNT, HOST, wal_files

SENDPIPE = str(Path(sys.executable).with_name("sendpipe"))
SENT = "bench-sent-ns"  # header: the producer's monotonic clock at publish; headers pass through to delivery
_SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
_RMQ4_ROOT = Path("/var/lib/sendpipe/rabbitmq4-sid")  # scripts/rabbitmq4.sh's chroot (both 4.3 nodes run in it)
TMPFS_NODE = Path(__file__).resolve().with_name("tmpfs_node.sh")


@dataclass(frozen=True)
class Node:
    """A RabbitMQ node the benches run on: its AMQP port and its rabbitmqctl (tests/brokers.py has the same two)."""

    name: str
    port: int
    ctl_argv: tuple[str, ...]
    mnesia: Path  # the node's data directory: its quorum WAL files are under it

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}"

    def ctl(self, *args: str) -> None:
        """rabbitmqctl ARGS; tried again after 10 s once (a test run may be restarting the 4.3 node)."""
        for attempt in (1, 2):
            done = subprocess.run([*self.ctl_argv, "-q", *args], capture_output=True, timeout=120, check=False)
            if done.returncode == 0:
                return
            if attempt == 1:
                time.sleep(10)
        raise RuntimeError(f"{self.name}: rabbitmqctl {' '.join(args)}: {done.stderr.decode(errors='replace')[-500:]}")

    def beam(self) -> int | None:
        """The node's beam.smp: the process listening on its AMQP port (not any other node's)."""
        return listener_pid(self.port)


NODES = {
    "3.10": Node("RabbitMQ 3.10 (the machine's, 5672)", 5672, ("rabbitmqctl",), Path("/var/lib/rabbitmq/mnesia")),
    "4.3": Node(
        "RabbitMQ 4.3 (the project's, 5682)",
        5682,
        (str(_SCRIPTS / "rabbitmq4.sh"), "ctl"),
        _RMQ4_ROOT / "var/lib/sendpipe43/mnesia",
    ),
    # Bench-only: the same 4.3 with its data on tmpfs (fsync costs nothing), up only while
    # bench.latency runs (or after `bench/tmpfs_node.sh start`, until `... stop`).
    "4.3-tmpfs": Node(
        "RabbitMQ 4.3 on tmpfs (bench-only, 5702)",
        5702,
        (str(TMPFS_NODE), "ctl"),
        _RMQ4_ROOT / "var/lib/sendpipe43mem/mnesia",
    ),
}


def listener_pid(port: int) -> int | None:
    """The pid holding the TCP socket listening on 127.0.0.1/0.0.0.0/:: ``port`` (from /proc/net/tcp*)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(cols[9])
    wanted = {f"socket:[{i}]" for i in inodes}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in wanted:
                        return int(entry.name)
    return None


@contextlib.contextmanager
def vhost(node: Node | None = None) -> Iterator[str]:
    """A fresh vhost (SPEC's names are fixed, so isolation is per vhost), deleted afterwards."""
    node = node or NODES["3.10"]
    name = f"sendpipe-bench-{uuid.uuid4().hex[:10]}"
    node.ctl("add_vhost", name)
    try:
        node.ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield f"{node.url}/{name}"
    finally:
        node.ctl("delete_vhost", name)


@dataclass
class Worker:
    """One host instance (`sendpipe run`), its JSON log in a file."""

    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([SENDPIPE, "run"], env=self.env, stdout=out, stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def events(self, name: str) -> list[dict[str, Any]]:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        found = []
        for line in lines:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if event.get("event") == name:
                    found.append(event)
        return found

    def wait_for(self, event: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.events(event):
            if time.monotonic() > deadline or (self.proc is not None and self.proc.poll() is not None):
                tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
                raise RuntimeError(f"worker gave no {event} within {timeout_s}s; log tail:\n{tail}")
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout_s: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@dataclass
class Rig:
    """A deployment on disk, a vhost, and every worker started (all stopped by ``close``)."""

    root: Path
    config: Path
    url: str
    node: Node | None = None  # None: the machine's 3.10
    workers: list[Worker] = field(default_factory=list)

    def beam(self) -> int | None:
        """The broker's beam.smp (the node this rig's vhost is on)."""
        return (self.node or NODES["3.10"]).beam()

    def wal_files(self) -> set[str] | None:
        """The node's quorum-queue WAL files (see bench.common.wal_files), None if not readable."""
        return wal_files((self.node or NODES["3.10"]).mnesia)

    def worker(self, **extra: str) -> Worker:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SENDPIPE_")}
        env.update(
            SENDPIPE_AMQP_URL=self.url,
            SENDPIPE_CONFIG=str(self.config),
            SENDPIPE_HOST=HOST,
            SENDPIPE_HOST_INSTANCE=f"bench-{len(self.workers)}",
            SENDPIPE_SERVICE_ACCOUNT=ACCOUNT,
            SENDPIPE_STORE_ROOT=str(self.root / "stores"),
            SENDPIPE_LOG_FORMAT="json",
            SENDPIPE_STATS_INTERVAL_S="3600",
            SENDPIPE_RELOAD_INTERVAL_S="3600",
        )
        env.update(extra)
        worker = Worker(env, self.root / f"worker-{len(self.workers)}.log").start()
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()


class Client:
    """Producer and partner in one connection: publish to outbound, timestamp what arrives on delivery."""

    def __init__(self, conn: AbstractConnection, channel: AbstractChannel) -> None:
        self.conn = conn
        self.channel = channel
        self.arrivals: list[tuple[int, int, int]] = []  # (arrival ns, sent ns, body size)
        self.changed = asyncio.Event()

    @classmethod
    async def open(cls, url: str) -> Client:
        conn = await aio_pika.connect(url)
        channel = await conn.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=1000)
        client = cls(conn, channel)
        exchange = await channel.declare_exchange("sendpipe.delivery", aio_pika.ExchangeType.TOPIC, durable=True)
        # A partner's inbox as SPEC's own queues are: durable, quorum.
        queue = await channel.declare_queue("bench.partner", durable=True, arguments={"x-queue-type": "quorum"})
        await queue.bind(exchange, routing_key="#")
        await queue.consume(client._arrived, no_ack=True)
        return client

    async def _arrived(self, message: AbstractIncomingMessage) -> None:
        sent = (message.headers or {}).get(SENT)
        self.arrivals.append((time.monotonic_ns(), sent if isinstance(sent, int) else 0, len(message.body)))
        self.changed.set()

    async def wait_consumers(self, count: int, timeout_s: float = 60) -> None:
        """Until ``count`` consumers are attached to the host queue (independent of the log level)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(aio_pika.exceptions.ChannelClosed):  # queue not declared yet
                channel = await self.conn.channel()
                try:
                    queue = await channel.declare_queue(f"sendpipe.host.{HOST}", passive=True)
                    if (queue.declaration_result.consumer_count or 0) >= count:
                        return
                finally:
                    if not channel.is_closed:
                        await channel.close()
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {count} consumers on the host queue after {timeout_s}s")
            await asyncio.sleep(0.1)

    async def wait_arrivals(self, count: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.arrivals) < count:
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(self.arrivals)} of {count} deliveries within {timeout_s}s")
            # asyncio.timeout, not wait_for: 3.11's wait_for drops a cancellation (Ctrl-C) that comes as
            # the event is set, and the bench then waited out timeout_s with its workers gone.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 1.0)):
                    await self.changed.wait()

    async def publish(self, port: str, body: bytes, count: int, window: int = 256) -> None:
        """``count`` messages with confirms, ``window`` outstanding at a time (pipelined, not one by one)."""
        exchange = await self.channel.get_exchange("sendpipe.outbound")
        for start in range(0, count, window):
            await asyncio.gather(*(self._one(exchange, port, body) for _ in range(min(window, count - start))))

    async def paced(self, port: str, body: bytes, rate: float, seconds: float) -> int:
        """Publish at ``rate`` msg/s for ``seconds``; confirms are awaited in the background."""
        exchange = await self.channel.get_exchange("sendpipe.outbound")
        pending: set[asyncio.Task[None]] = set()
        started, sent = time.monotonic(), 0
        while (now := time.monotonic()) - started < seconds:
            due = int((now - started) * rate) + 1
            for _ in range(due - sent):
                task = asyncio.create_task(self._one(exchange, port, body))
                pending.add(task)
                task.add_done_callback(pending.discard)
            sent = max(sent, due)
            await asyncio.sleep(max(0.0, started + sent / rate - time.monotonic()))
        if pending:
            await asyncio.gather(*pending)
        return sent

    async def _one(self, exchange: aio_pika.abc.AbstractExchange, port: str, body: bytes) -> None:
        message = aio_pika.Message(
            body,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=uuid.uuid4().hex,
            headers={SENT: time.monotonic_ns()},
        )
        await exchange.publish(message, routing_key=port)

    async def close(self) -> None:
        await self.conn.close()
