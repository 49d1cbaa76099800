"""Shared fixtures: one test PKI per session (keys are slow to make), and a store builder per test.

Broker fixtures live in ``tests/broker/conftest.py``; keep this file free of them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import structlog
from cryptography import x509
from pki import Issued, StoreFactory, TestPKI, build_store

from worker.identity.store import CertificateStore


@pytest.fixture(autouse=True)
def fresh_logging() -> Iterator[None]:
    """A test that runs the CLI in-process (capsys) leaves structlog writing to its captured stream, closed
    after the test: every test starts from structlog's defaults again."""
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return TestPKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def signer_rsa2048(pki: TestPKI) -> Issued:
    return pki.issue("sendpipe signer RSA-2048", key_type="rsa2048", usage="sign", key_slot="signer")


@pytest.fixture(scope="session")
def signer_rsa3072(pki: TestPKI) -> Issued:
    return pki.issue("sendpipe signer RSA-3072", key_type="rsa3072", usage="sign", key_slot="signer")


@pytest.fixture(scope="session")
def signer_ec(pki: TestPKI) -> Issued:
    return pki.issue("sendpipe signer EC P-256", key_type="ec-p256", usage="sign", key_slot="signer")


@pytest.fixture(scope="session")
def partner(pki: TestPKI) -> Issued:
    return pki.issue("Fabrikam partner", key_type="rsa2048", usage="encrypt", key_slot="partner")


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    root = tmp_path / "stores"
    root.mkdir()
    return root


@pytest.fixture
def make_store(store_root: Path) -> StoreFactory:
    """``make_store(account, personal=[...], other_people=[...], crls=[...], password=None)`` -> opened store.

    Writes the account's folders under ``store_root`` (PEM personal files, or PKCS#12 with a password).
    """

    def make(
        account: str = "svc-send",
        *,
        personal: Sequence[Issued] = (),
        other_people: Sequence[Issued] = (),
        crls: Sequence[x509.CertificateRevocationList] = (),
        password: bytes | None = None,
    ) -> CertificateStore:
        return build_store(
            store_root, account, personal=personal, other_people=other_people, crls=crls, password=password
        )

    return make
