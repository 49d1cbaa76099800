"""What every reliability check needs: deployments, vhosts, the broker's control, worker logs, a leak scanner.

The broker tests' classes (``Deployment``, ``Worker``) are reused as they are: ``tests/broker/conftest.py`` is
loaded by path under its own module name, so it never clashes with pytest's ``conftest`` modules, and the same
code works under pytest and from the command line (``python -m tests.reliability.harness``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import importlib.util
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:  # run as a command: make the tests' helper modules importable
    sys.path.insert(0, str(TESTS))

import aio_pika  # noqa: E402 - after the sys.path line (run as a command)
import smime_check  # noqa: E402 - after the sys.path line (run as a command)
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage  # noqa: E402 - after the sys.path line (run as a command)
from brokerkit import SENDPIPE, STORE_PASSWORD, Deployment, Worker  # noqa: E402 - after the sys.path line (run as a command)
from brokers import BROKERS, OWNED_TWIN, Broker, broker_of  # noqa: E402 - after the sys.path line (run as a command)
from cryptography.hazmat.primitives import serialization  # noqa: E402 - after the sys.path line (run as a command)
from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402 - after the sys.path line (run as a command)
from pki import Issued, TestPKI, write_other_people, write_personal_pem, write_personal_pfx  # noqa: E402 - after the sys.path line (run as a command)


def _broker_fixtures() -> ModuleType:
    # The fixtures of tests/broker/conftest.py, for tests/reliability/conftest.py and the harness CLI: two
    # modules named `conftest` cannot be imported side by side, so it is loaded by path under its own name.
    name = "sendpipe_broker_fixtures"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, TESTS / "broker" / "conftest.py")
        if spec is None or spec.loader is None:
            raise ImportError("cannot load tests/broker/conftest.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


broker_fixtures = _broker_fixtures()
unwrap = smime_check.unwrap  # decrypt and verify with the openssl CLI, as a partner would

HOST = "SendHost"
PORT = "Reliability"  # a send port with a generous retry policy, for the fault runs
DELIVERY_KEY = "reliability.orders"
HOST_QUEUE = f"sendpipe.host.{HOST}"
SUSPENDED_QUEUE = f"sendpipe.suspended.{HOST}"
ENVELOPED = "application/pkcs7-mime; smime-type=enveloped-data"
# Every payload starts with this; it must never show up in a log line.
MARKER = b"SENDPIPE-RELIABILITY-PAYLOAD-MARKER-"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


# -- the broker ---------------------------------------------------------------------------------
# Every function takes the broker it works on (tests/brokers.py): the machine's 3.10 or our own 4.3.


def ctl(broker: Broker, *args: str, timeout_s: float = 90, check: bool = True) -> str:
    """``rabbitmqctl -s ARGS`` on ``broker`` (no banners, no table headers); raises with its stderr on failure."""
    return broker.ctl(*args, timeout_s=timeout_s, check=check)


def ensure_broker_running(broker: Broker) -> None:
    """Start the RabbitMQ application if a fault left it stopped (our own node), wait until it is booted."""
    broker.ensure_running()


def ensure_all_brokers_running(brokers: Iterable[Broker] = BROKERS) -> None:
    """After the faults: every node the harness may have stopped (the owned ones) is running again (a private
    twin, started for one scenario, is stopped again by it, entirely)."""
    for broker in brokers:
        node = OWNED_TWIN[broker.name]
        if node is broker:
            broker.ensure_running()


def foreign_connections(broker: Broker, own_vhost: str) -> list[str]:
    lines = ctl(broker, "list_connections", "vhost", "name", check=False).splitlines()
    return [line for line in lines if line.strip() and line.split("\t", 1)[0] != own_vhost]


def wait_for_quiet_broker(broker: Broker, own_vhost: str, timeout_s: float) -> list[str]:
    """Before stopping the broker, give other clients (another test run?) a bounded chance to finish."""
    deadline = time.monotonic() + timeout_s
    others = foreign_connections(broker, own_vhost)
    while others and time.monotonic() < deadline:
        time.sleep(1)
        others = foreign_connections(broker, own_vhost)
    return others


@contextlib.contextmanager
def broker_stopped(broker: Broker) -> Iterator[None]:
    """``rabbitmqctl stop_app`` for the body; always ``start_app`` + ``await_startup`` afterwards.

    Only on a node the project owns (the 4.3 chroot node): the machine's shared 3.10 is never stopped.
    """
    if not broker.owned:
        raise ValueError(f"{broker.name} is the machine's shared node: the harness never stops it")
    try:
        ctl(broker, "stop_app", timeout_s=120)
        yield
    finally:
        ensure_broker_running(broker)


@contextlib.contextmanager
def fresh_vhost(broker: Broker, prefix: str = "sendpipe-rel") -> Iterator[str]:
    """A vhost of its own on ``broker`` (the SPEC names are fixed); yields its AMQP URL, deletes it afterwards."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    broker.add_vhost(name)  # with guest's permissions, one ctl call
    try:
        yield broker.url_for(name)
    finally:
        with contextlib.suppress(Exception):
            ensure_broker_running(broker)
        ctl(broker, "delete_vhost", name, check=False)


def vhost_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def queue_totals(url: str) -> dict[str, tuple[int, int]]:
    """Every queue of the vhost (on the broker the URL points at): (messages ready + unacked, unacked)."""
    out: dict[str, tuple[int, int]] = {}
    listing = ctl(broker_of(url), "list_queues", "-p", vhost_of(url), "name", "messages", "messages_unacknowledged")
    for line in listing.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            out[parts[0]] = (int(parts[1]), int(parts[2]))
    return out


async def connect(url: str, timeout_s: float = 90) -> AbstractConnection:
    """Connect, retrying while the broker is away (a fault may just have been cleared)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await aio_pika.connect(url, timeout=5)
        except (TimeoutError, OSError, aio_pika.exceptions.AMQPException) as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"cannot connect to {url} within {timeout_s}s: {exc!r}") from exc
            await asyncio.sleep(0.5)


async def ready_count(channel: AbstractChannel, queue: str) -> int:
    declared = await channel.declare_queue(queue, passive=True)
    return int(declared.declaration_result.message_count or 0)


# -- the lab: one PKI, deployments on disk --------------------------------------------------------


@dataclass
class Lab:
    """One test PKI (group signer, partner) and a directory for deployments and logs."""

    workdir: Path
    pki: TestPKI
    signer: Issued
    partner: Issued

    @classmethod
    def create(cls, workdir: Path) -> Lab:
        """As ``tests/conftest.py`` makes them (same CNs, usages and key slots)."""
        pki = TestPKI(workdir / "pki")
        signer = pki.issue("sendpipe signer RSA-2048", key_type="rsa2048", usage="sign", key_slot="signer")
        partner = pki.issue("Fabrikam partner", key_type="rsa2048", usage="encrypt", key_slot="partner")
        return cls(workdir, pki, signer, partner)

    def deployment(self, name: str, *, retry_count: int = 30, retry_interval_s: float = 1.0) -> Any:
        """Like the ``deployment`` fixture, plus the send port ``Reliability`` (generous retries)."""
        root = self.workdir / name
        root.mkdir(parents=True, exist_ok=False)
        dep = Deployment(
            root,
            self.pki,
            self.signer,
            self.partner,
            self.partner.write_key_pem(root / "partner.key"),
            self.partner.write_cert_pem(root / "partner.pem"),
        )
        write_personal_pfx(dep.store_root, "svc-a", "group-signing", self.signer, STORE_PASSWORD.encode())
        write_personal_pem(dep.store_root, "svc-b", "group-signing", self.signer)
        for account in ("svc-a", "svc-b", "svc-c"):
            write_other_people(dep.store_root, account, "fabrikam", self.partner)
        dep.write_config(extra=reliability_port(self.partner.thumbprint, retry_count, retry_interval_s))
        return dep

    def needles(self, *extra_passwords: str) -> Needles:
        return Needles.build(
            passwords=[STORE_PASSWORD, *extra_passwords],
            keys=[self.signer.key, self.partner.key, self.pki.ca.key],
            markers=[MARKER],
        )


def reliability_port(partner_thumbprint: str, retry_count: int, retry_interval_s: float) -> str:
    return f"""
[send_ports.{PORT}]
host = "{HOST}"
pipeline = "SignAndEncrypt"
encryption_thumbprint = "{partner_thumbprint}"
delivery_key = "{DELIVERY_KEY}"
retry_count = {retry_count}
retry_interval_s = {retry_interval_s}
"""


def payload_for(message_id: str) -> bytes:
    """The body of a harness message: the marker, its id, and binary filler (deterministic per id)."""
    digest = hashlib.sha256(message_id.encode()).digest()
    return MARKER + message_id.encode() + b"|\x00\r\n" + digest * (1 + digest[0] % 48)


def worker_env(dep: Any, url: str, account: str, **extra: str) -> dict[str, str]:
    """The broker tests' env (short publish timeout, reconnect capped at 2 s) plus ours; '' removes a key."""
    env: dict[str, str] = dep.env(url, account)
    env.update(
        SENDPIPE_PREFETCH_COUNT="8",
        SENDPIPE_DRAIN_TIMEOUT_S="10",
        SENDPIPE_RELOAD_INTERVAL_S="0.5",
    )
    for key, value in extra.items():
        if value == "":
            env.pop(key, None)
        else:
            env[key] = value
    return env


# -- worker processes and their logs -------------------------------------------------------------


def event_time(event: dict[str, Any]) -> float:
    """A log line's timestamp (structlog ISO UTC) as epoch seconds."""
    return dt.datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


class LogTail:
    """Reads a JSON-lines log incrementally; a line that is not JSON is kept aside (a finding)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.events: list[dict[str, Any]] = []
        self.bad_lines: list[str] = []
        self._offset = 0
        self._partial = b""

    def poll(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return self.events
        self._offset += len(chunk)
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        for raw in lines:
            if not raw.strip():
                continue
            try:
                parsed = json.loads(raw)
            except ValueError:
                self.bad_lines.append(raw[:300].decode("utf-8", "replace"))
                continue
            if isinstance(parsed, dict):
                self.events.append(parsed)
            else:
                self.bad_lines.append(raw[:300].decode("utf-8", "replace"))
        return self.events

    @property
    def unterminated(self) -> bytes:
        """A last line without its newline (what a SIGKILL can leave behind)."""
        return self._partial

    def named(self, name: str, after: float | None = None) -> list[dict[str, Any]]:
        self.poll()
        return [e for e in self.events if e.get("event") == name and (after is None or event_time(e) > after)]


class Instance:
    """One `sendpipe run` process (an incarnation of a host instance slot) with its log."""

    def __init__(self, label: str, account: str, env: dict[str, str], log_path: Path) -> None:
        self.label = label
        self.account = account
        self.env = env
        self.worker = Worker(env, log_path)
        self.tail = LogTail(log_path)
        self.killed = False  # by SIGKILL: a cut last log line is forgiven
        self.exit_code: int | None = None

    @property
    def log_path(self) -> Path:
        path: Path = self.worker.log_path
        return path

    def start(self) -> Instance:
        self.worker.start()
        return self

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        proc: subprocess.Popen[bytes] | None = self.worker.proc
        assert proc is not None, f"{self.label} was never started"
        return proc

    @property
    def alive(self) -> bool:
        return self.worker.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        self.killed = True
        self.proc.send_signal(signal.SIGKILL)
        self.exit_code = self.proc.wait(timeout=10)

    def term(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    async def wait_exit(self, timeout_s: float) -> int | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                self.exit_code = code
                return code
            await asyncio.sleep(0.05)
        return None

    async def wait_for(
        self, event: str, *, count: int = 1, after: float | None = None, timeout_s: float = 30
    ) -> dict[str, Any]:
        """The ``count``-th ``event`` logged after ``after`` (epoch s); fails early if the process died."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.tail.named(event, after)
            if len(found) >= count:
                return found[count - 1]
            if not self.alive and event != "instance.stopped":
                tail = [e.get("event") for e in self.tail.events[-6:]]
                raise AssertionError(f"{self.label} exited ({self.proc.poll()}) before {event}; last events {tail}")
            if time.monotonic() > deadline:
                tail = [e.get("event") for e in self.tail.events[-6:]]
                raise AssertionError(f"{self.label}: no {count}x {event} within {timeout_s}s; last events {tail}")
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        self.worker.stop()


# -- secrets in logs ------------------------------------------------------------------------------


def _b64_inner(data: bytes) -> list[bytes]:
    """Base64 of ``data`` at each of the three alignments, cut to the characters only ``data`` decides."""
    out = []
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + data)
        out.append(encoded[4:-4])
    return out


@dataclass(frozen=True)
class Needles:
    """Byte strings that must not occur in any log: payload markers, passwords, private key material."""

    items: tuple[tuple[str, bytes], ...] = field(default_factory=tuple)

    @classmethod
    def build(cls, *, passwords: Iterable[str], keys: Iterable[PrivateKey], markers: Iterable[bytes]) -> Needles:
        items: list[tuple[str, bytes]] = [("PEM private key block", b"PRIVATE KEY-----")]
        for password in passwords:
            items.append(("store password", password.encode()))
            items.append(("store password (JSON-escaped)", json.dumps(password)[1:-1].encode()))
            items.append(("store password (repr-escaped)", password.encode("unicode_escape")))
        for i, key in enumerate(keys):
            traditional = (
                serialization.PrivateFormat.TraditionalOpenSSL
                if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
                else serialization.PrivateFormat.PKCS8
            )
            for fmt_name, fmt in (("PKCS#8", serialization.PrivateFormat.PKCS8), ("traditional", traditional)):
                der = key.private_bytes(serialization.Encoding.DER, fmt, serialization.NoEncryption())
                b64 = base64.b64encode(der)
                # 48 characters from inside the third PEM line: found in a PEM block, a JSON string or raw base64.
                items.append((f"key {i} {fmt_name} DER, base64", b64[128:176]))
                items.append((f"key {i} {fmt_name} DER, hex", der[64:96].hex().encode()))
                items.append((f"key {i} {fmt_name} DER, hex (upper)", der[64:96].hex().upper().encode()))
                items.append((f"key {i} {fmt_name} DER, raw", der[64:96]))
        for marker in markers:
            items.append(("payload marker", marker))
            items.append(("payload marker (JSON-escaped)", json.dumps(marker.decode("latin-1"))[1:-1].encode()))
            items.extend(("payload marker, base64", inner) for inner in _b64_inner(marker))
            items.append(("payload marker, hex", marker.hex().encode()))
        return cls(tuple(items))

    def scan(self, paths: Iterable[Path]) -> list[str]:
        """``file:line: what`` for every needle found, at most a few per file."""
        findings: list[str] = []
        for path in paths:
            try:
                data = path.read_bytes()
            except OSError:
                continue
            hits = 0
            for number, line in enumerate(data.split(b"\n"), 1):
                for label, needle in self.items:
                    if needle and needle in line:
                        findings.append(f"{path.name}:{number}: {label}")
                        hits += 1
                if hits >= 5:
                    findings.append(f"{path.name}: (more findings cut)")
                    break
        return findings


def log_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.log") if p.is_file())


# -- a producer and a partner ---------------------------------------------------------------------


@dataclass
class Publisher:
    """Publishes numbered messages at ``rate`` per second with confirms (mandatory), reconnecting, until
    ``stop`` is set or ``count`` are out.

    A publish cut off by a connection loss is never repeated (that would be the producer's duplicate):
    its id is *uncertain*; it counts as published if it shows up, and is not lost if it does not.
    """

    url: str
    prefix: str
    count: int
    rate: float
    port: str = PORT
    confirmed: list[str] = field(default_factory=list)
    uncertain: set[str] = field(default_factory=set)
    returned: set[str] = field(default_factory=set)
    nacked: set[str] = field(default_factory=set)
    reconnects: int = 0
    channel_reopens: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)  # set: publish no more

    def ids(self) -> list[str]:
        return [f"{self.prefix}-{i:06d}" for i in range(self.count)]

    async def _connect(self) -> AbstractConnection:
        """A new connection (the cluster scenario's publisher moves on to the next node here)."""
        return await connect(self.url)

    def _lost(self) -> None:
        """The connection was lost (hook: the failover publisher tries the next node first)."""

    def _refused(self) -> None:
        """A publish was nacked or cut off (hook: the cluster scenario records when)."""

    async def run(self) -> None:
        conn: AbstractConnection | None = None
        channel: Any = None
        exchange: Any = None
        started = time.monotonic()
        try:
            for i, mid in enumerate(self.ids()):
                delay = started + i / self.rate - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), delay)
                if self.stop.is_set():
                    break
                while conn is None or conn.is_closed or exchange is None:
                    if conn is None or conn.is_closed:
                        if conn is not None:
                            self.reconnects += 1
                            self._lost()
                        conn = await self._connect()
                    try:
                        channel = await conn.channel(publisher_confirms=True)
                        exchange = await channel.get_exchange("sendpipe.outbound", ensure=False)
                    except (TimeoutError, OSError, aio_pika.exceptions.AMQPException, RuntimeError):
                        exchange = None
                        with contextlib.suppress(Exception):
                            await conn.close()
                message = aio_pika.Message(
                    payload_for(mid),
                    message_id=mid,
                    correlation_id=f"corr-{mid}",
                    content_type="application/edi-x12",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    headers={"x-harness": self.prefix},
                )
                try:
                    await exchange.publish(message, routing_key=self.port, mandatory=True, timeout=10)
                except aio_pika.exceptions.PublishError:
                    self.returned.add(mid)  # returned unroutable: definitely not enqueued
                except aio_pika.exceptions.DeliveryError:
                    self.nacked.add(mid)  # refused by the broker (e.g. a queue not up yet after a restart)
                    self._refused()
                    # RabbitMQ 3.10: a channel whose first publish to a quorum queue falls into the queue's
                    # leader election nacks every later publish to it (docs/reliability.md): a new channel.
                    self.channel_reopens += 1
                    with contextlib.suppress(Exception):
                        await channel.close()
                    exchange = None
                except (TimeoutError, OSError, aio_pika.exceptions.AMQPException, RuntimeError):
                    self.uncertain.add(mid)
                    self._refused()
                    with contextlib.suppress(Exception):
                        await conn.close()
                else:
                    self.confirmed.append(mid)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()


@dataclass(frozen=True)
class Seen:
    """A message taken off the capture or suspended queue."""

    message_id: str | None
    content_type: str | None
    body: bytes
    headers: dict[str, Any]

    @classmethod
    def of(cls, msg: AbstractIncomingMessage) -> Seen:
        return cls(msg.message_id, msg.content_type, msg.body, dict(msg.headers or {}))


async def drain_queue(channel: AbstractChannel, queue: str, into: list[Seen], limit: int = 100_000) -> int:
    """Take everything that is ready (acked on receipt); returns how many were taken."""
    q = await channel.get_queue(queue, ensure=False)
    taken = 0
    while taken < limit:
        msg = await q.get(no_ack=True, fail=False)
        if msg is None:
            break
        into.append(Seen.of(msg))
        taken += 1
    return taken


def run_sendpipe(env: dict[str, str], *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SENDPIPE, *args], env=env, capture_output=True, text=True, timeout=timeout_s, check=False)


def now() -> float:
    return time.time()
