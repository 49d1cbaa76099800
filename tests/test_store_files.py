"""Store files are read safely (issue 12): one descriptor, opened without following links, judged by its own
fstat (type, owner, mode), any private-key block mode-checked, keys in other-people/ refused and reported."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from pki import Issued, TestPKI, build_store, utcnow, write_other_people, write_personal_pem
from pydantic import SecretStr

from worker.errors import CertificateError
from worker.identity import certs
from worker.identity.store import CertificateStore

ACCOUNT = "svc-a"
OTHER = "svc-b"
FAKE_DSA = b"-----BEGIN DSA PRIVATE KEY-----\nMIIBuwIBAAKBgQD\n-----END DSA PRIVATE KEY-----\n"
FAKE_SSH = b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEA\n-----END OPENSSH PRIVATE KEY-----\n"


def _code_of(store: CertificateStore, thumbprint: str) -> tuple[str, str]:
    with pytest.raises(CertificateError) as exc:
        store.signing(thumbprint)
    return exc.value.code, exc.value.message


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every path the store opens (``os.open``), to prove what was never read."""
    seen: list[str] = []
    real = os.open

    def spy(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        seen.append(str(path))
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    return seen


def test_a_symlink_to_another_accounts_key_is_refused_not_read(
    tmp_path: Path, signer_rsa2048: Issued, opened: list[str]
) -> None:
    theirs = write_personal_pem(tmp_path, OTHER, "group-signing", signer_rsa2048)
    (tmp_path / ACCOUNT / "personal").mkdir(parents=True)
    (tmp_path / ACCOUNT / "personal" / "group-signing.pem").symlink_to(theirs)
    store = CertificateStore.open(tmp_path, ACCOUNT)
    code, message = _code_of(store, signer_rsa2048.thumbprint)
    assert code == "signing-cert-not-found"
    assert "group-signing.pem: is a symbolic link; refused (not followed)" in store.problems
    assert "symbolic link" in message  # the lookup error names the refused file
    assert not any(OTHER in path for path in opened), opened


def test_a_symlinked_folder_is_refused(tmp_path: Path, signer_rsa2048: Issued, partner: Issued) -> None:
    write_personal_pem(tmp_path, OTHER, "group-signing", signer_rsa2048)
    theirs = write_other_people(tmp_path, OTHER, "fabrikam", partner).parent
    (tmp_path / ACCOUNT).mkdir()
    (tmp_path / ACCOUNT / "personal").symlink_to(tmp_path / OTHER / "personal")
    (tmp_path / ACCOUNT / "other-people").symlink_to(theirs)
    store = CertificateStore.open(tmp_path, ACCOUNT)
    assert store.personal == {} and store.other_people == {}
    assert sorted(store.problems) == [
        "other-people/: is a symbolic link; refused (the store's folders must be real)",
        "personal/: is a symbolic link; refused (the store's folders must be real)",
    ]


def test_the_mode_judged_is_the_descriptors_not_the_paths(
    tmp_path: Path, signer_rsa2048: Issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checking the mode by path and reading by another open lets a rename in between swap the file."""
    path = write_personal_pem(tmp_path, ACCOUNT, "group-signing", signer_rsa2048, mode=0o644)
    real_stat = Path.stat

    def no_path_stat(self: Path, *args: Any, **kwargs: Any) -> os.stat_result:
        assert self != path, "a store file must be judged by fstat of the descriptor read"
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", no_path_stat)
    store = CertificateStore.open(tmp_path, ACCOUNT)
    assert _code_of(store, signer_rsa2048.thumbprint)[0] == "key-file-insecure"


def test_a_file_of_another_owner_is_refused(tmp_path: Path, signer_rsa2048: Issued) -> None:
    path = write_personal_pem(tmp_path, ACCOUNT, "group-signing", signer_rsa2048)
    os.chown(path, 12345, 12345)  # the tests run as root (CI); as another user chown would fail here
    store = CertificateStore.open(tmp_path, ACCOUNT)
    assert _code_of(store, signer_rsa2048.thumbprint)[0] == "signing-cert-not-found"
    assert store.problems == (
        "group-signing.pem: is owned by another user (uid 12345); refused (chown it to the service account)",
    )


def test_a_fifo_is_refused_without_blocking(tmp_path: Path, signer_rsa2048: Issued) -> None:
    write_personal_pem(tmp_path, ACCOUNT, "group-signing", signer_rsa2048)
    os.mkfifo(tmp_path / ACCOUNT / "personal" / "pipe.pem")
    store = CertificateStore.open(tmp_path, ACCOUNT)
    assert store.signing(signer_rsa2048.thumbprint).thumbprint == signer_rsa2048.thumbprint
    assert store.problems == ()  # not a regular file: not even listed


@pytest.mark.parametrize("block", [FAKE_DSA, FAKE_SSH], ids=["dsa", "openssh"])
@pytest.mark.parametrize("mode", [0o644, 0o600])
def test_a_private_key_of_an_unknown_type_is_mode_checked_and_refused(
    tmp_path: Path, signer_rsa2048: Issued, block: bytes, mode: int
) -> None:
    path = tmp_path / ACCOUNT / "personal" / "odd.pem"
    path.parent.mkdir(parents=True)
    path.write_bytes(signer_rsa2048.cert_pem() + block)
    path.chmod(mode)
    store = CertificateStore.open(tmp_path, ACCOUNT)
    code, message = _code_of(store, signer_rsa2048.thumbprint)
    kind = block.split(b"-----")[1].removeprefix(b"BEGIN ").decode()
    if mode == 0o644:
        assert code == "key-file-insecure" and "chmod 600" in message
        assert store.problems == (f"odd.pem: mode 0644 ({kind} refused, chmod 600)",)
    else:
        assert code == "signing-cert-no-private-key" and kind in message
        assert store.problems == (f"odd.pem: holds a {kind}, which cannot sign (RSA or EC keys only); file refused",)


def test_a_private_key_in_other_people_is_refused_and_reported(tmp_path: Path, partner: Issued) -> None:
    path = tmp_path / ACCOUNT / "other-people" / "fabrikam.pem"
    path.parent.mkdir(parents=True)
    path.write_bytes(partner.cert_pem() + partner.key_pem())
    store = CertificateStore.open(tmp_path, ACCOUNT, SecretStr("x"))
    assert store.other_people == {}
    (problem,) = store.problems
    assert problem.startswith("fabrikam.pem: holds a PRIVATE KEY — other-people/ is for partners' public")
    with pytest.raises(CertificateError) as exc:
        store.recipient(partner.thumbprint)
    assert exc.value.code == "encryption-cert-not-found" and "fabrikam.pem: holds a PRIVATE KEY" in exc.value.message


def test_crl_verification_is_cached_per_store_snapshot(
    tmp_path: Path, pki: TestPKI, signer_rsa2048: Issued, partner: Issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    """check_revocation_list verified each CRL's signature for every message, on the event loop."""
    calls: list[int] = []
    real = certs._signed

    def counting(crl: x509.CertificateRevocationList, keys: list[Any]) -> bool:
        calls.append(1)
        return real(crl, keys)

    monkeypatch.setattr(certs, "_signed", counting)
    next_update = utcnow() + dt.timedelta(days=7)
    store = build_store(
        tmp_path,
        ACCOUNT,
        personal=[signer_rsa2048],
        other_people=[partner, pki.ca],  # the issuer's certificate: CRL signatures are verified
        crls=[pki.crl([partner.serial], next_update=next_update)],
    )
    for _ in range(50):
        assert store.signing(signer_rsa2048.thumbprint, check_crl=True).thumbprint == signer_rsa2048.thumbprint
        with pytest.raises(CertificateError) as exc:
            store.recipient(partner.thumbprint, check_crl=True)
        assert exc.value.code == "cert-revoked"
    assert len(calls) == 2  # once per certificate per snapshot, not per message
    # A cached verdict still follows the clock: past its nextUpdate the CRL no longer counts.
    later = next_update + dt.timedelta(seconds=1)
    with pytest.raises(CertificateError) as exc:
        store.signing(signer_rsa2048.thumbprint, check_crl=True, now=later)
    assert exc.value.code == "revocation-status-unknown"
    # A new snapshot (reload) verifies again.
    fresh = CertificateStore.open(tmp_path, ACCOUNT)
    fresh.signing(signer_rsa2048.thumbprint, check_crl=True)
    assert len(calls) == 3
