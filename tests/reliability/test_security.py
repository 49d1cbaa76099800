"""Security checks: fail closed, no secrets in logs, loose key files refused, one account's store only,
the store password from settings or secrets only, AMQP over TLS with a CA file.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from brokerkit import SENDPIPE, STORE_PASSWORD
from brokers import Broker
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pki import Issued, TestPKI, write_crl, write_other_people, write_personal_pem
from pydantic import SecretStr

from worker.errors import SendpipeError
from worker.identity.store import CertificateStore
from worker.message import Message
from worker.pipeline.catalogue import load_config
from worker.pipeline.runtime import Runtime
from worker.pipeline.stage import Pipeline

from .lab import (
    HOST_QUEUE,
    MARKER,
    SUSPENDED_QUEUE,
    Instance,
    Lab,
    Needles,
    Seen,
    ctl,
    drain_queue,
    log_files,
    run_sendpipe,
    unwrap,
)

SECRET = MARKER + b"security"


async def _capture(client: Any) -> str:
    queue = await client.capture("#")
    return str(queue.name)


async def _collect(client: Any, queue: str, count: int, timeout_s: float = 30) -> list[Seen]:
    got: list[Seen] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        await drain_queue(client.channel, queue, got)
        await asyncio.sleep(0.1)
    return got


def _instance(workers: Any, env: dict[str, str], label: str) -> Instance:
    worker = workers(env)
    inst = Instance(label, env["SENDPIPE_SERVICE_ACCOUNT"], env, worker.log_path)
    inst.worker = worker
    return inst


# -- fail closed --------------------------------------------------------------------------------


def _port(name: str, thumbprint: str, pipeline: str = "SignAndEncrypt") -> str:
    return f"""
[send_ports.{name}]
host = "SendHost"
pipeline = "{pipeline}"
encryption_thumbprint = "{thumbprint}"
delivery_key = "failclosed.{name.lower()}"
retry_count = 1
retry_interval_s = 0.5
"""


async def test_fail_closed_when_encryption_cannot_happen(
    vhost: str, deployment: Any, workers: Any, client: Any, pki: TestPKI
) -> None:
    """Every way the partner's certificate can be unusable: suspended with its code, nothing delivered."""
    now = dt.datetime.now(dt.UTC)
    stores = deployment.store_root
    bad = {
        "Expired": pki.issue(
            "expired partner",
            usage="encrypt",
            key_slot="partner",
            not_before=now - dt.timedelta(30),
            not_after=now - dt.timedelta(1),
        ),
        "NotYetValid": pki.issue(
            "future partner",
            usage="encrypt",
            key_slot="partner",
            not_before=now + dt.timedelta(1),
            not_after=now + dt.timedelta(30),
        ),
        "WrongUsage": pki.issue("signing-only partner", usage="wrong", key_slot="partner"),
        # P-256 and P-384 partners are written to with ECDH (RFC 5753); P-521 is not a curve sendpipe uses.
        "EcPartner": pki.issue("EC P-521 partner", usage="encrypt", key=ec.generate_private_key(ec.SECP521R1())),
        "Revoked": pki.issue("revoked partner", usage="encrypt", key_slot="partner"),
    }
    for name, issued in bad.items():
        write_other_people(stores, "svc-a", name.lower(), issued)
    missing = pki.issue("never installed", usage="encrypt", key_slot="partner")
    write_crl(stores, "svc-a", "root", pki.crl([bad["Revoked"].serial]))
    extra = """
[pipelines.CrlChecked]
encode = [ { component = "mime_smime_encoder", signature_type = "BlobSign", enable_encryption = true,
             check_revocation_list = true } ]

[pipelines.EncryptOnly]
encode = [ { component = "mime_smime_encoder", enable_encryption = true } ]
"""
    extra += "".join(
        _port(n, i.thumbprint, "CrlChecked" if n == "Revoked" else "SignAndEncrypt") for n, i in bad.items()
    )
    extra += _port("Missing", missing.thumbprint) + _port("MissingEncryptOnly", missing.thumbprint, "EncryptOnly")
    deployment.write_config(extra)
    expect = {
        "Expired": "encryption-cert-expired",
        "NotYetValid": "encryption-cert-not-yet-valid",
        "WrongUsage": "encryption-cert-key-usage",
        "EcPartner": "algorithm-not-supported",
        "Revoked": "cert-revoked",
        "Missing": "encryption-cert-not-found",
        "MissingEncryptOnly": "encryption-cert-not-found",
        "Ghost": "encryption-cert-not-found",  # the fixtures' port whose certificate no store holds
    }
    capture = await _capture(client)
    inst = _instance(workers, deployment.env(vhost, "svc-a"), "svc-a")
    await inst.wait_for("consumer.started")
    for port in expect:
        for i in range(3):
            await client.publish(port, SECRET + f"{port}-{i}".encode(), message_id=f"{port}-{i}")
    suspended = await _collect(client, SUSPENDED_QUEUE, 3 * len(expect))
    codes = {m.message_id: m.headers.get("sendpipe-error-code") for m in suspended}
    assert codes == {f"{p}-{i}": c for p, c in expect.items() for i in range(3)}
    await asyncio.sleep(0.5)
    assert await client.count(capture) == 0, "something reached sendpipe.delivery"
    assert all(m.body.startswith(SECRET) for m in suspended), "a suspended body was altered"
    assert inst.alive


def test_a_pipeline_that_promises_encryption_never_returns_a_clear_message() -> None:
    """The pipeline's last guard: a component that 'forgot' to encrypt fails the message (encode stage)."""

    class Forgetful:
        name = "forgetful"

        def process(self, message: Message) -> Message:
            return message.evolve(body=b"MIME-Version: 1.0\r\n\r\n" + message.body)

    pipeline = Pipeline("SignAndEncrypt", (("encode", Forgetful()),), encrypts=True)
    with pytest.raises(SendpipeError) as err:
        pipeline.run(Message(body=SECRET, message_id="m", send_port="Orders"))
    assert err.value.code == "encryption-not-applied" and err.value.stage == "encode"


# -- secrets in logs ------------------------------------------------------------------------------


async def test_no_payload_in_logs_even_at_debug_level(
    vhost: str, deployment: Any, workers: Any, client: Any, reliability_lab: Lab
) -> None:
    await _capture(client)
    env = deployment.env(vhost, "svc-a", SENDPIPE_LOG_LEVEL="debug")
    inst = _instance(workers, env, "svc-a-debug")
    await inst.wait_for("consumer.started")
    await client.publish("Orders", SECRET + b"-delivered", message_id="dbg-1")
    await client.publish("Ghost", SECRET + b"-suspended", message_id="dbg-2")
    await inst.wait_for("message.suspended")
    await inst.wait_for("message.delivered")
    assert any(e.get("logger") for e in inst.tail.poll()), "no library lines at all: is debug on?"
    leaks = reliability_lab.needles().scan([inst.log_path])
    assert not leaks, leaks  # aiormq logged every frame (payload included) at debug until c765fb0


async def test_no_secret_in_logs_of_failures_and_refusals(
    vhost: str, deployment: Any, workers: Any, client: Any, reliability_lab: Lab
) -> None:
    """Messages that fail in every way (with payload markers), a wrong password, a bad URL: logs stay clean."""
    await _capture(client)
    inst = _instance(workers, deployment.env(vhost, "svc-a"), "svc-a")
    await inst.wait_for("consumer.started")
    tp = "sendpipe-encryption-thumbprint"
    for i, (port, headers) in enumerate(
        [
            ("Orders", {}),
            ("Ghost", {}),
            ("Orders", {tp: "not-a-thumbprint"}),
            ("Invoices", {tp: "../svc-b/personal/group-signing.pem"}),
        ]
    ):
        await client.publish(port, SECRET + bytes(range(256)), message_id=f"leak-{i}", headers=headers)
    await inst.wait_for("message.suspended", count=3)
    await inst.wait_for("message.delivered")
    wrong = "wrong-pass-Ω-7c1d"
    refused = _instance(workers, deployment.env(vhost, "svc-a", SENDPIPE_STORE_PASSWORD=wrong), "wrong-password")
    assert await refused.wait_exit(30) == 1
    bad_url = "amqp://guest:url-secret-Ω@127.0.0.1:1/nowhere"
    unreachable = _instance(workers, deployment.env(bad_url, "svc-b"), "bad-url")
    await unreachable.wait_for("broker.unavailable")
    needles = Needles.build(passwords=[STORE_PASSWORD, wrong, "url-secret-Ω"], keys=[], markers=[])
    paths = [inst.log_path, refused.log_path, unreachable.log_path]
    findings = reliability_lab.needles().scan(paths) + needles.scan(paths)
    assert not findings, findings
    detail = refused.tail.named("instance.refused")[0]
    assert "SENDPIPE_STORE_PASSWORD" in json.dumps(detail), detail


# -- key files with loose modes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("account", "name", "mode"),
    [
        ("svc-b", "group-signing.pem", 0o644),
        ("svc-b", "group-signing.pem", 0o640),
        ("svc-a", "group-signing.pfx", 0o604),
    ],
)
def test_a_key_file_readable_by_others_is_refused(deployment: Any, account: str, name: str, mode: int) -> None:
    key_file = deployment.store_root / account / "personal" / name
    key_file.chmod(mode)
    env = deployment.env("amqp://guest:guest@127.0.0.1:1/nowhere", account)  # refused before it connects
    done = run_sendpipe(env, "run", timeout_s=30)
    assert done.returncode == 1
    refused = [json.loads(line) for line in done.stdout.splitlines() if "instance.refused" in line]
    assert refused and refused[0]["error_code"] == "key-file-insecure", done.stdout[-500:]
    assert "chmod 600" in refused[0]["error"]
    check = json.loads(run_sendpipe(env, "check", "--json").stdout)
    signing = next(f for f in check["findings"] if f["role"] == "signing")
    assert signing["level"] == "error" and signing["code"] == "key-file-insecure"


async def test_a_key_file_loosened_while_running_stops_signing(
    vhost: str, deployment: Any, workers: Any, client: Any
) -> None:
    """A bare chmod is noticed by the hot reload (until c765fb0 it was not: the stamp was mtime and size):
    messages are suspended, never signed with that key, until the mode is fixed; then resumed."""
    capture = await _capture(client)
    env = deployment.env(vhost, "svc-b", SENDPIPE_RELOAD_INTERVAL_S="0.2")
    inst = _instance(workers, env, "svc-b")
    await inst.wait_for("consumer.started")
    key_file = deployment.store_root / "svc-b" / "personal" / "group-signing.pem"
    t = time.time()
    key_file.chmod(0o644)
    reloaded = await inst.wait_for("store.reloaded", after=t, timeout_s=5)
    assert any("mode 0644" in p for p in reloaded["problems"]), reloaded
    for i in range(3):
        await client.publish("Orders", SECRET + b"%d" % i, message_id=f"loose-{i}")
    await inst.wait_for("message.suspended", count=3)
    listing = await asyncio.to_thread(run_sendpipe, env, "suspended", "list", "--json")
    assert {s["error_code"] for s in json.loads(listing.stdout)} == {"key-file-insecure"}, listing.stdout
    assert await client.count(capture) == 0
    t = time.time()
    key_file.chmod(0o600)
    await inst.wait_for("store.reloaded", after=t, timeout_s=5)
    resumed = await asyncio.to_thread(run_sendpipe, env, "suspended", "resume", "--all")
    assert resumed.returncode == 0, resumed.stderr
    assert len(await _collect(client, capture, 3)) == 3


# -- another account's store ----------------------------------------------------------------------


def _other_partner(pki: TestPKI) -> Issued:
    return pki.issue("partner only svc-b knows", usage="encrypt", key_slot="partner")


def _start_traced(env: dict[str, str], trace: Path, log: Path) -> subprocess.Popen[bytes]:
    """`sendpipe run` under strace: every syscall that names a file (open, stat, readlink, ...), all threads."""
    with log.open("ab") as out:
        return subprocess.Popen(
            ["strace", "-f", "-qq", "-e", "trace=%file,getdents64", "-o", str(trace), SENDPIPE, "run"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _child_of(pid: int) -> int:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    if not children:
        raise ProcessLookupError(f"{pid} has no child")
    return int(children[0])


async def test_an_instance_never_opens_another_accounts_store(
    vhost: str, deployment: Any, client: Any, pki: TestPKI, tmp_path: Path
) -> None:
    """strace every file syscall of a running instance (start, messages, overrides, hot reload)."""
    # Not a skip: `make test` installs strace (scripts/ensure-services.sh); without it this proves nothing.
    assert shutil.which("strace"), "strace is required (scripts/ensure-services.sh installs it)"
    only_b = _other_partner(pki)
    write_other_people(deployment.store_root, "svc-b", "only-b", only_b)
    # Poison: were svc-b's store ever parsed by svc-a's instance, this loose key would be reported.
    write_personal_pem(deployment.store_root, "svc-b", "poison", only_b, mode=0o666)
    await _capture(client)
    env = deployment.env(vhost, "svc-a", SENDPIPE_RELOAD_INTERVAL_S="0.3")
    trace = tmp_path / "strace.out"
    log = tmp_path / "traced.log"
    proc = _start_traced(env, trace, log)
    inst = Instance("traced", "svc-a", env, log)
    inst.worker.proc = proc
    try:
        await inst.wait_for("consumer.started", timeout_s=60)
        tp = "sendpipe-encryption-thumbprint"
        b_store = deployment.store_root / "svc-b"
        for i, override in enumerate(
            [only_b.thumbprint, str(b_store / "personal" / "group-signing.pem"), "../svc-b/other-people/only-b", ""]
        ):
            await client.publish("Orders", b"x", message_id=f"trace-{i}", headers={tp: override} if override else {})
        await inst.wait_for("message.suspended", count=3)
        await inst.wait_for("message.delivered")
        t = time.time()
        (deployment.store_root / "svc-a" / "other-people" / "fabrikam.cer").touch()  # hot reload
        await inst.wait_for("store.reloaded", after=t)
        traced = _child_of(proc.pid)  # SIGTERM to strace would only detach it: stop the instance itself
        os.kill(traced, signal.SIGTERM)
        assert await inst.wait_exit(30) == 0  # strace exits with its tracee's status
    finally:
        with contextlib.suppress(ProcessLookupError, OSError):
            os.kill(_child_of(proc.pid), signal.SIGKILL)
        inst.stop()
    codes = [e.get("error_code") for e in inst.tail.named("message.suspended")]
    assert codes == ["encryption-cert-not-found", "invalid-thumbprint", "invalid-thumbprint"]
    paths = re.findall(r'"([^"]*)"', trace.read_text(errors="replace"))
    root = str(deployment.store_root)
    touched = sorted({p for p in paths if p.startswith(root)})
    assert touched, "strace saw no store access at all: the trace is not working"
    foreign = [p for p in touched if not (p == root or p.startswith(root + "/svc-a"))]
    assert not foreign, f"svc-a's instance touched: {foreign}"
    assert any("svc-a/personal" in p for p in touched)


_recording: list[str] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _recording is not None and event in {"open", "os.listdir", "os.scandir"} and args:
        _recording.append(os.fsdecode(args[0]) if isinstance(args[0], str | bytes | os.PathLike) else str(args[0]))


_hooked = False


@contextlib.contextmanager
def _recorded() -> Iterator[list[str]]:
    global _recording, _hooked  # noqa: PLW0603 - an audit hook cannot be removed; it records only in here
    if not _hooked:
        sys.addaudithook(_audit)
        _hooked = True
    _recording = []
    try:
        yield _recording
    finally:
        _recording = None


def test_store_and_pipelines_read_only_their_own_account(deployment: Any, pki: TestPKI) -> None:
    """In process (audit hooks): opening the store, building and running every pipeline with hostile
    overrides, and reopening it (hot reload) opens files of this account only."""
    only_b = _other_partner(pki)
    write_other_people(deployment.store_root, "svc-b", "only-b", only_b)
    config = load_config(deployment.config)
    b_key = str(deployment.store_root / "svc-b" / "personal" / "group-signing.pem")
    with _recorded() as opened:
        store = CertificateStore.open(deployment.store_root, "svc-a", SecretStr(STORE_PASSWORD))
        runtime = Runtime.build(config, store, "SendHost")
        for override in (only_b.thumbprint, b_key, "../svc-b", None):
            headers = {"sendpipe-encryption-thumbprint": override} if override else {}
            message = Message(body=SECRET, message_id="m", send_port="Orders", headers=headers)
            with contextlib.suppress(SendpipeError):
                runtime.pipelines["Orders"].run(message)
        CertificateStore.open(deployment.store_root, "svc-a", SecretStr(STORE_PASSWORD))
    root = str(deployment.store_root)
    mine = [p for p in opened if p.startswith(root)]
    assert any("/svc-a/personal/" in p for p in mine), opened
    assert all(p.startswith(root + "/svc-a/") for p in mine), mine


def test_a_service_account_name_cannot_point_at_another_store(deployment: Any) -> None:
    names = ["../svc-b", "svc-a/../svc-b", "svc-b/", "/etc", ".", "..", "svc-a\\..\\svc-b", "svc a", "-svc"]
    envs = [deployment.env("amqp://guest:guest@127.0.0.1:5672/", name) for name in names]
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda env: run_sendpipe(env, "check"), envs))
    for name, done in zip(names, runs, strict=True):
        assert done.returncode == 1, name
        assert "[invalid-service-account]" in done.stderr, (name, done.stderr)


# -- the store password -------------------------------------------------------------------------


def _signing_finding(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    report = json.loads(done.stdout)
    finding: dict[str, Any] = next(f for f in report["findings"] if f["role"] == "signing")
    return finding


def test_store_password_from_settings(deployment: Any) -> None:
    env = deployment.env("amqp://guest:guest@127.0.0.1:5672/", "svc-a")
    assert _signing_finding(run_sendpipe(env, "check", "--json"))["level"] == "ok"


def test_store_password_from_nowhere_else(deployment: Any) -> None:
    """Not from look-alike variables, not from the config file; the PKCS#12 then cannot be opened."""
    env = deployment.env("amqp://guest:guest@127.0.0.1:5672/", "svc-a")
    del env["SENDPIPE_STORE_PASSWORD"]
    env.update(STORE_PASSWORD=STORE_PASSWORD, SENDPIPE_PASSWORD=STORE_PASSWORD, PASSWORD=STORE_PASSWORD)
    done = run_sendpipe(env, "check", "--json")
    finding = _signing_finding(done)
    assert finding["level"] == "error", finding
    assert "SENDPIPE_STORE_PASSWORD" in done.stdout
    assert STORE_PASSWORD not in done.stdout + done.stderr
    config = deployment.config.read_text()
    deployment.config.write_text(f'store_password = "{STORE_PASSWORD}"\n' + config)
    done = run_sendpipe(env, "check", "--json")
    assert done.returncode == 1 and "[config-invalid]" in done.stderr and "store_password" in done.stderr
    assert STORE_PASSWORD not in done.stdout + done.stderr


def _can_unshare() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs tmpfs /run"], capture_output=True, timeout=30, check=False
    )
    return probe.returncode == 0


def test_store_password_from_run_secrets(deployment: Any, tmp_path: Path) -> None:
    """Docker secrets: /run/secrets/sendpipe_store_password, in a private mount namespace (the host's /run is
    untouched)."""
    assert _can_unshare(), "needs root and mount namespaces (unshare -m) for a private /run, as CI has"
    env = deployment.env("amqp://guest:guest@127.0.0.1:5672/", "svc-a")
    del env["SENDPIPE_STORE_PASSWORD"]
    secret = tmp_path / "secret"
    secret.write_text(STORE_PASSWORD, encoding="utf-8")
    script = (
        "mount -t tmpfs tmpfs /run && mkdir /run/secrets && "
        f'cp "{secret}" /run/secrets/sendpipe_store_password && exec "{SENDPIPE}" check --json'
    )
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert _signing_finding(done)["level"] == "ok", done.stdout + done.stderr
    assert not Path("/run/secrets/sendpipe_store_password").exists()  # not leaked to the host's /run


# -- AMQP over TLS --------------------------------------------------------------------------------


def _server_cert(pki: TestPKI, name: str) -> Issued:
    key = pki.keys.get("rsa2048", "tls-server")
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(pki.ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(pki.ca.key, hashes.SHA256())
    )
    return Issued(cert, key)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def tls_listener(pki: TestPKI, broker: Broker) -> Iterator[int]:
    """A TLS listener on the test's broker, started at runtime (rabbitmqctl eval) and always stopped again:
    no rabbitmq.conf change, no restart (a broker restart would drop it anyway)."""
    server = _server_cert(pki, "localhost")
    cert = base64.b64encode(server.cert_der()).decode()
    key = base64.b64encode(
        server.key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    ).decode()
    port = _free_port()
    where = f'{{"127.0.0.1", {port}}}'
    ctl(
        broker,
        "eval",
        "{ok, _} = application:ensure_all_started(ssl), "
        f"ok = rabbit_networking:start_ssl_listener({where}, "
        f'[{{cert, base64:decode("{cert}")}}, {{key, {{\'RSAPrivateKey\', base64:decode("{key}")}}}}, '
        "{verify, verify_none}, {fail_if_no_peer_cert, false}], 1, 1).",
    )
    try:
        yield port
    finally:
        ctl(broker, "eval", f"rabbit_networking:stop_tcp_listener({where}).", check=False)


async def test_amqp_over_tls_with_a_ca_file(
    broker: Broker,
    tls_listener: int,
    vhost: str,
    deployment: Any,
    workers: Any,
    client: Any,
    pki: TestPKI,
    tmp_path: Path,
) -> None:
    vh = vhost.rsplit("/", 1)[1]
    ca_file = str(deployment.pki.ca_pem)
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(pki.second_ca().cert_pem())
    good = f"amqps://guest:guest@localhost:{tls_listener}/{vh}"
    ip = f"amqps://guest:guest@127.0.0.1:{tls_listener}/{vh}"  # the certificate names localhost only
    refused = {
        "no-ca-file": deployment.env(good, "svc-b"),
        "other-ca": deployment.env(good, "svc-b", SENDPIPE_AMQP_CA_FILE=str(other_ca)),
        "wrong-host": deployment.env(ip, "svc-b", SENDPIPE_AMQP_CA_FILE=ca_file),
    }
    bad = {name: _instance(workers, env, name) for name, env in refused.items()}
    inst = _instance(workers, deployment.env(good, "svc-a", SENDPIPE_AMQP_CA_FILE=ca_file), "tls")
    await inst.wait_for("consumer.started")
    capture = await _capture(client)
    await client.publish("Orders", SECRET + b"tls", message_id="tls-1")
    (msg,) = await _collect(client, capture, 1)
    got = unwrap(
        msg.body,
        tmp_path / "tls",
        ca_pem=deployment.pki.ca_pem,
        recip_cert=deployment.partner_cert,
        recip_key=deployment.partner_key,
    )
    assert got.payload == SECRET + b"tls"
    connections = ctl(broker, "list_connections", "-p", vh, "name", "ssl", "ssl_protocol")
    assert re.search(r"\ttrue\ttlsv1\.[23]", connections), connections
    for name, failed in bad.items():
        await failed.wait_for("broker.unavailable", count=2)
        assert not failed.tail.named("consumer.started"), f"{name}: connected without a verified server"
    assert await client.count(HOST_QUEUE) == 0


# -- all logs of the run --------------------------------------------------------------------------


def test_no_secret_in_any_log_of_this_run(tmp_path_factory: pytest.TempPathFactory, reliability_lab: Lab) -> None:
    """Last: every worker log this pytest session wrote so far (other suites' too) is scanned."""
    logs = log_files(tmp_path_factory.getbasetemp())
    assert logs, "no logs found: is the scan looking in the right place?"
    needles = reliability_lab.needles()
    broker_marker = Needles.build(passwords=[], keys=[], markers=[b"PAYLOAD-MARKER-7f3a"])  # tests/broker's
    findings = needles.scan(logs) + broker_marker.scan(logs)
    assert not findings, findings
    print(f"\nscanned {len(logs)} log files, {sum(p.stat().st_size for p in logs)} bytes: clean")
