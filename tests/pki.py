"""A throw-away PKI for the tests, built with ``cryptography`` at test time (no key is ever committed).

``TestPKI`` is a root CA that issues end-entity certificates for the roles sendpipe cares about
(signing, encryption) and CRLs; the ``write_*`` functions lay them out as SPEC's "Certificate store"
describes: ``<root>/<account>/personal/``, ``other-people/``, ``crls/``.

RSA key generation is slow, so keys come from a ``KeyPool`` that makes each (type, slot) key once and
hands the same key to every certificate asking for that slot.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from worker.identity.certs import thumbprint_of
from worker.identity.store import CertificateStore

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
KeyType = Literal["rsa2048", "rsa3072", "ec-p256"]
Usage = Literal["sign", "encrypt", "none", "wrong"]
Format = Literal["der", "pem"]  # file encoding of a certificate or CRL

# make_store(account, personal=[...], other_people=[...], crls=[...], password=None) -> opened store
StoreFactory = Callable[..., CertificateStore]

_ORG = "sendpipe tests"
ROOT_CN = "sendpipe Test Root CA"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Issued:
    """A certificate with its private key; ``thumbprint`` is Windows' (upper-hex SHA-1 of the DER)."""

    cert: x509.Certificate
    key: PrivateKey
    thumbprint: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "thumbprint", thumbprint_of(self.cert))

    @property
    def serial(self) -> int:
        return self.cert.serial_number

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def cert_der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def write_cert_pem(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.cert_pem())
        return path

    def write_key_pem(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.key_pem())
        path.chmod(0o600)
        return path


class KeyPool:
    """Private keys made once per (type, slot) and reused: RSA key generation dominates test time."""

    def __init__(self) -> None:
        self._keys: dict[tuple[str, str], PrivateKey] = {}

    def get(self, key_type: KeyType, slot: str = "default") -> PrivateKey:
        found = self._keys.get((key_type, slot))
        if found is None:
            found = _generate(key_type)
            self._keys[(key_type, slot)] = found
        return found


def _generate(key_type: KeyType) -> PrivateKey:
    if key_type == "rsa2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "rsa3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unknown key type {key_type!r}")


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG)])


def _ski(key: PrivateKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(key.public_key())


def _key_usage(
    *,
    digital_signature: bool = False,
    content_commitment: bool = False,
    key_encipherment: bool = False,
    data_encipherment: bool = False,
    key_agreement: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=content_commitment,
        key_encipherment=key_encipherment,
        data_encipherment=data_encipherment,
        key_agreement=key_agreement,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def make_ca(cn: str, key: PrivateKey, *, days: int = 3650) -> Issued:
    """A self-signed root CA certificate."""
    now = utcnow()
    name = _name(cn)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(_ski(key), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


class TestPKI:
    """A root CA under ``root`` (its certificate in ``root/ca.pem``) issuing test certificates."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, root: Path, keys: KeyPool | None = None) -> None:
        self.root = root
        self.keys = keys or KeyPool()
        root.mkdir(parents=True, exist_ok=True)
        self.ca = make_ca(ROOT_CN, self.keys.get("rsa2048", "ca"))
        self.ca_pem = self.ca.write_cert_pem(root / "ca.pem")

    def second_ca(self, cn: str = "sendpipe Test Other CA", *, slot: str = "ca2") -> Issued:
        """An unrelated CA (own key); pass the root's CN to get an impostor with the same name."""
        return make_ca(cn, self.keys.get("rsa2048", slot))

    def intermediate(self, cn: str = "sendpipe Test Issuing CA", *, slot: str = "intermediate") -> Issued:
        """An intermediate CA issued by the root (pathLen 0): it may issue end entities, as ``issue(issuer=)``."""
        key = self.keys.get("rsa2048", slot)
        now = utcnow()
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.ca.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1825))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
            .add_extension(_ski(key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca.key.public_key()), critical=False)
            .sign(self.ca.key, hashes.SHA256())
        )
        return Issued(cert, key)

    def issue(
        self,
        cn: str,
        *,
        key_type: KeyType = "rsa2048",
        usage: Usage = "sign",
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        issuer: Issued | None = None,
        key_slot: str = "default",
        key: PrivateKey | None = None,
    ) -> Issued:
        """An end-entity certificate; ``usage`` picks the keyUsage extension (see module docstring)."""
        ca = issuer or self.ca
        subject_key = key or self.keys.get(key_type, key_slot)
        now = utcnow()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(ca.cert.subject)
            .public_key(subject_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - dt.timedelta(days=1))
            .not_valid_after(not_after or now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_ski(subject_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        )
        is_rsa = isinstance(subject_key, rsa.RSAPrivateKey)
        if usage == "sign":
            builder = builder.add_extension(_key_usage(digital_signature=True, content_commitment=True), critical=True)
        elif usage == "encrypt":
            ku = _key_usage(key_encipherment=True) if is_rsa else _key_usage(key_agreement=True)
            builder = builder.add_extension(ku, critical=True)
        elif usage == "wrong":
            # Valid for an end entity, but neither signing nor key transport nor key agreement.
            builder = builder.add_extension(_key_usage(data_encipherment=True), critical=True)
        elif usage != "none":
            raise ValueError(f"unknown usage {usage!r}")
        return Issued(builder.sign(ca.key, hashes.SHA256()), subject_key)

    def crl(
        self,
        revoked_serials: Iterable[int] = (),
        *,
        next_update: dt.datetime | None = None,
        last_update: dt.datetime | None = None,
        issuer: Issued | None = None,
    ) -> x509.CertificateRevocationList:
        """A CRL signed by ``issuer`` (default: this root CA), named after the issuer's subject."""
        ca = issuer or self.ca
        now = utcnow()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca.cert.subject)
            .last_update(last_update or now - dt.timedelta(hours=1))
            .next_update(next_update or now + dt.timedelta(days=7))
        )
        for serial in revoked_serials:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(now - dt.timedelta(minutes=30))
                .build()
            )
        return builder.sign(ca.key, hashes.SHA256())


# -- store writers (SPEC "Certificate store") ---------------------------------------------------


def _target(store: Path, account: str, folder: str, name: str, default_suffix: str) -> Path:
    path = store / account / folder / (name if Path(name).suffix else name + default_suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_personal_pfx(
    store: Path,
    account: str,
    name: str,
    issued: Issued,
    password: bytes | None,
    mode: int = 0o600,
    cas: Sequence[Issued] = (),
) -> Path:
    """PKCS#12 with the certificate and its key in ``personal/`` (``.pfx`` unless name has a suffix)."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    data = pkcs12.serialize_key_and_certificates(
        name.encode(), issued.key, issued.cert, [c.cert for c in cas] or None, encryption
    )
    path = _target(store, account, "personal", name, ".pfx")
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


def write_personal_pem(
    store: Path,
    account: str,
    name: str,
    issued: Issued,
    mode: int = 0o600,
    with_key: bool = True,
    key: PrivateKey | None = None,
) -> Path:
    """Certificate and (unless ``with_key`` is false) its unencrypted PKCS#8 key in one PEM file.

    ``key`` replaces the certificate's own key (to build a mismatched pair).
    """
    data = issued.cert_pem()
    if with_key:
        data += Issued(issued.cert, key).key_pem() if key is not None else issued.key_pem()
    path = _target(store, account, "personal", name, ".pem")
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


def write_other_people(store: Path, account: str, name: str, issued: Issued, fmt: Format = "der") -> Path:
    """A partner's public certificate in ``other-people/`` (``.cer`` for DER, ``.pem`` for PEM)."""
    path = _target(store, account, "other-people", name, ".cer" if fmt == "der" else ".pem")
    path.write_bytes(issued.cert_der() if fmt == "der" else issued.cert_pem())
    return path


def write_crl(store: Path, account: str, name: str, crl: x509.CertificateRevocationList, fmt: Format = "der") -> Path:
    """A revocation list in ``crls/`` (always ``.crl``, DER or PEM inside)."""
    path = _target(store, account, "crls", name, ".crl")
    encoding = serialization.Encoding.DER if fmt == "der" else serialization.Encoding.PEM
    path.write_bytes(crl.public_bytes(encoding))
    return path


def build_store(
    root: Path,
    account: str,
    *,
    personal: Sequence[Issued] = (),
    other_people: Sequence[Issued] = (),
    crls: Sequence[x509.CertificateRevocationList] = (),
    password: bytes | None = None,
) -> CertificateStore:
    """Write a complete store for ``account`` under ``root`` and open it.

    Personal certificates go into PKCS#12 files when ``password`` is given, PEM files otherwise.
    """
    for i, issued in enumerate(personal):
        if password is None:
            write_personal_pem(root, account, f"personal-{i}", issued)
        else:
            write_personal_pfx(root, account, f"personal-{i}", issued, password)
    for i, issued in enumerate(other_people):
        write_other_people(root, account, f"partner-{i}", issued, fmt="der" if i % 2 == 0 else "pem")
    for i, crl in enumerate(crls):
        write_crl(root, account, f"crl-{i}", crl)
    (root / account).mkdir(parents=True, exist_ok=True)
    secret = SecretStr(password.decode()) if password is not None else None
    return CertificateStore.open(root, account, secret)
