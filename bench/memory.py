"""Peak memory of a 16 MiB message: which copies hold it, and the worker's peak RSS with and without the aiormq patch.

    .venv/bin/python -m bench.memory            # 4 messages per worker, both brokers' default (3.10), tracemalloc steps
    .venv/bin/python -m bench.memory --quick    # 2 messages per worker

Two measurements:
- *steps* (in this process, tracemalloc): a 16 MiB message consumed from the broker through worker.broker's
  Session, encoded by the send port's pipeline, published (confirmed) to delivery; for each step, what Python
  holds when it ends and the peak during it, in multiples of the payload. This says which copy is which.
- *workers* (real `sendpipe run` processes, VmHWM when attached vs after N messages): aiormq as installed, then
  aiormq with `bench/patches/aiormq-7.2.4-stream-publish.patch` applied to a copy in a temporary directory put
  first on the worker's PYTHONPATH (the worker's code is unchanged; nothing is patched in production).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

import aiormq

from bench.common import (
    ACCOUNT,
    HOST,
    MIB,
    OFF_PORT,
    PORT,
    Pki,
    run_bench,
    say,
    status_kib,
    table,
    verdict,
    write_deployment,
)
from bench.pipeline import build
from bench.rig import NODES, Client, Rig, vhost
from worker.broker import session as broker
from worker.broker import topology
from worker.host import routing
from worker.message import Message
from worker.settings import BrokerSettings

PATCH = Path(__file__).with_name("patches") / "aiormq-7.2.4-stream-publish.patch"
SIZE = 16 * MIB
TARGET = 6.0
# A 16 MiB payload's protected entity is ~39 MiB: over RabbitMQ 4's default max_message_size, under 3.10's
# 128 MiB; the worker's ceiling is raised to match the 3.10 node (or it would suspend them, not deliver).
BIG = {"SENDPIPE_BROKER_MAX_MESSAGE_BYTES": str(128 * MIB)}


def patched_site(root: Path) -> Path:
    """A copy of the installed aiormq with the patch applied, in a directory of its own (for PYTHONPATH)."""
    site = root / "aiormq-patched"
    shutil.copytree(Path(aiormq.__file__).parent, site / "aiormq", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["patch", "-s", "-p1", "-d", str(site), "-i", str(PATCH)], check=True, timeout=60)
    probe = "import aiormq.channel as c; print(c.Channel.STREAM_BYTES)"
    out = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "PYTHONPATH": str(site)},
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert out.stdout.strip() == str(1 << 20), "the patched aiormq is not the one imported"
    return site


async def worker_growth(rig: Rig, client: Client, count: int, env: dict[str, str], port: str = PORT) -> float:
    """Peak RSS growth of a fresh instance over ``count`` 16 MiB messages, in payloads."""
    worker = rig.worker(**BIG, **env)
    await client.wait_consumers(1)
    await asyncio.sleep(0.5)
    baseline = status_kib(worker.pid, "VmHWM")
    payload = os.urandom(SIZE)
    for _ in range(count):
        client.arrivals.clear()
        await client.publish(port, payload, 1)
        await client.wait_arrivals(1, timeout_s=300)
    peak = status_kib(worker.pid, "VmHWM")
    worker.stop()
    return (peak - baseline) * 1024 / SIZE


async def steps(url: str, root: Path, pki: Pki) -> list[list[str]]:
    """tracemalloc through one message: held at the end of each step and the peak during it (x payload)."""
    pipeline = build(root / "steps", pki, "rsa2048")
    settings = BrokerSettings(amqp_url=url, broker_max_message_bytes=128 * MIB)  # type: ignore[arg-type]
    producer = await Client.open(url)
    session = await broker.connect(settings, name="bench-memory", prefetch_count=1)
    rows: list[list[str]] = []
    try:
        await session.declare(HOST, [PORT, OFF_PORT], [])
        got: asyncio.Queue[object] = asyncio.Queue()

        async def on(inbound: object) -> None:
            await got.put(inbound)

        await session.consume(topology.host_queue(HOST), on)
        # Two messages published before tracing starts (the producer's copies are not the worker's): the first,
        # untraced, takes first-use allocations; the second waits behind it (prefetch 1) until it is acked.
        await producer.publish(PORT, os.urandom(SIZE), 2)
        first = await got.get()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]

        def mark(step: str) -> None:
            now, peak = tracemalloc.get_traced_memory()
            rows.append([step, f"{(now - base) / SIZE:.2f}", f"{(peak - base) / SIZE:.2f}"])
            tracemalloc.reset_peak()

        await first.ack()  # type: ignore[attr-defined]
        del first
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        inbound = await got.get()
        mark("consumed (aiormq reads frames, joins the body)")
        body = inbound.body  # type: ignore[attr-defined]
        result = pipeline.run(Message(body=body, message_id="m", send_port=PORT))
        mark(f"encoded (entity {len(result.body) / SIZE:.2f}x payload)")
        me = routing.Identity(HOST, "bench-memory", ACCOUNT)
        await session.publish(topology.DELIVERY, routing.delivery(result, "SignAndEncrypt", "bench.encoded", me))
        mark("published, confirmed (aiormq frames, marshals, transport buffer)")
        del result
        await inbound.ack()  # type: ignore[attr-defined]
        del inbound, body
        mark("acked, released")
        tracemalloc.stop()
    finally:
        await session.close()
        await producer.close()
    return rows


def steps_in_child(url: str, env: dict[str, str]) -> list[list[str]]:
    """``steps`` in a fresh process (with ``env``: the patched aiormq first on its path), rows as JSON."""
    argv = [sys.executable, "-m", "bench.memory", "--steps-url", url]
    done = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True, timeout=600, check=True)
    rows: list[list[str]] = json.loads(done.stdout.splitlines()[-1])
    return rows


async def steps_here(url: str) -> None:
    with tempfile.TemporaryDirectory(prefix="sendpipe-memory-steps-") as tmp:
        rows = await steps(url, Path(tmp), Pki.make())
    sys.stdout.write(json.dumps(rows) + "\n")


async def run(args: argparse.Namespace, root: Path) -> None:
    pki = Pki.make()
    config = write_deployment(root, pki, "rsa2048")
    site = patched_site(root)
    count = 2 if args.quick else 4
    node = NODES[args.broker]
    with vhost(node) as url:
        rig = Rig(root, config, url, node)
        client = await Client.open(url)
        try:
            rig.worker()
            await client.wait_consumers(1)
            rig.close()
            plain = steps_in_child(url, {})
            patched = steps_in_child(url, {"PYTHONPATH": str(site)})
            rows = [[a[0], a[1], a[2], b[1], b[2]] for a, b in zip(plain, patched, strict=True)]
            head = ["step", "held", "peak", "held, patched", "peak, patched"]
            table("one 16 MiB message through worker.broker's Session (tracemalloc, x payload)", head, rows)
            results = []
            for label, env, port in (
                ("aiormq as installed", {}, PORT),
                ("aiormq + stream-publish patch", {"PYTHONPATH": str(site)}, PORT),
                ("aiormq as installed, encoder off (BenchPass)", {}, OFF_PORT),
                ("aiormq + patch, encoder off (BenchPass)", {"PYTHONPATH": str(site)}, OFF_PORT),
            ):
                growth = await worker_growth(rig, client, count, env, port)
                say(f"  {label}: {growth:.2f}x")
                results.append([label, str(count), f"{growth:.2f}", verdict(growth, TARGET, at_most=True)])
        finally:
            await client.close()
            rig.close()
    title = f"worker peak RSS growth, {count} x 16 MiB messages ({node.name}, glibc defaults)"
    table(title, ["aiormq", "messages", "growth / payload", f"<={TARGET:g}"], results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 messages per worker instead of 4")
    parser.add_argument("--broker", choices=list(NODES), default="3.10")
    parser.add_argument("--steps-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps_url:
        asyncio.run(steps_here(args.steps_url))
        return 0
    return run_bench("sendpipe-memory-", run, args)


if __name__ == "__main__":
    raise SystemExit(main())
