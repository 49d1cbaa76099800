"""The certificate store of a service account and the certificate rules: one test per error code."""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pki import (
    ROOT_CN,
    Issued,
    StoreFactory,
    TestPKI,
    utcnow,
    write_crl,
    write_other_people,
    write_personal_pem,
    write_personal_pfx,
)
from pydantic import SecretStr

from worker.errors import CertificateError, MessageError, StoreError
from worker.identity.certs import normalize_thumbprint, thumbprint_of
from worker.identity.store import CertificateStore

ACCOUNT = "svc-send"
PASSWORD = b"correct horse battery staple"


def _code(exc: pytest.ExceptionInfo[BaseException]) -> str:
    return getattr(exc.value, "code", "")


# -- thumbprints ----------------------------------------------------------------------------------


def test_thumbprint_of_matches_openssl_fingerprint(signer_rsa2048: Issued, tmp_path: Path) -> None:
    pem = signer_rsa2048.write_cert_pem(tmp_path / "c.pem")
    out = subprocess.run(
        ["openssl", "x509", "-in", str(pem), "-noout", "-fingerprint", "-sha1"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # "SHA1 Fingerprint=AB:CD:..."
    assert thumbprint_of(signer_rsa2048.cert) == out.strip().split("=", 1)[1].replace(":", "")
    assert signer_rsa2048.thumbprint == thumbprint_of(signer_rsa2048.cert)


def _pasted_forms(tp: str) -> dict[str, str]:
    spaced = " ".join(tp[i : i + 2] for i in range(0, 40, 2))
    return {
        "lower": tp.lower(),
        "spaces": spaced,
        "colons": ":".join(tp[i : i + 2] for i in range(0, 40, 2)),
        "lrm": "\u200e" + spaced.lower(),
        "rlm": "\u200f" + tp,
        "bom": "\ufeff" + tp.lower(),
        "mixed": "\u200e" + tp[:20].lower() + " " + tp[20:] + "\n",
    }


@pytest.mark.parametrize("form", ["lower", "spaces", "colons", "lrm", "rlm", "bom", "mixed"])
def test_lookup_accepts_windows_pasted_thumbprint(
    form: str, make_store: StoreFactory, signer_rsa2048: Issued, partner: Issued
) -> None:
    store = make_store(personal=[signer_rsa2048], other_people=[partner])
    identity = store.signing(_pasted_forms(signer_rsa2048.thumbprint)[form])
    assert identity.thumbprint == signer_rsa2048.thumbprint
    assert identity.cert == signer_rsa2048.cert
    recipient = store.recipient(_pasted_forms(partner.thumbprint)[form])
    assert recipient.thumbprint == partner.thumbprint
    assert recipient.cert == partner.cert


@pytest.mark.parametrize(
    "raw",
    ["../x", "0B2C", "ZZ" * 20, "0B" * 21, "", "0B" * 19 + "0G", "../" + "0B" * 19, "0B" * 20 + "/.."],
    ids=["dotdot", "too-short", "non-hex", "too-long", "empty", "one-non-hex", "path-prefix", "path-suffix"],
)
def test_malformed_thumbprint_is_invalid_thumbprint(raw: str, make_store: StoreFactory, signer_rsa2048: Issued) -> None:
    store = make_store(personal=[signer_rsa2048])
    with pytest.raises(MessageError) as exc:
        store.signing(raw)
    assert _code(exc) == "invalid-thumbprint"
    with pytest.raises(MessageError) as exc:
        store.recipient(raw)
    assert _code(exc) == "invalid-thumbprint"


_SEPARATORS = st.sampled_from([" ", ":", "\u200e", "\u200f", "\ufeff", "\t"])


@settings(derandomize=True, database=None, max_examples=100, deadline=None)
@given(
    digest=st.binary(min_size=20, max_size=20),
    cases=st.lists(st.booleans(), min_size=40, max_size=40),
    inserts=st.lists(st.tuples(st.integers(min_value=0, max_value=40), _SEPARATORS), max_size=30),
)
def test_normalize_thumbprint_ignores_separators_marks_and_case(
    digest: bytes, cases: list[bool], inserts: list[tuple[int, str]]
) -> None:
    canonical = digest.hex().upper()
    chars = [c.lower() if low else c for c, low in zip(canonical, cases, strict=True)]
    # Insert from the highest position down so earlier positions keep their meaning.
    for pos, sep in sorted(inserts, key=lambda item: item[0], reverse=True):
        chars.insert(pos, sep)
    assert normalize_thumbprint("".join(chars)) == canonical


# -- service account and store folder -------------------------------------------------------------


@pytest.mark.parametrize("account", ["..", "a/b", "/etc", "", "../svc-send", "svc/../../etc", "."])
def test_invalid_service_account(account: str, store_root: Path) -> None:
    with pytest.raises(StoreError) as exc:
        CertificateStore.open(store_root, account)
    assert _code(exc) == "invalid-service-account"


def test_store_not_found(store_root: Path) -> None:
    with pytest.raises(StoreError) as exc:
        CertificateStore.open(store_root, "nobody")
    assert _code(exc) == "store-not-found"
    assert "nobody" in str(exc.value)


def test_account_never_reads_another_accounts_store(
    store_root: Path, make_store: StoreFactory, signer_rsa2048: Issued, partner: Issued
) -> None:
    make_store("svc-b", personal=[signer_rsa2048], other_people=[partner])
    store_a = make_store("svc-a")
    assert store_a.personal == {}
    assert store_a.other_people == {}
    with pytest.raises(CertificateError) as exc:
        store_a.signing(signer_rsa2048.thumbprint)
    assert _code(exc) == "signing-cert-not-found"
    assert "svc-a" in str(exc.value)
    with pytest.raises(CertificateError) as exc:
        store_a.recipient(partner.thumbprint)
    assert _code(exc) == "encryption-cert-not-found"
    # ...while account B itself finds both.
    store_b = CertificateStore.open(store_root, "svc-b")
    assert store_b.signing(signer_rsa2048.thumbprint).thumbprint == signer_rsa2048.thumbprint
    assert store_b.recipient(partner.thumbprint).thumbprint == partner.thumbprint


# -- signing certificate (personal/) --------------------------------------------------------------


def test_signing_cert_found_in_pem_with_matching_key(make_store: StoreFactory, signer_ec: Issued) -> None:
    identity = make_store(personal=[signer_ec]).signing(signer_ec.thumbprint)
    assert identity.cert == signer_ec.cert
    assert identity.key.private_numbers() == signer_ec.key.private_numbers()


def test_signing_cert_not_found(make_store: StoreFactory, signer_rsa2048: Issued, partner: Issued) -> None:
    store = make_store(other_people=[partner])
    with pytest.raises(CertificateError) as exc:
        store.signing(signer_rsa2048.thumbprint)
    assert _code(exc) == "signing-cert-not-found"
    assert signer_rsa2048.thumbprint in str(exc.value)


def test_signing_cert_without_key_in_personal(store_root: Path, signer_rsa2048: Issued) -> None:
    write_personal_pem(store_root, ACCOUNT, "signer-cert-only", signer_rsa2048, with_key=False)
    store = CertificateStore.open(store_root, ACCOUNT)
    with pytest.raises(CertificateError) as exc:
        store.signing(signer_rsa2048.thumbprint)
    assert _code(exc) == "signing-cert-no-private-key"
    assert "signer-cert-only.pem" in str(exc.value)


def test_signing_cert_only_in_other_people(store_root: Path, signer_rsa2048: Issued) -> None:
    # Imported into the wrong store (Other People holds no keys): the lookup is in personal/ only,
    # so the certificate is "not found" there, and the message says where it actually is.
    write_other_people(store_root, ACCOUNT, "signer", signer_rsa2048)
    store = CertificateStore.open(store_root, ACCOUNT)
    with pytest.raises(CertificateError) as exc:
        store.signing(signer_rsa2048.thumbprint)
    assert _code(exc) == "signing-cert-not-found"
    assert "other-people" in str(exc.value)


def test_signing_key_mismatch(store_root: Path, signer_rsa2048: Issued, partner: Issued) -> None:
    write_personal_pem(store_root, ACCOUNT, "signer-wrong-key", signer_rsa2048, key=partner.key)
    store = CertificateStore.open(store_root, ACCOUNT)
    with pytest.raises(CertificateError) as exc:
        store.signing(signer_rsa2048.thumbprint)
    assert _code(exc) == "signing-key-mismatch"
    assert "signer-wrong-key.pem" in str(exc.value)


def test_signing_cert_not_yet_valid(make_store: StoreFactory, pki: TestPKI) -> None:
    future = pki.issue("future signer", not_before=utcnow() + dt.timedelta(days=2), key_slot="signer")
    with pytest.raises(CertificateError) as exc:
        make_store(personal=[future]).signing(future.thumbprint)
    assert _code(exc) == "signing-cert-not-yet-valid"


def test_signing_cert_expired(make_store: StoreFactory, pki: TestPKI) -> None:
    now = utcnow()
    old = pki.issue(
        "expired signer",
        not_before=now - dt.timedelta(days=400),
        not_after=now - dt.timedelta(days=1),
        key_slot="signer",
    )
    with pytest.raises(CertificateError) as exc:
        make_store(personal=[old]).signing(old.thumbprint)
    assert _code(exc) == "signing-cert-expired"


def test_validity_is_checked_at_the_given_time(make_store: StoreFactory, signer_rsa2048: Issued) -> None:
    store = make_store(personal=[signer_rsa2048])
    later = signer_rsa2048.cert.not_valid_after_utc + dt.timedelta(seconds=1)
    with pytest.raises(CertificateError) as exc:
        store.signing(signer_rsa2048.thumbprint, now=later)
    assert _code(exc) == "signing-cert-expired"


@pytest.mark.parametrize("usage", ["wrong", "encrypt"])
def test_signing_cert_key_usage(usage: str, make_store: StoreFactory, pki: TestPKI) -> None:
    cert = pki.issue(f"signer with keyUsage {usage}", usage=usage, key_slot="signer")  # type: ignore[arg-type]  # a bad usage on purpose
    with pytest.raises(CertificateError) as exc:
        make_store(personal=[cert]).signing(cert.thumbprint)
    assert _code(exc) == "signing-cert-key-usage"
    assert "digitalSignature" in str(exc.value)


def test_cert_without_key_usage_extension_may_sign_and_encrypt(make_store: StoreFactory, pki: TestPKI) -> None:
    cert = pki.issue("any use", usage="none", key_slot="signer")
    store = make_store(personal=[cert], other_people=[cert])
    assert store.signing(cert.thumbprint).thumbprint == cert.thumbprint
    assert store.recipient(cert.thumbprint).thumbprint == cert.thumbprint


# -- encryption certificate (other-people/) -------------------------------------------------------


def test_encryption_cert_found_in_der_and_pem(store_root: Path, partner: Issued, pki: TestPKI) -> None:
    other = pki.issue("Northwind partner", usage="encrypt", key_slot="partner-b")
    write_other_people(store_root, ACCOUNT, "fabrikam", partner, fmt="der")
    write_other_people(store_root, ACCOUNT, "northwind", other, fmt="pem")
    store = CertificateStore.open(store_root, ACCOUNT)
    assert store.recipient(partner.thumbprint).cert == partner.cert
    assert store.recipient(other.thumbprint).cert == other.cert
    assert store.problems == ()


def test_encryption_cert_not_found(make_store: StoreFactory, partner: Issued, signer_rsa2048: Issued) -> None:
    # A certificate in personal/ is not an encryption certificate: partners belong in other-people/.
    store = make_store(personal=[signer_rsa2048])
    for tp in (partner.thumbprint, signer_rsa2048.thumbprint):
        with pytest.raises(CertificateError) as exc:
            store.recipient(tp)
        assert _code(exc) == "encryption-cert-not-found"


def test_encryption_cert_expired(make_store: StoreFactory, pki: TestPKI) -> None:
    now = utcnow()
    old = pki.issue(
        "expired partner",
        usage="encrypt",
        not_before=now - dt.timedelta(days=400),
        not_after=now - dt.timedelta(days=1),
        key_slot="partner",
    )
    with pytest.raises(CertificateError) as exc:
        make_store(other_people=[old]).recipient(old.thumbprint)
    assert _code(exc) == "encryption-cert-expired"


def test_encryption_cert_not_yet_valid(make_store: StoreFactory, pki: TestPKI) -> None:
    future = pki.issue("future partner", usage="encrypt", not_before=utcnow() + dt.timedelta(days=2))
    with pytest.raises(CertificateError) as exc:
        make_store(other_people=[future]).recipient(future.thumbprint)
    assert _code(exc) == "encryption-cert-not-yet-valid"


@pytest.mark.parametrize("usage", ["sign", "wrong"])
def test_encryption_cert_key_usage(usage: str, make_store: StoreFactory, pki: TestPKI) -> None:
    cert = pki.issue(f"RSA partner with keyUsage {usage}", usage=usage, key_slot="partner")  # type: ignore[arg-type]  # a bad usage on purpose
    with pytest.raises(CertificateError) as exc:
        make_store(other_people=[cert]).recipient(cert.thumbprint)
    assert _code(exc) == "encryption-cert-key-usage"
    assert "keyEncipherment" in str(exc.value)


# -- revocation (crls/) ---------------------------------------------------------------------------


def test_crl_check_passes_with_current_crl_not_listing_the_cert(
    make_store: StoreFactory, pki: TestPKI, signer_rsa2048: Issued, partner: Issued
) -> None:
    store = make_store(personal=[signer_rsa2048], other_people=[partner, pki.ca], crls=[pki.crl([partner.serial + 1])])
    assert store.signing(signer_rsa2048.thumbprint, check_crl=True).thumbprint == signer_rsa2048.thumbprint
    assert store.recipient(partner.thumbprint, check_crl=True).thumbprint == partner.thumbprint


def test_cert_revoked(
    store_root: Path, make_store: StoreFactory, pki: TestPKI, signer_rsa2048: Issued, partner: Issued
) -> None:
    store = make_store(
        personal=[signer_rsa2048], other_people=[partner], crls=[pki.crl([signer_rsa2048.serial, partner.serial])]
    )
    with pytest.raises(CertificateError) as exc:
        store.signing(signer_rsa2048.thumbprint, check_crl=True)
    assert _code(exc) == "cert-revoked"
    with pytest.raises(CertificateError) as exc:
        store.recipient(partner.thumbprint, check_crl=True)
    assert _code(exc) == "cert-revoked"
    # Without check_revocation_list the CRL is not consulted (BizTalk's default).
    assert store.signing(signer_rsa2048.thumbprint).thumbprint == signer_rsa2048.thumbprint


def test_cert_revoked_in_pem_crl(store_root: Path, pki: TestPKI, partner: Issued) -> None:
    write_other_people(store_root, ACCOUNT, "partner", partner)
    write_crl(store_root, ACCOUNT, "root", pki.crl([partner.serial]), fmt="pem")
    store = CertificateStore.open(store_root, ACCOUNT)
    with pytest.raises(CertificateError) as exc:
        store.recipient(partner.thumbprint, check_crl=True)
    assert _code(exc) == "cert-revoked"


def test_revocation_status_unknown_without_crl(
    make_store: StoreFactory, signer_rsa2048: Issued, partner: Issued
) -> None:
    store = make_store(personal=[signer_rsa2048], other_people=[partner])
    with pytest.raises(CertificateError) as exc:
        store.signing(signer_rsa2048.thumbprint, check_crl=True)
    assert _code(exc) == "revocation-status-unknown"
    with pytest.raises(CertificateError) as exc:
        store.recipient(partner.thumbprint, check_crl=True)
    assert _code(exc) == "revocation-status-unknown"


def test_revocation_status_unknown_with_stale_crl(make_store: StoreFactory, pki: TestPKI, partner: Issued) -> None:
    now = utcnow()
    stale = pki.crl([], last_update=now - dt.timedelta(days=10), next_update=now - dt.timedelta(days=1))
    store = make_store(other_people=[partner], crls=[stale])
    with pytest.raises(CertificateError) as exc:
        store.recipient(partner.thumbprint, check_crl=True)
    assert _code(exc) == "revocation-status-unknown"


def test_revocation_status_unknown_with_crl_of_another_issuer(
    make_store: StoreFactory, pki: TestPKI, partner: Issued
) -> None:
    other = pki.second_ca()
    store = make_store(other_people=[partner], crls=[pki.crl([], issuer=other)])
    with pytest.raises(CertificateError) as exc:
        store.recipient(partner.thumbprint, check_crl=True)
    assert _code(exc) == "revocation-status-unknown"


def test_revocation_status_unknown_with_crl_signed_by_impostor_ca(
    make_store: StoreFactory, pki: TestPKI, partner: Issued
) -> None:
    # Same issuer name as our root, different key; the real root's certificate is in other-people/,
    # so the CRL's signature can be (and must be) checked against it.
    impostor = pki.second_ca(ROOT_CN, slot="impostor")
    assert impostor.cert.subject == pki.ca.cert.subject
    forged = pki.crl([], issuer=impostor)
    store = make_store(other_people=[partner, pki.ca], crls=[forged])
    with pytest.raises(CertificateError) as exc:
        store.recipient(partner.thumbprint, check_crl=True)
    assert _code(exc) == "revocation-status-unknown"


# -- key files and PKCS#12 ------------------------------------------------------------------------


def test_pkcs12_with_right_password_loads(store_root: Path, signer_rsa3072: Issued, pki: TestPKI) -> None:
    write_personal_pfx(store_root, ACCOUNT, "signer", signer_rsa3072, PASSWORD, cas=[pki.ca])
    store = CertificateStore.open(store_root, ACCOUNT, SecretStr(PASSWORD.decode()))
    identity = store.signing(signer_rsa3072.thumbprint)
    assert identity.cert == signer_rsa3072.cert
    assert identity.key.private_numbers() == signer_rsa3072.key.private_numbers()
    assert store.problems == ()
    assert pki.ca.cert in store.chain


def test_pkcs12_p12_suffix_loads(store_root: Path, signer_ec: Issued) -> None:
    write_personal_pfx(store_root, ACCOUNT, "signer.p12", signer_ec, PASSWORD)
    store = CertificateStore.open(store_root, ACCOUNT, SecretStr(PASSWORD.decode()))
    assert store.signing(signer_ec.thumbprint).cert == signer_ec.cert


@pytest.mark.parametrize("given_password", ["wrong password", None], ids=["wrong", "missing"])
def test_pkcs12_with_wrong_password_is_not_found_and_a_problem(
    given_password: str | None, store_root: Path, signer_rsa2048: Issued
) -> None:
    write_personal_pfx(store_root, ACCOUNT, "signer", signer_rsa2048, PASSWORD)
    secret = SecretStr(given_password) if given_password is not None else None
    store = CertificateStore.open(store_root, ACCOUNT, secret)
    assert len(store.problems) == 1
    assert "signer.pfx" in store.problems[0]
    assert "SENDPIPE_STORE_PASSWORD" in store.problems[0]
    with pytest.raises(CertificateError) as exc:
        store.signing(signer_rsa2048.thumbprint)
    assert _code(exc) == "signing-cert-not-found"
    assert "SENDPIPE_STORE_PASSWORD" in str(exc.value)
    if given_password:
        assert given_password not in str(exc.value)
        assert given_password not in " ".join(store.problems)


@pytest.mark.parametrize("kind", ["pfx", "pem"])
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_key_file_insecure(kind: str, mode: int, store_root: Path, signer_rsa2048: Issued) -> None:
    if kind == "pfx":
        path = write_personal_pfx(store_root, ACCOUNT, "signer", signer_rsa2048, PASSWORD, mode=mode)
    else:
        path = write_personal_pem(store_root, ACCOUNT, "signer", signer_rsa2048, mode=mode)
    store = CertificateStore.open(store_root, ACCOUNT, SecretStr(PASSWORD.decode()))
    with pytest.raises(CertificateError) as exc:
        store.signing(signer_rsa2048.thumbprint)
    assert _code(exc) == "key-file-insecure"
    assert str(path) in str(exc.value)
    assert any(path.name in problem for problem in store.problems)


def test_certificate_only_pem_may_be_world_readable(store_root: Path, signer_rsa2048: Issued) -> None:
    # Only files holding a private key are refused for loose permissions.
    write_personal_pem(store_root, ACCOUNT, "signer-cert-only", signer_rsa2048, with_key=False, mode=0o644)
    store = CertificateStore.open(store_root, ACCOUNT)
    assert store.problems == ()
    with pytest.raises(CertificateError) as exc:
        store.signing(signer_rsa2048.thumbprint)
    assert _code(exc) == "signing-cert-no-private-key"


def test_unreadable_files_are_problems_not_crashes(store_root: Path, signer_rsa2048: Issued, partner: Issued) -> None:
    write_personal_pem(store_root, ACCOUNT, "signer", signer_rsa2048)
    write_other_people(store_root, ACCOUNT, "partner", partner)
    for folder, name in (("personal", "junk.pfx"), ("other-people", "junk.cer"), ("crls", "junk.crl")):
        junk = store_root / ACCOUNT / folder / name
        junk.parent.mkdir(parents=True, exist_ok=True)
        junk.write_bytes(b"\x00not a certificate\n")
        junk.chmod(0o600)
    store = CertificateStore.open(store_root, ACCOUNT, SecretStr("x"))
    assert sorted(p.split(":", 1)[0] for p in store.problems) == ["junk.cer", "junk.crl", "junk.pfx"]
    assert store.signing(signer_rsa2048.thumbprint).thumbprint == signer_rsa2048.thumbprint
    assert store.recipient(partner.thumbprint).thumbprint == partner.thumbprint


def test_a_refused_key_raises_a_fresh_error_each_time(store_root: Path, signer_rsa2048: Issued) -> None:
    """Re-raising one stored exception chained every failed message's frames (and payloads) onto it:
    +50 MiB after 200 x 256 KiB messages (finding 10 of issue 10)."""
    write_personal_pem(store_root, ACCOUNT, "signer", signer_rsa2048, mode=0o644)
    store = CertificateStore.open(store_root, ACCOUNT)
    caught = []
    for _ in range(3):
        try:
            store.signing(signer_rsa2048.thumbprint)
        except CertificateError as exc:
            caught.append(exc)
    assert len({id(e) for e in caught}) == 3
    assert all(e.code == "key-file-insecure" for e in caught)
    depth = [len(list(_frames(e.__traceback__))) for e in caught]
    assert depth[0] == depth[-1]  # the traceback does not grow with every raise


def _frames(tb: TracebackType | None) -> Iterator[TracebackType]:
    while tb is not None:
        yield tb
        tb = tb.tb_next
