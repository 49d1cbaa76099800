"""Where a protected message's CPU goes: CPU seconds per message of the worker, the broker and the partner.

    .venv/bin/python -m bench.cpu                 # both brokers, both signers, 3 rounds of 2,000-message drains
    .venv/bin/python -m bench.cpu --quick         # 1 round of 600
    .venv/bin/python -m bench.cpu --profile       # also: py-spy on the worker during a protected drain

CPU time (utime + stime from /proc/<pid>/stat) is robust to a busy machine where wall-clock rates are not:
another user's process takes cores, not our processes' CPU seconds. Each drain: the instance(s) attached
and SIGSTOPped, N messages pre-filled, SIGCONT, stopped when the partner has all N; the CPU of the worker(s),
of the broker's beam.smp (the node of the vhost: found by its listening port) and of this process (the
partner consuming the deliveries) over that window, divided by N. Rounds alternate protect / pass-through
so both see the same machine; the medians are kept.

Targets (issue 16):
  1  extra machine CPU per protected 1 KiB message over pass-through <= 1.5x the in-process encoder's CPU
  2  as many instances as cores: rate >= 0.85x cores / (bare crypto CPU + pass-through CPU per message)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import os
import signal
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    KIB,
    OFF_PORT,
    PORT,
    Pki,
    busy_seconds,
    cpu_seconds,
    run_bench,
    say,
    steal_seconds,
    table,
    verdict,
    write_deployment,
)
from bench.pipeline import build, encoder_op, floor_op
from bench.rig import NODES, Client, Node, Rig, Worker, vhost
from worker.message import Message

PYSPY = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "py-spy"


@dataclass(frozen=True)
class Cpu:
    """CPU milliseconds per message over one drain, and its wall-clock rate."""

    worker: float
    broker: float
    partner: float
    rate: float
    other_cores: float = 0.0  # cores busy with anything but the worker(s), the broker and this bench (other users)
    pipeline: float = 0.0  # the workers' own pipeline_cpu_ms per message (the encoder's CPU in the worker)
    steal_cores: float = 0.0  # vCPU time the hypervisor gave to other VMs during the drain (not in other_cores)

    @property
    def machine(self) -> float:
        return self.worker + self.broker + self.partner


def med(values: list[Cpu]) -> Cpu:
    fields = ("worker", "broker", "partner", "rate", "other_cores", "pipeline", "steal_cores")
    return Cpu(*(statistics.median(getattr(v, f) for v in values) for f in fields))


def cpu_ms_per_op(op: object, seconds: float) -> float:
    """CPU milliseconds (this thread) per call of ``op``, over about ``seconds``."""
    assert callable(op)
    op()
    n, started = 0, time.thread_time()
    while time.thread_time() - started < seconds:
        op()
        n += 1
    return (time.thread_time() - started) * 1000 / n


async def drain(rig: Rig, client: Client, workers: list[Worker], port: str, body: bytes, count: int) -> Cpu:
    """One drain through already attached ``workers`` (kept running for the next drain)."""
    for worker in workers:
        worker.signal(signal.SIGSTOP)
    client.arrivals.clear()
    await client.publish(port, body, count)
    beam = rig.beam()
    logged = [len(w.events("message.delivered")) for w in workers]
    before = [cpu_seconds(w.pid) for w in workers], cpu_seconds(beam) if beam else 0.0, cpu_seconds(os.getpid())
    busy, steal = busy_seconds(), steal_seconds()
    started = time.monotonic_ns()
    for worker in workers:
        worker.signal(signal.SIGCONT)
    await client.wait_arrivals(count, timeout_s=300)
    seconds = (max(a[0] for a in client.arrivals) - started) / 1e9
    await asyncio.sleep(0.2)  # the last acks' broker work
    w = sum(cpu_seconds(x.pid) for x in workers) - sum(before[0])
    b = (cpu_seconds(beam) if beam else 0.0) - before[1]
    p = cpu_seconds(os.getpid()) - before[2]
    stolen = steal_seconds() - steal
    other = (busy_seconds() - busy - w - b - p - stolen) / (seconds + 0.2)
    lines = [e for x, n in zip(workers, logged, strict=True) for e in x.events("message.delivered")[n:]]
    encoder = sum(float(e.get("pipeline_cpu_ms", 0.0)) for e in lines) / max(1, len(lines))
    cpu = Cpu(w * 1000 / count, b * 1000 / count, p * 1000 / count, count / seconds, max(0.0, other), encoder)
    return dataclasses.replace(cpu, steal_cores=stolen / (seconds + 0.2))


async def paced(rig: Rig, client: Client, worker: Worker, port: str, body: bytes, rate: float, seconds: float) -> Cpu:
    """CPU per message at a steady ``rate`` (publish -> delivery, the worker running throughout): both ports at
    the same rate see the same batching (one message at a time), so their difference is per-message work.
    The producer's publishing is in the broker's and this process's CPU, the same for both ports."""
    beam = rig.beam()
    before = cpu_seconds(worker.pid), cpu_seconds(beam) if beam else 0.0, cpu_seconds(os.getpid())
    client.arrivals.clear()
    sent = await client.paced(port, body, rate, seconds)
    await client.wait_arrivals(sent, timeout_s=120)
    await asyncio.sleep(0.2)
    w = cpu_seconds(worker.pid) - before[0]
    b = (cpu_seconds(beam) if beam else 0.0) - before[1]
    p = cpu_seconds(os.getpid()) - before[2]
    return Cpu(w * 1000 / sent, b * 1000 / sent, p * 1000 / sent, rate)


def profile(worker: Worker, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling the worker (non-blocking: the worker is never paused) into collapsed stacks."""
    argv = [str(PYSPY), "record", "--nonblocking", "-r", "250", "-d", f"{seconds:.0f}", "-f", "raw", "-o", str(out)]
    return subprocess.Popen([*argv, "--pid", str(worker.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def perf_profiled(
    rig: Rig, client: Client, worker: Worker, port: str, body: bytes, out: Path
) -> tuple[dict[str, float], dict[str, float], float]:
    """``perf record -e cpu-clock`` on the worker over 4 drains: samples only while it runs on a CPU, so unlike
    py-spy's (wall-clock) samples the shares are of CPU time even on a busy machine. Share per shared object
    and per kernel symbol, and the worker's CPU ms/msg meanwhile."""
    rec = start_perf(worker, out)
    await asyncio.sleep(0.5)
    cpus = [await drain(rig, client, [worker], port, body, 1000) for _ in range(4)]
    rec.send_signal(signal.SIGINT)
    rec.wait(timeout=60)
    return perf_shares(out, "dso"), perf_shares(out, "sym", kernel=True), med(cpus).worker


def start_perf(worker: Worker, out: Path) -> subprocess.Popen[bytes]:
    argv = ["perf", "record", "-q", "-e", "cpu-clock", "-F", "1999", "-o", str(out), "-p", str(worker.pid)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def perf_shares(data: Path, key: str, *, kernel: bool = False) -> dict[str, float]:
    """{dso or symbol: share of samples} from ``perf report --stdio``; ``kernel``: kernel symbols only."""
    argv = ["perf", "report", "-i", str(data), "--stdio", "--sort", key, "--percent-limit", "0.5"]
    if kernel:
        argv += ["--dsos", "[kernel.kallsyms]", "--percentage", "absolute"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    shares: dict[str, float] = {}
    for line in done.stdout.splitlines():
        cols = line.split()
        if len(cols) >= 2 and cols[0].endswith("%") and not line.lstrip().startswith("#"):
            name = " ".join(cols[1:]).replace("[k] ", "")
            shares[name] = float(cols[0].rstrip("%")) / 100
    return shares


def report_perf(title: str, protect: tuple[dict[str, float], dict[str, float], float],
                passthru: tuple[dict[str, float], dict[str, float], float]) -> None:  # fmt: skip
    (pd, pk, pms), (od, ok, oms) = protect, passthru
    names = sorted(set(pd) | set(od), key=lambda n: -(pd.get(n, 0) * pms))
    rows = []
    for n in names:
        a, b = pd.get(n, 0) * pms, od.get(n, 0) * oms
        rows.append([n, f"{a:.3f}", f"{b:.3f}", f"{a - b:+.3f}"])
    rows.append(["total (measured CPU)", f"{pms:.3f}", f"{oms:.3f}", f"{pms - oms:+.3f}"])
    table(f"worker CPU ms per 1 KiB message by shared object (perf cpu-clock), {title}",
          ["object", "protect", "pass-through", "difference"], rows)  # fmt: skip
    names = sorted(set(pk) | set(ok), key=lambda n: -(pk.get(n, 0) * pms))[:12]
    rows = [[n, f"{pk.get(n, 0) * pms:.3f}", f"{ok.get(n, 0) * oms:.3f}"] for n in names]
    table("top kernel symbols (ms per message)", ["symbol", "protect", "pass-through"], rows)


# (category, substrings of a frame "function (file:line)") in the order a stack is tested, leaf first
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("encoder (worker/smime, pipeline)", ("worker/smime/", "worker/pipeline/encoder.py", "worker/pipeline/stage.py")),
    ("logging (structlog, json)", ("structlog/", "json/", "worker/logs.py", "logging/")),
    ("aiormq", ("aiormq/",)),
    ("pamqp (frame codec)", ("pamqp/",)),
    ("aio-pika", ("aio_pika/",)),
    ("worker/broker", ("worker/broker/",)),
    ("worker/host, message", ("worker/host/", "worker/message.py", "worker/pipeline/runtime.py")),
    ("asyncio, selectors, socket", ("asyncio/", "selectors.py", "socket.py")),
]


def categorised(raw: Path) -> tuple[collections.Counter[str], collections.Counter[str], int]:
    """Samples per category (the first frame from the leaf that matches one), leaf functions, total."""
    cats: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    text = raw.read_text(errors="replace") if raw.exists() else ""
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        frames = stack.split(";")[1:]  # the first is the thread
        if not frames:
            continue
        total += count
        leaves[frames[-1].split(" (")[0] + " " + frames[-1].rsplit("/", 1)[-1].rstrip(")")] += count
        for frame in reversed(frames):
            name = next((c for c, keys in CATEGORIES if any(k in frame for k in keys)), None)
            if name is not None:
                cats[name] += count
                break
        else:
            cats["other"] += count
    return cats, leaves, total


@dataclass
class Case:
    broker: str
    signer: str
    encoder_ms: float
    crypto_ms: float
    entity: int
    protect: Cpu
    passthru: Cpu
    pass_entity: Cpu
    protect_n: Cpu
    pass_n: Cpu
    instances: int
    paced_protect: Cpu
    paced_pass: Cpu


async def one_case(node_key: str, signer: str, root: Path, pki: Pki, args: argparse.Namespace) -> Case:
    node: Node = NODES[node_key]
    config = write_deployment(root, pki, signer)
    pipeline = build(root / "inproc", pki, signer)
    partner = pki.partner.key.public_key()
    payload = os.urandom(KIB)
    entity = len(pipeline.run(Message(body=payload, message_id="bench", send_port=PORT)).body)
    encoder_ms = cpu_ms_per_op(encoder_op(pipeline, payload), 1.0)
    crypto_ms = cpu_ms_per_op(floor_op(pki.signers[signer], partner, payload), 1.0)  # type: ignore[arg-type]
    cores = os.cpu_count() or 1
    env = dict(kv.split("=", 1) for kv in args.env)
    with vhost(node) as url:
        rig = Rig(root, config, url, node)
        client = await Client.open(url)
        try:
            one = rig.worker(**env)
            await client.wait_consumers(1)
            await drain(rig, client, [one], PORT, payload, 300)  # warm-up: first-use costs
            await drain(rig, client, [one], OFF_PORT, payload, 300)
            prot, pas, pas_e = [], [], []
            for _ in range(args.rounds):
                prot.append(await drain(rig, client, [one], PORT, payload, args.count))
                pas.append(await drain(rig, client, [one], OFF_PORT, payload, args.count))
                pas_e.append(await drain(rig, client, [one], OFF_PORT, os.urandom(entity), args.count))
            rate = round(min(c.rate for c in prot) / 2, -1)
            pp, po = [], []
            for _ in range(args.rounds):
                pp.append(await paced(rig, client, one, PORT, payload, rate, args.paced_s))
                po.append(await paced(rig, client, one, OFF_PORT, payload, rate, args.paced_s))
            if args.profile:
                profiles = {}
                for port in (PORT, OFF_PORT):
                    profiles[port] = await profiled(rig, client, one, port, payload, root / f"spy-{node_key}-{port}")
                report_profile(f"{node.name}, {signer}", profiles[PORT], profiles[OFF_PORT])
            if args.perf:
                prof = await perf_profiled(rig, client, one, PORT, payload, root / "perf-protect.data")
                pasf = await perf_profiled(rig, client, one, OFF_PORT, payload, root / "perf-pass.data")
                report_perf(f"{node.name}, {signer}", prof, pasf)
            rest = [rig.worker(**env) for _ in range(cores - 1)]
            everyone = [one, *rest]
            await client.wait_consumers(cores)
            await drain(rig, client, everyone, PORT, payload, 300)
            prot_n, pas_n = [], []
            for _ in range(args.rounds):
                prot_n.append(await drain(rig, client, everyone, PORT, payload, args.count))
                pas_n.append(await drain(rig, client, everyone, OFF_PORT, payload, args.count))
        finally:
            await client.close()
            rig.close()
    return Case(node_key, signer, encoder_ms, crypto_ms, entity, med(prot), med(pas), med(pas_e), med(prot_n),
                med(pas_n), cores, med(pp), med(po))  # fmt: skip


async def profiled(
    rig: Rig, client: Client, worker: Worker, port: str, body: bytes, out: Path
) -> tuple[collections.Counter[str], collections.Counter[str], int, float]:
    """py-spy over protected (or pass-through) drains for 8 s: categories, leaves, samples, worker CPU ms/msg."""
    spy = profile(worker, 8, out)
    await asyncio.sleep(1.0)
    cpus: list[Cpu] = []
    while spy.poll() is None and len(cpus) < 60:
        cpus.append(await drain(rig, client, [worker], port, body, 600))
    spy.wait(timeout=60)
    cats, leaves, total = categorised(out)
    return cats, leaves, total, med(cpus).worker


def report_profile(
    title: str, *profiles: tuple[collections.Counter[str], collections.Counter[str], int, float]
) -> None:
    """Worker CPU ms per message by category (share of py-spy samples x the measured ms/msg), protect vs pass."""
    (pc, pl, pt, pms), (oc, _, ot, oms) = profiles
    if not pt or not ot:
        say(f"  profile {title}: py-spy wrote nothing")
        return
    names = [n for n, _ in (pc + oc).most_common()]
    rows = [[n, f"{pc[n] / pt * pms:.3f}", f"{oc[n] / ot * oms:.3f}", f"{pc[n] / pt * pms - oc[n] / ot * oms:+.3f}"]
            for n in names]  # fmt: skip
    rows.append(["total (measured CPU)", f"{pms:.3f}", f"{oms:.3f}", f"{pms - oms:+.3f}"])
    head = ["category", "protect ms/msg", "pass-through ms/msg", "difference"]
    table(f"worker CPU per 1 KiB message by category (py-spy samples {pt} / {ot}), {title}", head, rows)
    rows = [[name, f"{n / pt * 100:.1f}"] for name, n in pl.most_common(20)]
    table("top leaf functions, protect", ["function", "%"], rows)


def report(cases: list[Case]) -> None:
    head = ["broker", "signer", "run", "worker ms", "broker ms", "partner ms", "machine ms", "msg/s"]
    head += ["other users' cores", "steal cores"]
    rows = []
    for c in cases:
        for label, cpu in (
            ("protect 1 KiB", c.protect),
            ("pass-through 1 KiB", c.passthru),
            (f"pass-through {c.entity:,} B (the entity's size)", c.pass_entity),
            (f"protect, {c.instances} instances", c.protect_n),
            (f"pass-through, {c.instances} instances", c.pass_n),
            (f"protect paced at {c.paced_protect.rate:,.0f} msg/s", c.paced_protect),
            (f"pass-through paced at {c.paced_pass.rate:,.0f} msg/s", c.paced_pass),
        ):
            rows.append([c.broker, c.signer, label, f"{cpu.worker:.3f}", f"{cpu.broker:.3f}", f"{cpu.partner:.3f}",
                         f"{cpu.machine:.3f}", f"{cpu.rate:,.0f}", f"{cpu.other_cores:.2f}",
                         f"{cpu.steal_cores:.2f}"])  # fmt: skip
    table("CPU milliseconds per message (medians of the rounds)", head, rows)
    head = ["broker", "signer", "extra worker", "extra broker", "extra partner", "extra machine"]
    head += ["of which entity size", "encoder in-process", "bare crypto", "extra / encoder", "<=1.5"]
    head += ["extra at equal rate", "/ encoder", "encoder in the worker", "worker extra beyond it"]
    rows = []
    for c in cases:
        extra = Cpu(c.protect.worker - c.passthru.worker, c.protect.broker - c.passthru.broker,
                    c.protect.partner - c.passthru.partner, 0.0)  # fmt: skip
        # The entity travels only out (worker -> broker -> partner): half of pass-through's growth with size.
        size = (c.pass_entity.machine - c.passthru.machine) / 2
        ratio = extra.machine / c.encoder_ms
        at_rate = c.paced_protect.machine - c.paced_pass.machine
        rows.append([c.broker, c.signer, f"{extra.worker:.3f}", f"{extra.broker:.3f}", f"{extra.partner:.3f}",
                     f"{extra.machine:.3f}", f"{size:.3f}", f"{c.encoder_ms:.3f}", f"{c.crypto_ms:.3f}",
                     f"{ratio:.2f}", verdict(ratio, 1.5, at_most=True), f"{at_rate:.3f}",
                     f"{at_rate / c.encoder_ms:.2f}", f"{c.protect.pipeline:.3f}",
                     f"{extra.worker - c.protect.pipeline:.3f}"])  # fmt: skip
    table("target 1: extra CPU ms per protected message over pass-through", head, rows)
    head = ["broker", "signer", "instances", "msg/s", "limit msg/s", "ratio", ">=0.85", "machine ms/msg"]
    head += ["other users' + steal cores", "limit on the cores left", "ratio"]
    rows = []
    for c in cases:
        limit = c.instances / (c.crypto_ms + c.passthru.machine) * 1000
        ratio = c.protect_n.rate / limit
        taken = c.protect_n.other_cores + c.protect_n.steal_cores
        left = max(0.1, c.instances - taken) / (c.crypto_ms + c.passthru.machine) * 1000
        rows.append([c.broker, c.signer, str(c.instances), f"{c.protect_n.rate:,.0f}", f"{limit:,.0f}",
                     f"{ratio:.2f}", verdict(ratio, 0.85), f"{c.protect_n.machine:.3f}",
                     f"{taken:.2f}", f"{left:,.0f}", f"{c.protect_n.rate / left:.2f}"])  # fmt: skip
    table("target 2: cores / (bare crypto + pass-through CPU per message), same run", head, rows)
    say(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


async def run(args: argparse.Namespace, root: Path) -> None:
    pki = Pki.make()
    cases = []
    for node in args.brokers:
        for signer in args.signers:
            case = await one_case(node, signer, root / f"{node}-{signer}", pki, args)
            say(f"  {node} {signer}: protect {case.protect.machine:.3f} ms, pass {case.passthru.machine:.3f} ms, "
                f"encoder {case.encoder_ms:.3f} ms; load {os.getloadavg()[0]:.2f}")  # fmt: skip
            cases.append(case)
    report(cases)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round of 600-message drains")
    parser.add_argument("--brokers", nargs="+", default=["4.3", "3.10"], choices=list(NODES))
    parser.add_argument("--signers", nargs="+", default=["rsa2048", "ec-p256"], choices=["rsa2048", "ec-p256"])
    parser.add_argument("--profile", action="store_true", help="py-spy the worker during protected drains")
    parser.add_argument("--perf", action="store_true", help="perf record (cpu-clock) the worker: CPU by shared object")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="extra worker environment")
    args = parser.parse_args(argv)
    args.rounds, args.count, args.paced_s = (1, 600, 3.0) if args.quick else (3, 2000, 5.0)
    return run_bench("sendpipe-cpu-", run, args)


if __name__ == "__main__":
    raise SystemExit(main())
