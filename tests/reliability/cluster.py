"""A 3-node RabbitMQ cluster started by the test itself, and the cluster fault scenario (issue 10, item 4).

    .venv/bin/python -m tests.reliability.cluster [--long] [--fault stop|kill ...] [--keep DIR]

The nodes run the machine's RabbitMQ 3.10 packages (``/usr/lib/rabbitmq/bin``, as root, with an environment
of their own): node names ``sp-c1@localhost`` .. ``sp-c3@localhost``, AMQP 127.0.0.1:5701-5703, distribution
127.0.0.1:25701-25703, their own epmd on port 4401 (started here, in the foreground; the machine's epmd on
4369 and its node ``rabbit@<host>`` are never touched), their own Erlang cookie (``HOME`` of the nodes and of
every ``rabbitmqctl`` call against them), data, logs, config and plugins file under a temporary directory.
Nodes 2 and 3 join node 1 (``stop_app``, ``join_cluster``, ``start_app``). ``Cluster.close`` stops every
process it started (and only those, by their pids) and deletes the directory, also on a failure or Ctrl-C
(``atexit`` as a last resort).

The scenario: two ``sendpipe run`` instances, each with ``SENDPIPE_AMQP_URL`` listing the three nodes in a
different order; a producer publishing confirmed messages through a connection that fails over to the next
node; under load the host queue's leader node is stopped (``rabbitmqctl stop_app``) or, in the second form,
its own ``beam.smp`` is killed (``kill -9``); after an outage the node is brought back. Then everything is
drained and reconciled as in the fault harness (``harness.Run``): 0 lost, 0 unexpected, duplicates <= prefetch
per instance, every instance consuming again within 30 s of the fault.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in {None, ""}:  # `python tests/reliability/cluster.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    __package__ = "tests.reliability"

import aio_pika
from aio_pika.abc import AbstractConnection

from . import harness, lab
from .lab import HOST_QUEUE, Instance, Lab, Publisher, event_time

# isort: split
from brokers import Broker  # tests/ is on sys.path once lab is imported

BIN = Path("/usr/lib/rabbitmq/bin")
SIZE = 3
AMQP_BASE_PORT = 5701  # node i listens on AMQP_BASE_PORT + i - 1
DIST_BASE_PORT = 25701
EPMD_PORT = 4401
NODE_PREFIX = "sp-c"
BOOT_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 60.0
LABEL = f"rabbitmq-3.10 cluster x{SIZE}"
# The instances' node lists (1-based node numbers): each its own order (SPEC: tried in order).
INSTANCE_ORDERS = {"a": (1, 2, 3), "b": (3, 2, 1)}
PUBLISHER_ORDER = (1, 2, 3)  # starts on node 1, where the host queue's leader is: it loses its node too


class ClusterError(AssertionError):
    """The cluster could not be started or driven (an AssertionError: the test fails, never skips)."""


@dataclass
class Node:
    """One node of the cluster: its name, ports, directory, the process we started, a Broker for its ctl."""

    index: int  # 1-based
    name: str  # sp-c1@localhost
    amqp_port: int
    dist_port: int
    base: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    broker: Broker = field(init=False)

    def __post_init__(self) -> None:
        ctl_env = [f"{k}={v}" for k, v in self.env.items() if not k.startswith("RABBITMQ_")]
        self.broker = Broker(
            name=f"rabbitmq-3.10-cluster-c{self.index}",
            version="3.10",
            host="127.0.0.1",
            port=self.amqp_port,
            ctl_argv=("env", "-i", *ctl_env, str(BIN / "rabbitmqctl"), "-n", self.name),
            owned=True,
            how_to_start="tests/reliability/cluster.py (started by the test itself)",
        )

    @property
    def pid_file(self) -> Path:
        return self.base / f"{self.index}.pid"

    def url(self, vhost: str) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/{vhost}"


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (part.decode("utf-8", "replace").partition("=") for part in raw.split(b"\0") if part)
    return {key: value for key, _, value in pairs}


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return True
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        time.sleep(0.05)
    return not Path(f"/proc/{pid}").exists()


class Cluster:
    """Three RabbitMQ 3.10 nodes of the machine's packages on 127.0.0.1, clustered (see the module docstring)."""

    def __init__(self, root: Path | None = None, *, size: int = SIZE) -> None:
        if not (BIN / "rabbitmq-server").exists():
            raise ClusterError(f"no {BIN}/rabbitmq-server: the machine's rabbitmq-server package is missing")
        self.root = root or Path(tempfile.mkdtemp(prefix="sendpipe-cluster-"))
        self.home = self.root / "home"  # HOME of the nodes and of rabbitmqctl: the Erlang cookie
        self.epmd: subprocess.Popen[bytes] | None = None
        self.nodes: list[Node] = []
        self._closed = False
        erts = sorted(Path("/usr/lib/erlang").glob("erts-*/bin/epmd"))
        if not erts:
            raise ClusterError("no epmd under /usr/lib/erlang")
        self._epmd_bin = erts[-1]
        base_env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "ERL_EPMD_PORT": str(EPMD_PORT),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }
        for i in range(1, size + 1):
            base = self.root / f"node{i}"
            name = f"{NODE_PREFIX}{i}@localhost"
            env = dict(base_env)
            env.update(
                RABBITMQ_NODENAME=name,
                RABBITMQ_USE_LONGNAME="false",
                RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
                RABBITMQ_NODE_PORT=str(AMQP_BASE_PORT + i - 1),
                RABBITMQ_DIST_PORT=str(DIST_BASE_PORT + i - 1),
                RABBITMQ_CONF_ENV_FILE=str(base / "rabbitmq-env.conf"),
                RABBITMQ_CONFIG_FILE=str(base / "rabbitmq.conf"),
                RABBITMQ_ADVANCED_CONFIG_FILE=str(base / "advanced.config"),
                RABBITMQ_ENABLED_PLUGINS_FILE=str(base / "enabled_plugins"),
                RABBITMQ_MNESIA_BASE=str(base / "mnesia"),
                RABBITMQ_LOG_BASE=str(base / "log"),
                RABBITMQ_PID_FILE=str(base / f"{i}.pid"),
                RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            )
            self.nodes.append(Node(i, name, AMQP_BASE_PORT + i - 1, DIST_BASE_PORT + i - 1, base, env))

    # -- start ---------------------------------------------------------------------------------

    def start(self) -> Cluster:
        """Write the node files, start epmd and the nodes, cluster them; on any failure, clean up and raise."""
        atexit.register(self.close)
        try:
            self._check_ports()
            self._write_files()
            self._start_epmd()
            for node in self.nodes:
                self._spawn(node)
            for node in self.nodes:
                self.await_booted(node)
            for node in self.nodes[1:]:
                self.ctl(node, "stop_app")
                self.ctl(node, "join_cluster", self.nodes[0].name)
                self.ctl(node, "start_app")
                self.await_booted(node)
            running = self.ctl(self.nodes[0], "eval", "rabbit_nodes:all_running().")
            missing = [n.name for n in self.nodes if n.name not in running]
            if missing:
                raise ClusterError(f"not clustered: {missing} missing from {running.strip()}")
        except BaseException:
            self.close()
            raise
        return self

    def _check_ports(self) -> None:
        busy = [p for n in self.nodes for p in (n.amqp_port, n.dist_port) if not _port_free(p)] + (
            [EPMD_PORT] if not _port_free(EPMD_PORT) else []
        )
        if busy:
            raise ClusterError(
                f"ports {busy} are in use on 127.0.0.1 (a cluster of another run, left behind?): "
                f"look for beam.smp processes with '-sname {NODE_PREFIX}N@localhost' and epmd on port {EPMD_PORT}"
            )

    def _write_files(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(uuid.uuid4().hex.upper())
        cookie.chmod(0o600)
        for node in self.nodes:
            (node.base / "mnesia").mkdir(parents=True)
            (node.base / "log").mkdir()
            (node.base / "rabbitmq-env.conf").write_text("")
            (node.base / "enabled_plugins").write_text("[].\n")
            (node.base / "advanced.config").write_text("[].\n")
            (node.base / "rabbitmq.conf").write_text(
                "# sendpipe's test cluster (tests/reliability/cluster.py)\n"
                f"listeners.tcp.1 = 127.0.0.1:{node.amqp_port}\n"
                "loopback_users.guest = true\n"
                "log.console = false\n"
                "log.file.level = info\n"
            )

    def _start_epmd(self) -> None:
        env = dict(self.nodes[0].env)
        self.epmd = subprocess.Popen(
            [str(self._epmd_bin), "-port", str(EPMD_PORT), "-address", "127.0.0.1"],
            env={k: v for k, v in env.items() if not k.startswith("RABBITMQ_")},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while _port_free(EPMD_PORT):
            if self.epmd.poll() is not None or time.monotonic() > deadline:
                raise ClusterError(f"epmd on port {EPMD_PORT} did not start (exit {self.epmd.poll()})")
            time.sleep(0.05)

    def _spawn(self, node: Node) -> None:
        """``rabbitmq-server`` in the foreground, in a session of its own (its wrapper shell is our child)."""
        node.pid_file.unlink(missing_ok=True)
        with (node.base / "log" / "server.out").open("ab") as out:
            node.proc = subprocess.Popen(
                [str(BIN / "rabbitmq-server")],
                env=node.env,
                cwd=node.base,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    # -- control -------------------------------------------------------------------------------

    def ctl(self, node: Node, *args: str, timeout_s: float = 90, check: bool = True) -> str:
        """``rabbitmqctl -n <node> -s ARGS`` with the cluster's cookie and epmd."""
        return node.broker.ctl(*args, timeout_s=timeout_s, check=check)

    def live(self, *, besides: Node | None = None) -> Node:
        """A node whose application is running (for ctl calls while another is down)."""
        for node in self.nodes:
            if node is not besides and node.broker.app_running():
                return node
        raise ClusterError("no cluster node is running")

    def await_booted(self, node: Node, timeout_s: float = BOOT_TIMEOUT_S) -> None:
        """Bounded: the node's application is booted and its AMQP port answers."""
        deadline = time.monotonic() + timeout_s
        while True:
            if node.proc is not None and node.proc.poll() is not None:
                raise ClusterError(f"{node.name} exited ({node.proc.returncode}); log: {self._log_tail(node)}")
            done = node.broker.ctl_run("-q", "await_startup", "--timeout", "5", timeout_s=30)
            if done.returncode == 0 and node.broker.amqp_answers():
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"{node.name} did not boot within {timeout_s:.0f}s; log: {self._log_tail(node)}")
            time.sleep(0.5)

    def _log_tail(self, node: Node) -> str:
        texts = []
        for path in (node.base / "log" / f"{node.name}.log", node.base / "log" / "server.out"):
            with contextlib.suppress(OSError):
                texts.append(path.read_text(errors="replace")[-1500:])
        return " | ".join(texts)

    def stop_app(self, node: Node) -> None:
        self.ctl(node, "stop_app", timeout_s=STOP_TIMEOUT_S)

    def start_app(self, node: Node) -> None:
        self.ctl(node, "start_app", timeout_s=BOOT_TIMEOUT_S)
        self.await_booted(node)

    def beam_pid(self, node: Node) -> int:
        """The node's own ``beam.smp``: from its pid file, checked against its process (a beam.smp whose
        environment names this node and its data directory: the machine's beam never matches)."""
        deadline = time.monotonic() + 10
        while not node.pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        try:
            pid = int(node.pid_file.read_text().strip())
        except (OSError, ValueError) as exc:
            raise ClusterError(f"{node.name}: no readable pid file {node.pid_file}") from exc
        argv = _cmdline(pid)
        env = _environ(pid)
        if (
            not argv
            or not argv[0].endswith("beam.smp")
            or env.get("RABBITMQ_NODENAME") != node.name
            or env.get("RABBITMQ_MNESIA_BASE") != node.env["RABBITMQ_MNESIA_BASE"]
        ):
            raise ClusterError(f"{node.name}: pid {pid} of {node.pid_file} is not this node's beam.smp: {argv[:3]}")
        return pid

    def kill9(self, node: Node) -> None:
        """``kill -9`` of this node's own beam.smp (never any other beam on the machine)."""
        pid = self.beam_pid(node)
        os.kill(pid, signal.SIGKILL)
        if not _wait_gone(pid, 10):
            raise ClusterError(f"{node.name}: beam.smp {pid} still there 10 s after SIGKILL")
        if node.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.proc.wait(timeout=10)  # the wrapper shell ends with its beam

    def restart(self, node: Node) -> None:
        """Bring a stopped or killed node back: start_app if its VM runs, else a new rabbitmq-server."""
        if node.proc is not None and node.proc.poll() is None:
            self.start_app(node)
            return
        self._spawn(node)
        self.await_booted(node)

    def restart_if_down(self, node: Node) -> None:
        if not node.broker.app_running():
            self.restart(node)

    def leader_of(self, queue: str, vhost: str) -> Node:
        """The node leading quorum queue ``queue`` (``rabbitmqctl list_queues name leader``, asked of a live node)."""
        asked = self.live()
        for line in self.ctl(asked, "list_queues", "-p", vhost, "name", "leader").splitlines():
            parts = line.split("\t")
            if len(parts) == 2 and parts[0] == queue:
                for node in self.nodes:
                    if node.name == parts[1].strip():
                        return node
                raise ClusterError(f"{queue}: leader {parts[1]!r} is not one of our nodes")
        raise ClusterError(f"{queue} not found in vhost {vhost}")

    def queue_totals(self, vhost: str) -> dict[str, tuple[int, int]]:
        """Like ``lab.queue_totals``: every queue of the vhost, (ready + unacked, unacked)."""
        out: dict[str, tuple[int, int]] = {}
        listing = self.ctl(self.live(), "list_queues", "-p", vhost, "name", "messages", "messages_unacknowledged")
        for line in listing.splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                out[parts[0]] = (int(parts[1]), int(parts[2]))
        return out

    def diagnose(self, vhost: str) -> str:
        """What a failure message needs: each live node's view of the cluster and the vhost's queue leaders."""
        parts = []
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None or not node.broker.app_running():
                parts.append(f"{node.name}: down")
                continue
            seen = self.ctl(node, "eval", "nodes().", check=False, timeout_s=30).strip()
            queues = self.ctl(node, "list_queues", "-p", vhost, "name", "leader", "online", "messages", check=False)
            parts.append(f"{node.name}: sees {seen}; queues {' | '.join(queues.splitlines())}")
        return "; ".join(parts)

    def urls(self, order: tuple[int, ...], vhost: str) -> str:
        """The comma-separated node list of ``SENDPIPE_AMQP_URL`` in this order (1-based node numbers)."""
        return ",".join(self.nodes[i - 1].url(vhost) for i in order)

    @contextlib.contextmanager
    def vhost(self, prefix: str = "sendpipe-cluster") -> Iterator[str]:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.live().broker.add_vhost(name)
        try:
            yield name
        finally:
            with contextlib.suppress(Exception):
                self.ctl(self.live(), "delete_vhost", name, check=False)

    # -- teardown ------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every node and the epmd we started (by their pids), delete the directory. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for node in self.nodes:
            self._stop_node(node)
        if self.epmd is not None and self.epmd.poll() is None:
            self.epmd.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.epmd.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)

    def _stop_node(self, node: Node) -> None:
        proc = node.proc
        if proc is None:
            return
        beam: int | None = None
        with contextlib.suppress(ClusterError):
            if proc.poll() is None:
                beam = self.beam_pid(node)
        if proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.ctl(node, "stop", timeout_s=30, check=False)
        if beam is not None and not _wait_gone(beam, 15):
            with contextlib.suppress(ProcessLookupError):
                os.kill(beam, signal.SIGKILL)
            _wait_gone(beam, 10)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the session we created for it: its wrapper and beam
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()


# -- the scenario -------------------------------------------------------------------------------

SHORT = harness.Profile(
    "short",
    rate=25,
    window_s=12,
    kills=0,
    terms=0,
    closes=0,
    restarts=1,
    outage_s=5,
    hold_s=0,
    settle_timeout_s=60,
    scenario_timeout_s=150,
)
LONG = harness.Profile(
    "long",
    rate=60,
    window_s=60,
    kills=0,
    terms=0,
    closes=0,
    restarts=1,
    outage_s=20,
    hold_s=0,
    settle_timeout_s=180,
    scenario_timeout_s=600,
    samples=10,
)
FAULTS = ("stop", "kill")


@dataclass
class FailoverPublisher(Publisher):
    """``lab.Publisher`` whose connection moves on to the next node of ``urls`` when it is lost."""

    urls: list[str] = field(default_factory=list)
    nodes_used: list[int] = field(default_factory=list)  # 1-based positions in urls, per connection
    refused_at: list[float] = field(default_factory=list)  # epoch s of every nack / cut-off publish
    _next: int = 0

    async def _connect(self, timeout_s: float = 90) -> AbstractConnection:
        deadline = time.monotonic() + timeout_s
        while True:
            position = self._next % len(self.urls)
            try:
                conn = await aio_pika.connect(self.urls[position], timeout=5)
            except (TimeoutError, OSError, aio_pika.exceptions.AMQPException) as exc:
                self._next += 1
                if time.monotonic() > deadline:
                    raise AssertionError(f"producer: no node answered within {timeout_s}s: {exc!r}") from exc
                await asyncio.sleep(0.2)
                continue
            self.nodes_used.append(position + 1)
            return conn

    def _lost(self) -> None:
        self._next += 1  # like the worker: after a loss, the next node first

    def _refused(self) -> None:
        self.refused_at.append(time.time())


class ClusterRun(harness.Run):
    """``harness.Run`` on the cluster: per-instance node lists, a quorum capture queue, a failover producer."""

    def __init__(self, lab_: Lab, cluster: Cluster, vhost: str, fault: str, profile: harness.Profile, seed: int):
        self.cluster = cluster
        self.vhost = vhost
        self.fault = fault
        # The base class' single URL (setup, settle): node 2; settling happens with every node back.
        super().__init__(lab_, f"cluster-{fault}", profile, seed, cluster.nodes[1].broker, cluster.nodes[1].url(vhost))
        self.figures.broker = LABEL
        self.orders: dict[str, tuple[int, ...]] = {}
        # The capture queue (the partner's queue) gets its leader on node 1, where the host queue's will be:
        # the lost node leads both, the harder case for the instances' delivery publishes.
        self.capture_node = 1
        self.failover = FailoverPublisher(
            self.url,
            prefix=self.name,
            count=round(profile.rate * 600),
            rate=profile.rate,
            urls=cluster.urls(PUBLISHER_ORDER, vhost).split(","),
        )
        self.publisher = self.failover

    def start_on(self, slot: str, account: str, order: tuple[int, ...]) -> Instance:
        """Like ``Run.start``, with the instance's own node list (and the production reconnect backoff)."""
        self.orders[slot] = order
        env = lab.worker_env(
            self.dep,
            self.cluster.urls(order, self.vhost),
            account,
            SENDPIPE_PREFETCH_COUNT=str(self.profile.prefetch),
            SENDPIPE_RECONNECT_MAX_S="",  # the production default (15 s): the 30 s bound must hold with it
        )
        inst = Instance(f"{slot}#{len(self.instances)}", account, env, self.logs / f"{slot}-{len(self.instances)}.log")
        self.instances.append(inst)
        self.running[slot] = inst.start()
        return inst

    def node_of(self, slot: str, inst: Instance, before: float | None = None) -> Node:
        """The cluster node the instance's latest ``consumer.started`` (before ``before``) was on."""
        started = [e for e in inst.tail.named("consumer.started") if before is None or event_time(e) <= before]
        if not started:
            raise AssertionError(f"{inst.label}: never consumed")
        position = int(started[-1]["node"])
        return self.cluster.nodes[self.orders[slot][position - 1] - 1]

    async def setup(self) -> None:
        """The capture queue is a quorum queue: a classic one lives on one node and would vanish with it.
        Declared through ``capture_node`` (client-local leader placement)."""
        conn = await lab.connect(self.cluster.nodes[self.capture_node - 1].url(self.vhost))
        try:
            ch = await conn.channel()
            delivery = await ch.declare_exchange("sendpipe.delivery", "topic", durable=True)
            capture = await ch.declare_queue(harness.CAPTURE_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
            await capture.bind(delivery, routing_key="#")
        finally:
            await conn.close()

    def queue_totals(self) -> dict[str, tuple[int, int]]:
        """The cluster's queue listing (``lab.queue_totals`` finds a test broker by port, not a cluster node)."""
        return self.cluster.queue_totals(self.vhost)


async def _recovery(run: ClusterRun, slot: str, inst: Instance, lost: Node, t_fault: float) -> None:
    """Fault -> the instance's next ``consumer.started`` when its node was the lost one, else -> its next delivery."""
    try:
        await _recovery_of(run, slot, inst, lost, t_fault)
    except AssertionError as exc:
        run.figures.problems.append(f"{inst.label}: not recovered: {exc}")
        run.figures.notes.append(f"cluster then: {await asyncio.to_thread(run.cluster.diagnose, run.vhost)}")


async def _recovery_of(run: ClusterRun, slot: str, inst: Instance, lost: Node, t_fault: float) -> None:
    node = run.node_of(slot, inst, before=t_fault)
    if node is lost:
        started = await inst.wait_for("consumer.started", after=t_fault, timeout_s=60)
        now_on = run.node_of(slot, inst)
        run.recovered(event_time(started) - t_fault, f"{run.fault} {lost.name}, {inst.label} (was on it)")
        run.figures.notes.append(
            f"{inst.label} was on {lost.name}: consuming again on {now_on.name} "
            f"{event_time(started) - t_fault:.2f}s after the fault"
        )
        if now_on is lost:
            run.figures.problems.append(f"{inst.label} came back on the lost node {lost.name}?")
    else:
        delivered = await inst.wait_for("message.delivered", after=t_fault, timeout_s=60)
        run.recovered(event_time(delivered) - t_fault, f"{run.fault} {lost.name}, {inst.label} (on {node.name})")
        lost_lines = inst.tail.named("broker.connection_lost", after=t_fault)
        run.figures.notes.append(
            f"{inst.label} stayed on {node.name}: next delivery {event_time(delivered) - t_fault:.2f}s after the "
            f"fault ({len(lost_lines)} connection losses)"
        )


async def cluster_fault(run: ClusterRun) -> None:
    """The scenario body: two instances, load, the host queue leader's node stopped or killed, brought back."""
    cluster = run.cluster
    # Instance a first: it declares the host queue, whose leader is then on a's first node (client-local).
    first = run.start_on("a", "svc-a", INSTANCE_ORDERS["a"])
    await first.wait_for("consumer.started", timeout_s=60)
    run.start_on("b", "svc-b", INSTANCE_ORDERS["b"])
    await run.all_consuming(timeout_s=60)
    run.start_publishing()
    await run.until(run.profile.window_s * run.rng.uniform(0.25, 0.4))
    lost = await asyncio.to_thread(cluster.leader_of, HOST_QUEUE, run.vhost)
    t_fault = lab.now()
    if run.fault == "stop":
        await asyncio.to_thread(cluster.stop_app, lost)
    else:
        await asyncio.to_thread(cluster.kill9, lost)
    t_down = lab.now()
    try:
        await asyncio.gather(*(_recovery(run, s, i, lost, t_fault) for s, i in list(run.running.items())))
        await asyncio.sleep(max(0.0, run.profile.outage_s - (lab.now() - t_down)))
    finally:
        await asyncio.to_thread(cluster.restart, lost)
    t_back = lab.now()
    new_leader = await asyncio.to_thread(cluster.leader_of, HOST_QUEUE, run.vhost)
    what = "rabbitmqctl stop_app" if run.fault == "stop" else "kill -9 of its beam.smp"
    run.figures.notes.append(
        f"host queue leader {lost.name}: {what} ({t_down - t_fault:.1f}s), down {t_back - t_down:.1f}s "
        f"(incl. restart), leader now {new_leader.name}; recovery = fault -> consumer.started (instance on the "
        "lost node) or next delivery (others)"
    )
    if run.failover.nodes_used:
        run.figures.notes.append(f"producer connections on nodes {run.failover.nodes_used} of {PUBLISHER_ORDER}")
    if run.failover.channel_reopens:
        run.figures.notes.append(f"producer opened a new channel after {run.failover.channel_reopens} nacks")
    if run.failover.refused_at:
        since, until = min(run.failover.refused_at) - t_fault, max(run.failover.refused_at) - t_fault
        run.figures.notes.append(
            f"producer: publishes nacked or cut off from {since:.1f}s to {until:.1f}s after the fault "
            f"(node back at {t_back - t_fault:.1f}s)"
        )
    await run.settle()


async def run_cluster_scenario(
    lab_: Lab, cluster: Cluster, fault: str, profile: harness.Profile = SHORT, seed: int = 5
) -> harness.Figures:
    """One run (``fault`` = "stop" or "kill") in a vhost of its own on ``cluster``, reconciled."""
    if fault not in FAULTS:
        raise ValueError(f"fault must be one of {FAULTS}")
    started = time.monotonic()
    with cluster.vhost(f"sendpipe-cluster-{fault}") as vhost:
        run = ClusterRun(lab_, cluster, vhost, fault, profile, seed)
        run.figures.dup_limit = profile.prefetch * len(INSTANCE_ORDERS)  # prefetch per instance
        try:
            await run.setup()
            await asyncio.wait_for(cluster_fault(run), timeout=profile.scenario_timeout_s)
            await run.finish()
        except (AssertionError, TimeoutError) as exc:
            what = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            run.figures.problems.append(f"aborted: {what}")
        finally:
            run.cleanup()
            for node in cluster.nodes:  # whatever happened, every node is back for the next run
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(cluster.restart_if_down, node)
        figures = run.reconcile()
    figures.duration_s = time.monotonic() - started
    return figures


async def run_all(faults: list[str], profile: harness.Profile, seed: int, workdir: Path) -> list[harness.Figures]:
    lab_ = Lab.create(workdir)
    rows = []
    print(f"starting {LABEL} (127.0.0.1:{AMQP_BASE_PORT}-{AMQP_BASE_PORT + SIZE - 1}) ...", file=sys.stderr, flush=True)
    with Cluster(workdir / "cluster") as cluster:
        for fault in faults:
            print(f"running cluster-{fault} ({profile.name}) ...", file=sys.stderr, flush=True)
            rows.append(await run_cluster_scenario(lab_, cluster, fault, profile, seed))
            print(f"  {rows[-1].explain()} in {rows[-1].duration_s:.1f}s", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.cluster", description=__doc__.split("\n")[0])
    parser.add_argument("--long", action="store_true", help="the soak form instead of the CI form")
    parser.add_argument("--fault", action="append", choices=FAULTS, help="only these (repeatable; default both)")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="keep deployments and logs in this directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)
    profile = LONG if args.long else SHORT
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="sendpipe-cluster-run-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        rows = asyncio.run(run_all(args.fault or list(FAULTS), profile, args.seed, workdir))
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nsendpipe cluster scenario, {profile.name} form, seed {args.seed}, prefetch {profile.prefetch}\n")
    print(harness.table(rows))
    notes = harness.details(rows)
    if notes:
        print("\n" + notes)
    return 0 if all(f.ok for f in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
