"""Issue 16 target 5 on RabbitMQ 4.3, with the disk taken out: the same paced latency run on the project's
node (data on disk) and on a bench-only node whose data directory is a tmpfs, windows alternating.

    .venv/bin/python -m bench.latency            # 2,000-message drain, 3 + 3 alternating 10 s windows (~2 min)
    .venv/bin/python -m bench.latency --quick    # 300-message drain, 1 + 1 windows of 3 s (~1 min)

Why: 4.3 MISSes the target (p99 publish -> delivery <= 20 ms at half the maximum rate, 1 KiB) with a
p50 of 7-8 ms, and the claimed cause is the disk: quorum queues fsync their write-ahead log before they
confirm a publish and before they deliver, and this VM's disk stalls (PSI "full" I/O stall). On tmpfs an
fsync costs nothing, so what tmpfs removes from the tail is the disk's share, measured.

The tmpfs node (bench/tmpfs_node.sh: same chroot, packages and rabbitmq.conf settings as the project's
node, its own name, ports, epmd, cookie) is started before and stopped after the run, also on Ctrl-C;
the project's 4.3 node (5682) and the machine's 3.10 (5672) are only used through a vhost of their own.
One `sendpipe run` instance per node (port Bench, RSA-2048 signer unless --signer), warmed up as
bench.e2e does (bench.e2e's own functions); both run at the same rate, by default half the disk node's
1-instance drain rate, and the windows alternate disk / tmpfs / disk / ... so what else loads the
machine falls on both alike.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from bench.common import (
    PORT,
    Pki,
    cpu_seconds,
    io_stall_ms,
    median,
    percentile,
    run_bench,
    say,
    steal_seconds,
    table,
    verdict,
    write_deployment,
)
from bench.e2e import Window, drain, freeze_heap, warm_up, window
from bench.rig import NODES, TMPFS_NODE, Client, Node, Rig, Worker, vhost

TARGET_MS = 20.0  # issue 16 target 5
KEYS = ("4.3", "4.3-tmpfs")  # the disk node first: its drain sets the rate
SHORT = {"4.3": "disk (5682)", "4.3-tmpfs": "tmpfs (5702)"}


def shielded(argv: list[str], timeout_s: float) -> int:
    """Run ``argv`` to its end even if Ctrl-C or SIGTERM comes meanwhile (a half-run start or stop would
    leave a node or a mount behind): the signal is held, then raised as KeyboardInterrupt once it is done."""
    held: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: held.append(signum)) for sig in _HELD}
    try:  # its own session: the terminal's Ctrl-C does not reach the script either
        return subprocess.run(argv, check=False, timeout=timeout_s, start_new_session=True).returncode
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if held:
            raise KeyboardInterrupt


_HELD = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def tmpfs_node() -> Iterator[None]:
    """The bench-only tmpfs node, up for the block; stopped (and its tmpfs unmounted) however it ends."""
    try:
        say("starting the tmpfs node (bench/tmpfs_node.sh start)")
        if shielded([str(TMPFS_NODE), "start"], 150) != 0:
            raise RuntimeError("bench/tmpfs_node.sh start failed (its messages are above)")
        yield
    finally:
        code = shielded([str(TMPFS_NODE), "stop"], 120)
        say("tmpfs node stopped, tmpfs unmounted" if code == 0 else f"bench/tmpfs_node.sh stop: exit {code}")


class Sampler(threading.Thread):
    """Steal and PSI-full I/O stall counters every 10 ms, in a thread (the bench's event loop may be what
    stalls), so a slow delivery can be set against what the machine lost during its own flight."""

    def __init__(self) -> None:
        super().__init__(name="sampler", daemon=True)
        self.times: list[int] = []
        self.values: list[tuple[float, float]] = []  # (steal ms, I/O stall ms) so far
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.01):
            self.values.append((steal_seconds() * 1000, io_stall_ms() or 0.0))
            self.times.append(time.monotonic_ns())

    def during(self, start_ns: int, end_ns: int) -> tuple[float, float]:
        """Steal (vCPU-ms) and I/O stall (ms) from the last sample before ``start_ns`` to the first after ``end_ns``."""
        first = max(0, bisect.bisect_right(self.times, start_ns) - 1)
        last = min(len(self.times) - 1, bisect.bisect_left(self.times, end_ns))
        if last < 0:
            return float("nan"), float("nan")
        (s0, i0), (s1, i1) = self.values[first], self.values[last]
        return s1 - s0, i1 - i0


@contextlib.contextmanager
def sampling() -> Iterator[Sampler]:
    sampler = Sampler()
    sampler.start()
    try:
        yield sampler
    finally:
        sampler.done.set()
        sampler.join(timeout=5)


def write_bytes(pid: int | None) -> int | None:
    """Bytes the process caused to be sent to a block device (/proc/<pid>/io); tmpfs writes are not counted."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


@dataclass
class Lane:
    """One node's side: its rig, producer/partner connection, warmed instance and broker process."""

    key: str
    rig: Rig
    client: Client
    worker: Worker | None = None
    beam: int | None = None


@dataclass(frozen=True)
class Measured:
    key: str
    rate: float
    window: Window
    instance_cores: float  # CPU seconds of the instance / wall seconds of the window
    broker_cores: float
    steal_cores: float  # CPU the hypervisor gave to other VMs while this one wanted it (both vCPUs)
    load: float  # 1-minute load average at the window's end
    broker_disk_mb: float | None  # the broker's block-device writes in the window
    worst: tuple[float, float, float]  # the slowest delivery: ms, steal (vCPU-ms) and I/O stall (ms) in its flight
    tail: tuple[float, float]  # deliveries at or above the window's p99: median steal / latency, I/O stall / latency

    def row(self, index: int) -> list[str]:
        lat, w = self.window.latencies, self.window
        return [
            str(index),
            SHORT[self.key],
            f"{self.rate:,.0f}",
            str(len(lat)),
            f"{median(lat):.1f}",
            f"{percentile(lat, 99):.1f}",
            f"{max(lat, default=float('nan')):.1f}",
            str(sum(1 for ms in lat if ms > TARGET_MS)),
            "?" if w.io_stall_ms is None else f"{w.io_stall_ms:,.0f}",
            "?" if w.rollovers is None else str(w.rollovers),
            "?" if self.broker_disk_mb is None else f"{self.broker_disk_mb:.1f}",
            f"{self.worst[0]:.0f} / {self.worst[1]:.0f} / {self.worst[2]:.0f}",
            f"{self.tail[0]:.2f} / {self.tail[1]:.2f}",
            f"{self.instance_cores:.2f}",
            f"{self.broker_cores:.2f}",
            f"{self.steal_cores:.2f}",
            f"{self.load:.2f}",
        ]


async def measure(lane: Lane, rate: float, seconds: float, sampler: Sampler) -> Measured:
    assert lane.worker is not None

    def clocks() -> list[float]:
        beam = cpu_seconds(lane.beam) if lane.beam else 0.0
        return [steal_seconds(), cpu_seconds(lane.worker.pid) if lane.worker else 0.0, beam]

    before, wrote, t0 = clocks(), write_bytes(lane.beam), time.monotonic()
    w = await window(lane.rig, lane.client, rate, seconds)
    after, wrote_after, wall = clocks(), write_bytes(lane.beam), time.monotonic() - t0
    steal, instance, broker = ((a - b) / wall for a, b in zip(after, before, strict=True))
    disk = None if wrote is None or wrote_after is None else (wrote_after - wrote) / 1e6
    flights = sorted(((a - t, t, a) for a, t, _ in lane.client.arrivals if t), reverse=True)
    worst = (flights[0][0] / 1e6, *sampler.during(flights[0][1], flights[0][2]))
    cut = percentile(w.latencies, 99) * 1e6
    shares = [(sampler.during(t, a), ns) for ns, t, a in flights if ns >= cut]
    tail = (median([st * 1e6 / ns for (st, _), ns in shares]), median([io * 1e6 / ns for (_, io), ns in shares]))
    return Measured(lane.key, rate, w, instance, broker, steal, os.getloadavg()[0], disk, worst, tail)


async def run(args: argparse.Namespace, root: Path) -> None:
    count, seconds, rounds = (300, 3.0, 1) if args.quick else (2000, 10.0, 3)
    seconds, rounds = args.seconds or seconds, args.windows or rounds
    env = dict(kv.split("=", 1) for kv in args.env)
    pki = Pki.make()
    config = write_deployment(root, pki, args.signer)
    nodes: dict[str, Node] = {key: NODES[key] for key in KEYS}
    with contextlib.ExitStack() as stack:
        lanes: list[Lane] = []
        try:
            for key, node in nodes.items():
                url = stack.enter_context(vhost(node))
                rig = Rig(root / key, config, url, node)
                (root / key).mkdir()
                (root / key / "stores").symlink_to(root / "stores")
                lanes.append(Lane(key, rig, await Client.open(url)))
            for lane in lanes:
                lane.rig.worker(**env)  # declares the topology, then goes
                await lane.client.wait_consumers(1)
                lane.rig.close()
            drains: dict[str, float] = {}
            if args.rate is None:
                for lane in lanes:
                    d = await drain(lane.rig, lane.client, PORT, 1, count, env)
                    drains[lane.key] = d.rate
                    say(f"  drain encoded x1 on {SHORT[lane.key]}: {d.rate:,.0f} msg/s ({count} messages)")
                rate = drains["4.3"] / 2
            else:
                rate = args.rate
            say(f"  rate for every window: {rate:,.0f} msg/s" + (" (half the disk node's drain)" * (not args.rate)))
            for lane in lanes:
                lane.worker = await warm_up(lane.rig, lane.client, env)
                lane.beam = lane.rig.beam()
            freeze_heap()
            sampler = stack.enter_context(sampling())
            results: list[Measured] = []
            for n in range(rounds):
                for lane in reversed(lanes) if args.abba and n % 2 else lanes:
                    m = await measure(lane, rate, seconds, sampler)
                    results.append(m)
                    lat = m.window.latencies
                    say(
                        f"  window {len(results)} {SHORT[lane.key]}: p50 {median(lat):.1f} ms, "
                        f"p99 {percentile(lat, 99):.1f} ms, max {max(lat, default=float('nan')):.1f} ms"
                    )
        finally:
            for lane in lanes:
                with contextlib.suppress(Exception):
                    await lane.client.close()
                lane.rig.close()
    report(args, rate, seconds, drains, results)


def report(
    args: argparse.Namespace, rate: float, seconds: float, drains: dict[str, float], results: list[Measured]
) -> None:
    head = ["#", "node", "msg/s", "delivered", "p50 ms", "p99 ms", "max ms", f">{TARGET_MS:g} ms"]
    head += ["I/O stall ms (PSI full)", "WAL rollovers", "broker disk writes MB"]
    head += ["slowest: ms / steal / I/O stall in its flight", "tail >= p99: steal / I/O stall ÷ latency"]
    head += ["instance cores", "broker cores"]
    head += ["steal cores", "load"]
    title = f"paced windows of {seconds:g} s, alternating, 1 KiB, port Bench, {args.signer} signer, 1 instance per node"
    table(title, head, [m.row(i) for i, m in enumerate(results, 1)])
    rows = []
    for key in KEYS:
        mine = [m for m in results if m.key == key]
        lat = [ms for m in mine for ms in m.window.latencies]
        p99 = percentile(lat, 99)
        stalls = [m.window.io_stall_ms for m in mine if m.window.io_stall_ms is not None]
        rows.append(
            [
                NODES[key].name,
                f"{drains[key]:,.0f}" if key in drains else "-",
                f"{rate:,.0f}",
                str(len(mine)),
                " / ".join(f"{percentile(m.window.latencies, 99):.1f}" for m in mine),
                f"{median(lat):.1f}",
                f"{p99:.1f}",
                f"{max(lat, default=float('nan')):.1f}",
                f"{sum(stalls):,.0f}" if stalls else "?",
                f"{sum(m.steal_cores for m in mine) / max(1, len(mine)):.2f}",
                verdict(p99, TARGET_MS, at_most=True),
            ]
        )
    head = ["node", "drain msg/s", "paced msg/s", "windows", "p99 per window ms", "p50 ms", "p99 ms (all)"]
    head += ["max ms", "I/O stall ms (sum)", "steal (mean)", f"p99 <= {TARGET_MS:g} ms"]
    table("target 5 per node (p99 over all its windows)", head, rows)
    disk = [ms for m in results if m.key == "4.3" for ms in m.window.latencies]
    mem = [ms for m in results if m.key == "4.3-tmpfs" for ms in m.window.latencies]
    d99, m99 = percentile(disk, 99), percentile(mem, 99)
    say(f"tmpfs vs disk: p99 {m99:.1f} vs {d99:.1f} ms, p50 {median(mem):.1f} vs {median(disk):.1f} ms")
    spread = [percentile(m.window.latencies, 99) for m in results]
    say(
        f"disk - tmpfs: p99 {d99 - m99:+.1f} ms, p50 {median(disk) - median(mem):+.1f} ms "
        f"(the windows' p99s spread {min(spread):.1f}-{max(spread):.1f} ms: a difference within it is not the disk's)"
    )


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up as Ctrl-C does (vhosts, workers, the tmpfs node)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="300-message drain, one 3 s window per node")
    parser.add_argument("--rate", type=float, help="msg/s for every window (default: half the disk node's drain)")
    parser.add_argument("--windows", type=int, help="windows per node (default 3, 1 with --quick)")
    parser.add_argument("--seconds", type=float, help="seconds per window (default 10, 3 with --quick)")
    parser.add_argument(
        "--abba",
        action="store_true",
        help="reverse every other round: disk, tmpfs, tmpfs, disk, ... (default: d, t, d, t)",
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra environment for every worker"
    )
    parser.add_argument(
        "--signer", choices=("rsa2048", "ec-p256"), default="rsa2048", help="the group signing key (default rsa2048)"
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("must run as root: the tmpfs node needs mount and chroot")
    signal.signal(signal.SIGTERM, _terminated)
    say(f"load average before the tmpfs node started: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    try:
        with tmpfs_node():
            return run_bench("sendpipe-latency-", run, args)
    except KeyboardInterrupt:
        say("interrupted: workers, vhosts and the tmpfs node were cleaned up")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
