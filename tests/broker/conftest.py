"""Broker fixtures: the broker (each of tests/brokers.py in turn), a fresh vhost on it per test, a deployment on
disk, and worker processes (their classes live in tests/brokerkit.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from brokerkit import STORE_PASSWORD, Client, Deployment, Worker, ctl_retrying
from brokers import BROKERS, Broker, add_vhost_expr
from pki import Issued, TestPKI, write_other_people, write_personal_pem, write_personal_pfx


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


@pytest.fixture
async def client(vhost: str) -> AsyncIterator[Client]:
    conn = await aio_pika.connect(vhost)
    channel = await conn.channel()
    yield Client(conn, channel)
    await conn.close()
