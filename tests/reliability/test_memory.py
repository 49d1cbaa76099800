"""The byte budget under a memory limit (issue 10, item 6): one instance in a memory cgroup of its own.

40 messages of 6 MiB (port ``Orders``: BlobSign + AES256, a ~15.4 MiB entity each, under 4.3's 16 MiB
``max_message_size``) interleaved with 200 of 1 KiB, into one ``sendpipe run`` whose memory cgroup (v1) allows
600 MiB: no OOM kill, every message delivered (reconciled by id), small messages delivered while large ones are
still in progress, the cgroup's peak memory reported. The budget is the default one, derived from the cgroup
limit (600 MiB / 32 = 18.75 MiB: three 6 MiB messages at a time).

    .venv/bin/python -m tests.reliability.test_memory [--broker NAME]

runs the same scenario on a broker with the default budget and with ``SENDPIPE_MAX_IN_FLIGHT_BYTES`` = 4 GiB (in
effect no budget: prefetch alone bounds the instance), at the default thread count and at 8 threads (prefetch 64),
and prints the peaks (docs/reliability.md).

The instance starts on a full queue (the stream is published first), so its whole prefetch window is used.

The cgroup is a child of this process's own memory cgroup (found through /proc/self/cgroup), so the limit
nests under whatever limit the test itself runs with; it is removed at teardown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in {None, ""}:  # `python tests/reliability/test_memory.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    __package__ = "tests.reliability"

import aio_pika
import pytest

from . import lab
from .lab import ENVELOPED, Instance, Lab

# isort: split
from brokerkit import SENDPIPE, Worker  # tests/ is on sys.path once lab is imported
from brokers import BROKERS, Broker

MIB = 1 << 20
LIMIT_BYTES = 600 * MIB
LARGE_BYTES = 6 * MIB
LARGE_COUNT = 40
SMALL_BYTES = 1024
SMALL_COUNT = 200
BROKER_MAX_MESSAGE_BYTES = 16 * MIB  # RabbitMQ 4.x's default max_message_size (3.10's is 128 MiB)
UNBUDGETED = str(4 << 30)
MEMCG_ROOT = Path("/sys/fs/cgroup/memory")
DELIVERY_TIMEOUT_S = 240.0


# -- the memory cgroup ----------------------------------------------------------------------------


def _own_memcg() -> Path:
    """This process's memory cgroup directory (v1), where the test's cgroup is created."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return MEMCG_ROOT / path.lstrip("/")
    raise AssertionError("no v1 memory cgroup controller in /proc/self/cgroup (the test needs cgroup v1 memory)")


@dataclass
class MemoryCgroup:
    """A v1 memory cgroup of its own with a hard limit (and the same memory+swap limit when the kernel has it)."""

    path: Path
    limit_bytes: int

    @classmethod
    @contextlib.contextmanager
    def create(cls, limit_bytes: int) -> Iterator[MemoryCgroup]:
        path = _own_memcg() / f"sendpipe-test-{uuid.uuid4().hex[:12]}"
        path.mkdir()
        cgroup = cls(path, limit_bytes)
        try:
            (path / "memory.limit_in_bytes").write_text(str(limit_bytes))
            memsw = path / "memory.memsw.limit_in_bytes"
            if memsw.exists():
                memsw.write_text(str(limit_bytes))
            yield cgroup
        finally:
            cgroup.remove()

    def read(self, name: str) -> str:
        return (self.path / name).read_text()

    @property
    def peak_bytes(self) -> int:
        return int(self.read("memory.max_usage_in_bytes"))

    @property
    def oom_kills(self) -> int:
        """``oom_kill N`` of ``memory.oom_control`` (0 when the kernel does not count them there)."""
        for line in self.read("memory.oom_control").splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    @property
    def failcnt(self) -> int:
        return int(self.read("memory.failcnt"))

    def procs(self) -> list[int]:
        return [int(p) for p in self.read("cgroup.procs").split()]

    def remove(self) -> None:
        """Kill what is left in it (only processes this test started there), then rmdir, bounded."""
        deadline = time.monotonic() + 15
        while self.path.exists():
            with contextlib.suppress(OSError):
                for pid in self.procs():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, 9)
            try:
                self.path.rmdir()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


class CgroupWorker(Worker):
    """``sendpipe run`` started inside ``cgroup``: a shell writes its own pid to ``cgroup.procs``, then execs."""

    def __init__(self, env: dict[str, str], log_path: Path, cgroup: MemoryCgroup) -> None:
        super().__init__(env, log_path)
        self.cgroup = cgroup

    def start(self) -> CgroupWorker:
        procs = self.cgroup.path / "cgroup.procs"
        out = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            ["/bin/sh", "-c", 'echo $$ > "$1" && exec "$2" run', "sh", str(procs), SENDPIPE],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        return self


# -- the scenario ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one run gave: deliveries by id (receive time, size), the instance's fate, the cgroup's figures."""

    budget_bytes: int | None = None
    published: list[str] = field(default_factory=list)
    received: dict[str, tuple[float, int]] = field(default_factory=dict)  # id -> (epoch s, body size)
    not_enveloped: list[str] = field(default_factory=list)
    duplicates: int = 0
    exit_code: int | None = None
    oom_kills: int = 0
    failcnt: int = 0
    peak_bytes: int = 0
    suspended: int = 0
    duration_s: float = 0.0
    log_events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def oom_killed(self) -> bool:
        return self.exit_code == -9 or self.oom_kills > 0

    def ids(self, kind: str) -> list[str]:
        return [m for m in self.published if m.startswith(kind)]

    def small_during_large(self) -> int:
        """Small messages delivered after the first and before the last large delivery."""
        large = [self.received[m][0] for m in self.ids("large") if m in self.received]
        if len(large) < 2:
            return 0
        lo, hi = min(large), max(large)
        return sum(1 for m in self.ids("small") if m in self.received and lo < self.received[m][0] < hi)

    def summary(self, label: str) -> str:
        delivered = len([m for m in self.published if m in self.received])
        budget = "-" if self.budget_bytes is None else f"{self.budget_bytes / MIB:.2f} MiB"
        return (
            f"{label}: budget {budget}, delivered {delivered}/{len(self.published)}, "
            f"peak {self.peak_bytes / MIB:.0f} MiB of {LIMIT_BYTES // MIB} MiB, "
            f"OOM kill {'yes' if self.oom_killed else 'no'} (exit {self.exit_code}, oom_kill {self.oom_kills}, "
            f"failcnt {self.failcnt}), small delivered while large in progress {self.small_during_large()}, "
            f"{self.duration_s:.1f}s"
        )


def _order() -> list[str]:
    """40 large, each followed by 5 small: the large ones are spread through the stream."""
    per_large = SMALL_COUNT // LARGE_COUNT
    ids = []
    for i in range(LARGE_COUNT):
        ids.append(f"large-{i:03d}")
        ids.extend(f"small-{i * per_large + k:03d}" for k in range(per_large))
    return ids


def _body(message_id: str) -> bytes:
    size = LARGE_BYTES if message_id.startswith("large") else SMALL_BYTES
    head = lab.MARKER + message_id.encode() + b"|"
    return head + os.urandom(size - len(head))


async def run_scenario(
    dep: Any, url: str, logs: Path, *, max_in_flight_bytes: str | None = None, threads: int | None = None
) -> Outcome:
    """One instance in a fresh 600 MiB cgroup; publish the stream; collect until all arrive or it dies."""
    out = Outcome()
    started = time.monotonic()
    extra = {
        "SENDPIPE_PREFETCH_COUNT": "",  # the default: 8 x threads
        "SENDPIPE_WORKER_THREADS": "" if threads is None else str(threads),  # default: one per core
        "SENDPIPE_MAX_IN_FLIGHT_BYTES": max_in_flight_bytes or "",
    }
    env = lab.worker_env(dep, url, "svc-b", **extra)
    with MemoryCgroup.create(LIMIT_BYTES) as cgroup:
        conn = await lab.connect(url)
        inst = Instance("memory", "svc-b", env, logs / f"memory-{uuid.uuid4().hex[:6]}.log")
        inst.worker = CgroupWorker(env, inst.log_path, cgroup)
        try:
            channel = await conn.channel(publisher_confirms=True)
            await channel.set_qos(prefetch_count=4)  # the test's own consumer: at most 4 x 16 MiB buffered
            delivery = await channel.declare_exchange("sendpipe.delivery", aio_pika.ExchangeType.TOPIC, durable=True)
            capture = await channel.declare_queue(f"memory-capture-{uuid.uuid4().hex[:8]}", durable=True)
            await capture.bind(delivery, routing_key="#")
            done = asyncio.Event()

            async def on_delivery(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
                mid = str(msg.message_id)
                if mid in out.received:
                    out.duplicates += 1
                out.received[mid] = (time.time(), len(msg.body))
                if not (msg.content_type or "").startswith(ENVELOPED):
                    out.not_enveloped.append(mid)
                await msg.ack()
                if len(out.received) >= len(out.published) == LARGE_COUNT + SMALL_COUNT:
                    done.set()

            await capture.consume(on_delivery)
            # The backlog first (the instance starts on a full queue, as after a restart): an instance outside
            # the cgroup declares the topology and is stopped, the stream is published, then ours starts.
            declarer = Instance("declarer", "svc-b", env, logs / f"declarer-{uuid.uuid4().hex[:6]}.log").start()
            try:
                await declarer.wait_for("consumer.started", timeout_s=60)
            finally:
                declarer.term()
                await declarer.wait_exit(30)
                declarer.stop()
            exchange = await channel.get_exchange("sendpipe.outbound", ensure=False)
            for mid in _order():
                message = aio_pika.Message(_body(mid), message_id=mid, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
                await exchange.publish(message, routing_key="Orders", mandatory=True, timeout=60)
                out.published.append(mid)
            inst.start()
            first = await inst.wait_for("consumer.started", timeout_s=60)
            out.budget_bytes = int(first["in_flight_budget_bytes"])
            deadline = time.monotonic() + DELIVERY_TIMEOUT_S
            while not done.is_set() and inst.alive and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), 0.5)
            if inst.alive:
                inst.term()
            out.exit_code = await inst.wait_exit(60)
            suspended = await channel.declare_queue(lab.SUSPENDED_QUEUE, passive=True)
            out.suspended = int(suspended.declaration_result.message_count or 0)
            await capture.delete(if_unused=False, if_empty=False)
        finally:
            inst.stop()
            if out.exit_code is None and inst.worker.proc is not None:
                out.exit_code = inst.worker.proc.returncode
            with contextlib.suppress(Exception):
                await conn.close()
        out.oom_kills = cgroup.oom_kills
        out.failcnt = cgroup.failcnt
        out.peak_bytes = cgroup.peak_bytes
    out.log_events = inst.tail.poll()
    out.duration_s = time.monotonic() - started
    return out


# -- the test -------------------------------------------------------------------------------------


@pytest.mark.timeout(DELIVERY_TIMEOUT_S + 180)
async def test_byte_budget_keeps_an_instance_inside_600_mib(deployment: Any, vhost: str, broker: Broker) -> None:
    """Both brokers: the 6 MiB BlobSign+AES256 entity (~15.4 MiB) fits 4.3's 16 MiB default as well."""
    out = await run_scenario(deployment, vhost, deployment.root)
    report = out.summary(f"byte budget on {broker.name}")
    print("\n" + report)
    assert out.budget_bytes == LIMIT_BYTES // 32, f"default budget not derived from the cgroup limit: {report}"
    assert not out.oom_killed, report
    assert out.exit_code == 0, report  # SIGTERM after the last delivery: drained, exit 0
    missing = [m for m in out.published if m not in out.received]
    assert len(out.published) == LARGE_COUNT + SMALL_COUNT, report
    assert not missing, f"{len(missing)} not delivered, e.g. {missing[:5]}: {report}"
    assert not [m for m in out.received if m not in out.published], report
    assert out.suspended == 0, report
    assert not out.not_enveloped, report
    large_sizes = [out.received[m][1] for m in out.ids("large")]
    assert max(large_sizes) <= BROKER_MAX_MESSAGE_BYTES, f"a large entity is {max(large_sizes)} bytes: {report}"
    # Small messages keep flowing: some are delivered while large ones are still being processed.
    assert out.small_during_large() > 0, report
    # The instance logged every outcome as delivered (no retry, no suspension).
    outcomes = [e for e in out.log_events if str(e.get("event", "")).startswith("message.")]
    delivered = [e for e in outcomes if e["event"] == "message.delivered"]
    assert len({e["message_id"] for e in delivered}) == len(out.published), report
    assert all(e["event"] == "message.delivered" for e in outcomes), {e["event"] for e in outcomes}
    assert out.peak_bytes < LIMIT_BYTES, report


# -- the comparison (command line) ----------------------------------------------------------------


async def _compare(broker: Broker, workdir: Path) -> list[str]:
    from pki import TestPKI  # noqa: PLC0415 - command-line use only

    pki = TestPKI(workdir / "pki")
    signer = pki.issue("sendpipe signer RSA-2048", key_type="rsa2048", usage="sign", key_slot="signer")
    partner = pki.issue("Fabrikam partner", key_type="rsa2048", usage="encrypt", key_slot="partner")
    lab_ = Lab(workdir, pki, signer, partner)
    lines = []
    for threads in (None, 8):
        for label, budget in (("default budget", None), ("budget 4 GiB (none)", UNBUDGETED)):
            with lab.fresh_vhost(broker, "sendpipe-memory") as url:
                dep = lab_.deployment(f"memory-{uuid.uuid4().hex[:6]}")
                out = await run_scenario(dep, url, dep.root, max_in_flight_bytes=budget, threads=threads)
                where = f"{broker.name}, threads {threads or os.cpu_count()}"
                lines.append(out.summary(f"{label} on {where}"))
                print(lines[-1], file=sys.stderr, flush=True)
    return lines


def main(argv: list[str] | None = None) -> int:
    import shutil  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m tests.reliability.test_memory", description=__doc__.split("\n")[0])
    by_name = {b.name: b for b in BROKERS}
    parser.add_argument("--broker", choices=sorted(by_name), default="rabbitmq-3.10")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="sendpipe-memory-"))
    try:
        lines = asyncio.run(_compare(by_name[args.broker], workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
