"""Fixtures of the reliability checks: the broker tests' fixtures, a lab, and a guard on every log written.

``broker``, ``vhost``, ``deployment``, ``workers`` and ``client`` are the ones of ``tests/broker/conftest.py``
(loaded by path in ``lab``: two modules named ``conftest`` cannot be imported side by side): every test that
uses a vhost runs on each broker of ``tests/brokers.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pki import Issued, TestPKI

from .lab import Lab, broker_fixtures, ensure_all_brokers_running, log_files

broker = broker_fixtures.broker
vhost = broker_fixtures.vhost
deployment = broker_fixtures.deployment
workers = broker_fixtures.workers
client = broker_fixtures.client


@pytest.fixture(scope="session")
def reliability_lab(
    tmp_path_factory: pytest.TempPathFactory, pki: TestPKI, signer_rsa2048: Issued, partner: Issued
) -> Lab:
    """The session's PKI (shared with the other tests) and a directory for the harness' deployments."""
    return Lab(tmp_path_factory.mktemp("reliability"), pki, signer_rsa2048, partner)


@pytest.fixture(autouse=True)
def no_secrets_in_logs(tmp_path: Path, reliability_lab: Lab) -> Iterator[None]:
    """After each test: no payload marker, store password or key material in any log it wrote."""
    before = set(log_files(reliability_lab.workdir))
    yield
    written = [p for p in log_files(reliability_lab.workdir) if p not in before] + log_files(tmp_path)
    leaks = reliability_lab.needles().scan(written)
    assert not leaks, f"secrets or payload bytes in logs: {leaks}"


@pytest.fixture(scope="session", autouse=True)
def broker_left_running() -> Iterator[None]:
    """Whatever a fault test did to a broker we own (the 4.3 node), it is left running."""
    yield
    ensure_all_brokers_running()
