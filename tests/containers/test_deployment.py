"""docker-compose.yml and the Dockerfile for real (issue 14): a private Docker engine, the image built, the
deployment up; isolation, OpenSSL-verified deliveries, --scale, SIGTERM drain under load, broker loss."""

from __future__ import annotations

import asyncio
import os
import re
import stat
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest
from brokerkit import Client
from containers.deployment import (
    ACCOUNT,
    AMQP_URL,
    MAILBOX,
    PARTNER,
    PORTS,
    REPO,
    UID,
    WORKERS,
    Deployment,
    timed,
    wait_until,
)

from worker.demo.partner import unwrap

pytestmark = pytest.mark.timeout(900)  # the first test also sets the engine up (from nothing: minutes)


@pytest.fixture
async def client(deployment: Deployment) -> AsyncIterator[Client]:
    conn = await aio_pika.connect(AMQP_URL)
    channel = await conn.channel()
    for queue in MAILBOX.values():  # each test counts only its own deliveries
        await (await channel.get_queue(queue)).purge()
    yield Client(conn, channel)
    await conn.close()


def _payload(port: str, i: int, size: int = 0) -> bytes:
    head = f"<order port='{port}' n='{i}' id='{uuid.uuid4()}'/>\n".encode()
    return head + os.urandom(size // 2).hex().encode() if size else head


def _verify(dep: Deployment, port: str, entity: bytes, expected: bytes, work: Path) -> None:
    """What the partner does, with the openssl CLI: decrypt with its key, verify against the demo CA."""
    partner = PARTNER[port]
    keys = {"recip_cert": dep.demo / f"partners/{partner}.pem", "recip_key": dep.demo / f"partners/{partner}.key"}
    got = unwrap(entity, work, ca_pem=dep.demo / "ca/ca.pem", **(keys if partner else {}))
    assert got.payload == expected
    assert {"signed-data", "multipart/signed"} & set(got.layers) and got.signer_thumbprint
    assert ("enveloped-data" in got.layers) == (partner is not None)


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - http://127.0.0.1 only
        return int(resp.status), resp.read().decode()


async def _publish(client: Client, port: str, payloads: list[bytes]) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in payloads]
    for mid, body in zip(ids, payloads, strict=True):
        await client.publish(port, body, message_id=mid)
    return ids


def test_demo_init_wrote_the_demo_as_the_uid_the_readme_gives(deployment: Deployment) -> None:
    demo = deployment.demo
    files = [p for p in demo.rglob("*") if p.is_file()]
    assert {p.stat().st_uid for p in [demo, *files]} == {UID}  # written by the container user, not root
    keys = [p for p in files if p.suffix in {".pfx", ".key"} or p.parent.name == "secrets"]
    assert keys and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in keys)
    assert sorted(p.name for p in (demo / "stores").iterdir()) == ["svc-biztalk-a", "svc-biztalk-b"]
    # Paths as the host sees them (./demo/..., demo/...), never the container's /demo/...
    assert "demo/partners/fabrikam.key" in deployment.init_output
    assert not re.search(r"(?<![\w.])/demo/", deployment.init_output), deployment.init_output
    again = deployment.compose("run", "--rm", "demo-init")  # a later `up` keeps the existing demo
    assert again.returncode == 0 and (demo / "ca/ca.pem").stat().st_uid == UID


def test_every_service_healthy_and_the_one_shots_succeeded(deployment: Deployment) -> None:
    for svc in ("demo-init", "partner-mailbox"):
        (cid,) = deployment.containers(svc, running_only=False)
        assert deployment.inspect(cid)["State"]["ExitCode"] == 0, svc
    for svc in WORKERS:
        (cid,) = deployment.containers(svc)
        assert deployment.health(cid) == "healthy", svc
        assert deployment.exec(cid, "sendpipe", "health", "--live").returncode == 0
    for port in (PORTS["CT_METRICS_B"], PORTS["CT_METRICS_AUDIT"]):
        assert _get(f"http://127.0.0.1:{port}/readyz")[0] == 200


@pytest.mark.parametrize("service", WORKERS)
def test_check_in_a_container(deployment: Deployment, service: str) -> None:
    done = deployment.compose("run", "--rm", "--no-deps", service, "check", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "signing" in done.stdout.lower() and ACCOUNT[service] in done.stdout + done.stderr


@pytest.mark.parametrize("service", WORKERS)
def test_isolation(deployment: Deployment, service: str) -> None:
    (cid,) = deployment.containers(service)
    info = deployment.inspect(cid)
    host = info["HostConfig"]
    assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert "no-new-privileges:true" in host["SecurityOpt"] and host["Privileged"] is False
    assert info["Config"]["User"] == f"{UID}:{UID}"
    assert deployment.exec(cid, "id", "-u").stdout.strip() == str(UID)
    status = deployment.exec(cid, "cat", "/proc/1/status").stdout
    caps = {line.split(":")[0]: line.split()[1] for line in status.splitlines() if line.startswith("Cap")}
    assert caps["CapEff"] == caps["CapPrm"] == caps["CapBnd"] == "0000000000000000", caps
    # Only its own account's store exists in the container; the other account's is not there at all.
    assert deployment.exec(cid, "ls", "/stores").stdout.split() == [ACCOUNT[service]]
    other = "svc-biztalk-b" if ACCOUNT[service] == "svc-biztalk-a" else "svc-biztalk-a"
    assert deployment.exec(cid, "ls", f"/stores/{other}", check=False).returncode != 0
    for path in ("/probe", "/stores/probe", f"/stores/{ACCOUNT[service]}/personal/probe", "/config/probe"):
        denied = deployment.exec(cid, "touch", path, check=False)
        assert denied.returncode != 0 and "Read-only file system" in denied.stderr, path
    assert deployment.exec(cid, "touch", "/tmp/probe").returncode == 0  # the tmpfs for the heartbeat


async def test_deliveries_open_with_openssl_byte_for_byte(deployment: Deployment, client: Client,
                                                          tmp_path: Path) -> None:  # fmt: skip
    sent: dict[str, dict[str, bytes]] = {}
    for port in MAILBOX:
        payloads = [_payload(port, i, size=200_000 if i == 0 else 0) for i in range(3)]
        sent[port] = dict(zip(await _publish(client, port, payloads), payloads, strict=True))
    for port, queue in MAILBOX.items():
        for msg in await client.drain(queue, len(sent[port]), timeout_s=60):
            assert msg.headers["sendpipe-send-port"] == port and msg.message_id in sent[port]
            _verify(deployment, port, msg.body, sent[port][msg.message_id], tmp_path / str(msg.message_id))
    assert await client.count("sendpipe.suspended.SendHost") == 0
    assert await client.count("sendpipe.suspended.AuditHost") == 0
    # The producer's own tool, as the README's step says: lands in the partner's mailbox.
    (tmp_path / "some.xml").write_bytes(b"<some/>")
    deployment.host_cli("send", "--port", "FabrikamOrders", str(tmp_path / "some.xml"))
    (msg,) = await client.drain("demo.partner.fabrikam", 1, timeout_s=30)
    _verify(deployment, "FabrikamOrders", msg.body, b"<some/>", tmp_path / "cli")
    # The AuditHost instance's counters (it serves /metrics) match what it delivered.
    metrics_url = f"http://127.0.0.1:{PORTS['CT_METRICS_AUDIT']}/metrics"
    _, text = await asyncio.to_thread(_get, metrics_url)
    line = next(x for x in text.splitlines() if x.startswith("sendpipe_messages_total{") and "delivered" in x)
    assert 'send_port="AuditCopy"' in line and float(line.rsplit(" ", 1)[1]) == 3


async def test_scale_one_host(deployment: Deployment, client: Client) -> None:
    t0 = time.monotonic()
    deployment.compose("up", "-d", "--no-recreate", "--scale", "sendhost-a=3")
    deployment.wait_healthy(["sendhost-a", "sendhost-b"], timeout_s=90, count={"sendhost-a": 3})
    timed("--scale sendhost-a=3 until healthy", t0)
    names = {e["host_instance"] for svc in ("sendhost-a", "sendhost-b") for c in deployment.containers(svc)
             for e in deployment.log_events(c, "consumer.started")[-1:]}  # fmt: skip
    assert len(names) == 4  # one host network, one hostname, pid 1 each: still four names
    ids = set(await _publish(client, "FabrikamOrders", [_payload("FabrikamOrders", i) for i in range(40)]))
    got = await client.drain("demo.partner.fabrikam", 40, timeout_s=60)
    assert {m.message_id for m in got} == ids
    by = {str(m.headers["sendpipe-host-instance"]) for m in got}
    assert by == names  # every SendHost instance, whichever account, took its share


async def test_sigterm_drains_under_load_and_nothing_is_lost(deployment: Deployment, client: Client) -> None:
    n = 400
    payloads = [_payload("FabrikamOrders", i, size=150_000) for i in range(n)]
    ids = asyncio.create_task(_publish(client, "FabrikamOrders", payloads))
    await asyncio.sleep(1.0)  # under way: messages in flight while the instances are told to stop
    t0 = time.monotonic()
    stopping = await asyncio.to_thread(deployment.compose, "stop", "sendhost-a", "sendhost-b", timeout_s=120)
    timed("SIGTERM drain (compose stop of 4 instances)", t0)
    assert stopping.returncode == 0
    sent = set(await ids)
    assert await client.count("sendpipe.host.SendHost") > 0  # stopped under load: work was still queued
    for svc in ("sendhost-a", "sendhost-b"):
        for cid in deployment.containers(svc, running_only=False):
            state = deployment.inspect(cid)["State"]
            assert state["Status"] == "exited" and state["ExitCode"] == 0, (svc, state)  # drained, exit 0
            assert deployment.log_events(cid, "consumer.drained"), (svc, cid)  # the drain ran, bounded
    deployment.compose("start", "sendhost-a", "sendhost-b")
    got = await client.drain("demo.partner.fabrikam", n, timeout_s=180)
    delivered = {str(m.message_id) for m in got}
    suspended = await client.count("sendpipe.suspended.SendHost")
    assert len(delivered) == len(got) and delivered == sent  # each one delivered, once
    assert len(delivered) + suspended == n and suspended == 0  # count in == delivered + suspended
    await asyncio.sleep(1.0)
    assert await client.count("demo.partner.fabrikam") == 0  # and nothing delivered twice


async def test_broker_loss_and_recovery(deployment: Deployment, tmp_path: Path) -> None:
    deployment.wait_healthy(["sendhost-a", "sendhost-b", "audithost"], timeout_s=90, count={"sendhost-a": 3})
    (b,) = deployment.containers("sendhost-b")
    (rabbit,) = deployment.containers("rabbitmq")
    t0 = time.monotonic()
    deployment.compose("stop", "rabbitmq")

    def ready() -> bool:
        return deployment.exec(b, "sendpipe", "health", "--ready", check=False).returncode == 0

    wait_until("readiness drops with the broker gone", lambda: not ready(), timeout_s=30)
    assert deployment.exec(b, "sendpipe", "health", "--live").returncode == 0  # alive all along
    wait_until("docker sees sendhost-b unhealthy", lambda: deployment.health(b) == "unhealthy", timeout_s=60)
    timed("broker stopped until a worker is unhealthy", t0)
    assert all(deployment.inspect(c)["State"]["Running"] for c in deployment.containers("sendhost-a"))
    t1 = time.monotonic()
    deployment.compose("start", "rabbitmq")
    assert deployment.containers("rabbitmq") == [rabbit]
    deployment.wait_healthy(["rabbitmq", "sendhost-a", "sendhost-b", "audithost"], timeout_s=120,
                            count={"sendhost-a": 3})  # fmt: skip
    timed("broker back until every worker is healthy", t1)
    conn = await aio_pika.connect(AMQP_URL)
    try:
        client = Client(conn, await conn.channel())
        sent = {port: [_payload(port, i) for i in range(4)] for port in MAILBOX}
        for port, payloads in sent.items():
            ids = await _publish(client, port, payloads)
            by_id = dict(zip(ids, payloads, strict=True))
            for msg in await client.drain(MAILBOX[port], len(ids), timeout_s=60):
                assert msg.headers["sendpipe-send-port"] == port and msg.message_id in by_id
                _verify(deployment, port, msg.body, by_id[str(msg.message_id)], tmp_path / str(msg.message_id))
    finally:
        await conn.close()


def _pins(text: str) -> dict[str, str]:
    """name -> version of a pip requirements/freeze text (names normalised as PEP 503 does)."""
    found = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", text, flags=re.M)
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in found}


def test_the_image_holds_exactly_the_locked_versions(deployment: Deployment) -> None:
    """Reproducible: the image's packages are requirements/lock.txt's (plus sendpipe and the base image's pip)."""
    lock = _pins((REPO / "requirements/lock.txt").read_text())
    assert lock["cryptography"] and lock["setuptools"]
    blocks = re.split(r"\n(?=[A-Za-z])", (REPO / "requirements/lock.txt").read_text())
    assert all("--hash=sha256:" in b for b in blocks if "==" in b.split("\n", 1)[0])  # every pin hashed
    dev = _pins((REPO / "requirements/lock-dev.txt").read_text())
    assert {k: dev.get(k) for k in lock} == lock  # the venv (make install) runs what the image runs
    frozen = deployment.docker("run", "--rm", "--network", "none", "--entrypoint", "pip", "sendpipe:local",
                               "list", "--format", "freeze").stdout  # fmt: skip
    installed = _pins(frozen)
    assert installed.pop("sendpipe") and installed.pop("pip")
    installed.pop("wheel", None)  # the official python image's own, like pip (the stand-in has none)
    assert installed == lock
