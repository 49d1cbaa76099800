"""The certificate store of one service account (Personal, Other People, CRLs), loaded once into memory.

Layout (SPEC): ``<root>/<account>/personal/`` holds certificates with private keys (PKCS#12 or PEM),
``other-people/`` partners' public certificates, ``crls/`` revocation lists. Keys are parsed once
here, so the hot path never touches the disk; rotation builds a new store and swaps it in.
"""

from __future__ import annotations

import datetime as dt
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from pydantic import SecretStr

from worker.errors import CertificateError, Code, StoreError
from worker.identity.certs import (
    Crl,
    Role,
    check_key_usage,
    check_revocation,
    check_validity,
    normalize_thumbprint,
    thumbprint_of,
)
from worker.identity.keys import PartnerCertificate, PrivateKey, SigningIdentity

_KeyTypes = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)

# A plain account name ("svc-biztalk", not "CONTOSO\\svc-biztalk"): nothing that could walk out of
# the store root or name another account's folder.
_ACCOUNT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@$-]{0,127}")
_KEY_PEM = re.compile(rb"-----BEGIN ((?:RSA |EC |ENCRYPTED )?PRIVATE KEY)-----.+?-----END \1-----", re.S)
_PERSONAL = {".pfx", ".p12", ".pem"}
_OTHER_PEOPLE = {".cer", ".crt", ".der", ".pem"}


@dataclass(frozen=True, slots=True)
class StoredCert:
    """One certificate of the store; in personal/ with its key, or the reason the key is unusable."""

    cert: x509.Certificate
    thumbprint: str
    path: Path
    key: PrivateKey | None = None
    key_error: CertificateError | None = None


@dataclass(frozen=True)
class CertificateStore:
    """An immutable snapshot of one service account's store."""

    account: str
    path: Path
    personal: dict[str, StoredCert] = field(default_factory=dict)
    other_people: dict[str, StoredCert] = field(default_factory=dict)
    chain: tuple[x509.Certificate, ...] = ()
    crls: tuple[Crl, ...] = ()
    problems: tuple[str, ...] = ()  # files that could not be used, for the start-up log and `check`

    @classmethod
    def open(cls, root: Path, account: str, password: SecretStr | None = None) -> CertificateStore:
        if not _ACCOUNT.fullmatch(account) or ".." in account:
            raise StoreError(
                f"service account {account[:80]!r} is not a plain account name "
                "(letters, digits, '.', '_', '-', '@', '$'; no path separators or '..')",
                code=Code.INVALID_SERVICE_ACCOUNT,
            )
        base = root / account
        if not base.is_dir():
            raise StoreError(
                f"no certificate store for service account {account!r} at {base}", code=Code.STORE_NOT_FOUND
            )
        loader = _Loader(password.get_secret_value().encode() if password else None)
        loader.load_personal(base / "personal")
        loader.load_other_people(base / "other-people")
        loader.load_crls(base / "crls")
        return cls(
            account,
            base,
            loader.personal,
            loader.other_people,
            tuple(loader.chain),
            tuple(loader.crls),
            tuple(loader.problems),
        )

    # -- lookups (pure, in memory) ------------------------------------------------------------

    def signing(self, thumbprint: str, *, check_crl: bool = False, now: dt.datetime | None = None) -> SigningIdentity:
        """The group signing certificate with its private key, from this account's personal/ only."""
        tp = normalize_thumbprint(thumbprint)
        entry = self.personal.get(tp)
        if entry is None:
            hint = " (it is in other-people/, which holds no private keys)" if tp in self.other_people else ""
            raise CertificateError(
                f"signing certificate {tp} is not in the personal store of service account "
                f"{self.account!r} ({self.path / 'personal'}){hint}{self._problem_hint()}",
                code=Code.SIGNING_CERT_NOT_FOUND,
            )
        if entry.key_error is not None:
            # A fresh exception per call: raising the stored object again would chain every failed
            # message's traceback (and its payload's frames) onto one ever-growing __traceback__.
            stored = entry.key_error
            raise CertificateError(stored.message, code=stored.code, stage=stored.stage)
        if entry.key is None:
            raise CertificateError(
                f"signing certificate {tp} in {entry.path} has no private key", code=Code.SIGNING_CERT_NO_PRIVATE_KEY
            )
        self._check(entry, Role.SIGNING, check_crl, now)
        return SigningIdentity(entry.cert, entry.key, tp, entry.path)

    def recipient(
        self, thumbprint: str, *, check_crl: bool = False, now: dt.datetime | None = None
    ) -> PartnerCertificate:
        """A partner's encryption certificate, from this account's other-people/ only."""
        tp = normalize_thumbprint(thumbprint)
        entry = self.other_people.get(tp)
        if entry is None:
            hint = (
                " (it is in personal/; partners' certificates belong in other-people/)" if tp in self.personal else ""
            )
            raise CertificateError(
                f"encryption certificate {tp} is not in the other-people store of service account "
                f"{self.account!r} ({self.path / 'other-people'}){hint}{self._problem_hint()}",
                code=Code.ENCRYPTION_CERT_NOT_FOUND,
            )
        self._check(entry, Role.ENCRYPTION, check_crl, now)
        return PartnerCertificate(entry.cert, tp, entry.path)

    def _check(self, entry: StoredCert, role: Role, check_crl: bool, now: dt.datetime | None) -> None:
        at = now or dt.datetime.now(dt.UTC)
        check_validity(entry.cert, role, entry.thumbprint, at)
        check_key_usage(entry.cert, role, entry.thumbprint)
        if check_crl:
            issuers = [*self.chain, *(e.cert for e in self.other_people.values())]
            check_revocation(entry.cert, role, entry.thumbprint, self.crls, issuers, at)

    def _problem_hint(self) -> str:
        return (
            f"; {len(self.problems)} store file(s) could not be used: {'; '.join(self.problems)}"
            if self.problems
            else ""
        )


class _Loader:
    """Reads the three folders; a bad file becomes a recorded problem, never a crash."""

    def __init__(self, password: bytes | None) -> None:
        self.password = password
        self.personal: dict[str, StoredCert] = {}
        self.other_people: dict[str, StoredCert] = {}
        self.chain: list[x509.Certificate] = []
        self.crls: list[Crl] = []
        self.problems: list[str] = []

    def load_personal(self, folder: Path) -> None:
        for path in _files(folder, _PERSONAL):
            try:
                data = path.read_bytes()
                if path.suffix.lower() == ".pem" and not _KEY_PEM.search(data):
                    for cert in x509.load_pem_x509_certificates(data):
                        self._add(self.personal, StoredCert(cert, thumbprint_of(cert), path))
                    continue
                loose = _loose_mode(path)
                cert, key, extra = self._parse_keyed(path, data)
                self.chain.extend(extra)
                tp = thumbprint_of(cert)
                if loose is not None:
                    # Like ssh: a private key others can read is treated as compromised, not used.
                    err = StoreError(
                        f"key file {path} is readable by group or others (mode {loose:04o}); refused: chmod 600 it",
                        code=Code.KEY_FILE_INSECURE,
                    )
                    self._add(self.personal, StoredCert(cert, tp, path, key_error=_as_cert_error(err)))
                    self.problems.append(f"{path.name}: mode {loose:04o} (key refused, chmod 600)")
                    continue
                if key is None or _public(key) != _public(cert):
                    code, why = (
                        (Code.SIGNING_CERT_NO_PRIVATE_KEY, "holds no private key")
                        if key is None
                        else (Code.SIGNING_KEY_MISMATCH, "holds a private key that does not match the certificate")
                    )
                    self._add(
                        self.personal,
                        StoredCert(
                            cert, tp, path, key_error=CertificateError(f"{path} {why} (certificate {tp})", code=code)
                        ),
                    )
                    continue
                self._add(self.personal, StoredCert(cert, tp, path, key=key))
            except (ValueError, TypeError, OSError) as exc:
                self.problems.append(f"{path.name}: {_reason(exc, path)}")

    def _parse_keyed(
        self, path: Path, data: bytes
    ) -> tuple[x509.Certificate, PrivateKey | None, list[x509.Certificate]]:
        if path.suffix.lower() in {".pfx", ".p12"}:
            bundle = pkcs12.load_pkcs12(data, self.password)
            if bundle.cert is None:
                raise ValueError("PKCS#12 file holds no certificate")
            key = bundle.key if isinstance(bundle.key, _KeyTypes) else None
            return bundle.cert.certificate, key, [c.certificate for c in bundle.additional_certs]
        certs = x509.load_pem_x509_certificates(data)
        match = _KEY_PEM.search(data)
        if match is None:
            raise ValueError("no private key block")
        encrypted = b"ENCRYPTED" in match.group(1) or b"Proc-Type: 4,ENCRYPTED" in match.group(0)
        loaded = serialization.load_pem_private_key(match.group(0), self.password if encrypted else None)
        key = loaded if isinstance(loaded, _KeyTypes) else None
        # The certificate of the key comes first by convention, but pick the matching one if listed later.
        first = next((c for c in certs if key is not None and _public(c) == _public(key)), certs[0])
        return first, key, [c for c in certs if c is not first]

    def load_other_people(self, folder: Path) -> None:
        for path in _files(folder, _OTHER_PEOPLE):
            try:
                data = path.read_bytes()
                certs = (
                    x509.load_pem_x509_certificates(data)
                    if b"-----BEGIN" in data
                    else [x509.load_der_x509_certificate(data)]
                )
                for cert in certs:
                    self._add(self.other_people, StoredCert(cert, thumbprint_of(cert), path))
            except (ValueError, OSError) as exc:
                self.problems.append(f"{path.name}: {_reason(exc, path)}")

    def load_crls(self, folder: Path) -> None:
        for path in _files(folder, {".crl"}):
            try:
                data = path.read_bytes()
                crl = x509.load_pem_x509_crl(data) if b"-----BEGIN" in data else x509.load_der_x509_crl(data)
                self.crls.append(Crl(crl, str(path)))
            except (ValueError, OSError) as exc:
                self.problems.append(f"{path.name}: {_reason(exc, path)}")

    @staticmethod
    def _add(index: dict[str, StoredCert], entry: StoredCert) -> None:
        # Two files may hold the same certificate (a renewal copy); one with a usable key wins.
        current = index.get(entry.thumbprint)
        if current is None or (current.key is None and entry.key is not None):
            index[entry.thumbprint] = entry


def _files(folder: Path, suffixes: set[str]) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)


def _loose_mode(path: Path) -> int | None:
    mode = stat.S_IMODE(path.stat().st_mode)
    return mode if mode & 0o077 else None


def _public(obj: x509.Certificate | PrivateKey) -> bytes:
    return obj.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _as_cert_error(err: StoreError) -> CertificateError:
    return CertificateError(err.message, code=err.code)


def _reason(exc: Exception, path: Path) -> str:
    if path.suffix.lower() in {".pfx", ".p12"} and isinstance(exc, ValueError):
        return "cannot open PKCS#12 (wrong or missing SENDPIPE_STORE_PASSWORD, or not PKCS#12)"
    return f"unreadable ({type(exc).__name__})"
