"""The certificate store of one service account (Personal, Other People, CRLs), loaded once into memory.

Layout (SPEC): ``<root>/<account>/personal/`` holds certificates with private keys (PKCS#12 or PEM),
``other-people/`` partners' public certificates, ``crls/`` revocation lists. Keys are parsed once
here, so the hot path never touches the disk; rotation builds a new store and swaps it in.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
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
    check_listed,
    check_validity,
    listed_in,
    normalize_thumbprint,
    signed_crls,
    thumbprint_of,
)
from worker.identity.keys import PartnerCertificate, PrivateKey, SigningIdentity

_KeyTypes = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)

# A plain account name ("svc-biztalk", not "CONTOSO\\svc-biztalk"): nothing that could walk out of
# the store root or name another account's folder.
_ACCOUNT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@$-]{0,127}")
_KEY_PEM = re.compile(rb"-----BEGIN ((?:RSA |EC |ENCRYPTED )?PRIVATE KEY)-----.+?-----END \1-----", re.S)
# Any private-key block, whatever its type (DSA, OPENSSH, ENCRYPTED, …): mode-checked and never taken for a cert.
_ANY_KEY_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY)-----")
_MAX_FILE_BYTES = 16 * 1024 * 1024  # a store file is a few KiB; refuse a huge one rather than read it
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
    # Per snapshot: each certificate's signed CRLs and its entry in each (verified once, not per message).
    _revocation: dict[str, tuple[tuple[Crl, x509.RevokedCertificate | None], ...]] = field(
        default_factory=dict, repr=False, compare=False
    )

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
            verdicts = self._revocation.get(entry.thumbprint)
            if verdicts is None:
                issuers = [*self.chain, *(e.cert for e in self.other_people.values())]
                signed = signed_crls(entry.cert, self.crls, issuers)
                verdicts = self._revocation[entry.thumbprint] = tuple((c, listed_in(c, entry.cert)) for c in signed)
            # Whether each CRL is still current is checked every time: an expired one no longer counts.
            check_listed(entry.cert, role, entry.thumbprint, verdicts, at)

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
        for path in self._files(folder, _PERSONAL):
            try:
                data, st = _read(path)
                any_key = _ANY_KEY_PEM.search(data)
                if path.suffix.lower() == ".pem" and any_key is None:
                    for cert in x509.load_pem_x509_certificates(data):
                        self._add(self.personal, StoredCert(cert, thumbprint_of(cert), path))
                    continue
                loose = _loose_mode(st)
                if path.suffix.lower() == ".pem" and any_key is not None and not _KEY_PEM.search(data):
                    self._unsupported_key(path, data, any_key.group(1).decode(), loose)
                    continue
                cert, key, extra = self._parse_keyed(path, data)
                self.chain.extend(extra)
                tp = thumbprint_of(cert)
                if loose is not None:
                    # Like ssh: a private key others can read is treated as compromised, not used.
                    self._add(self.personal, StoredCert(cert, tp, path, key_error=_insecure(path, loose)))
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
            except _Refused as exc:
                self.problems.append(f"{path.name}: {exc}")
            except (ValueError, TypeError, OSError) as exc:
                self.problems.append(f"{path.name}: {_reason(exc, path)}")

    def _unsupported_key(self, path: Path, data: bytes, kind: str, loose: int | None) -> None:
        """A PEM whose private key sendpipe cannot use (DSA, OpenSSH, …): never a usable identity, and
        still mode-checked: a readable key is refused as insecure whatever its type."""
        blocks = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", data, re.S)
        try:
            certs = x509.load_pem_x509_certificates(b"\n".join(blocks)) if blocks else []
        except ValueError:
            certs = []
        if loose is not None:
            self.problems.append(f"{path.name}: mode {loose:04o} ({kind} refused, chmod 600)")
        else:
            self.problems.append(f"{path.name}: holds a {kind}, which cannot sign (RSA or EC keys only); file refused")
        for cert in certs:
            tp = thumbprint_of(cert)
            err = (
                _insecure(path, loose)
                if loose is not None
                else CertificateError(
                    f"{path} holds a {kind}; sendpipe signs with RSA or EC keys only (certificate {tp})",
                    code=Code.SIGNING_CERT_NO_PRIVATE_KEY,
                )
            )
            self._add(self.personal, StoredCert(cert, tp, path, key_error=err))

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
        for path in self._files(folder, _OTHER_PEOPLE):
            try:
                data, _ = _read(path)
                found = _ANY_KEY_PEM.search(data)
                if found is not None:
                    # Partners' public certificates only: a key here is misplaced (and maybe exposed).
                    self.problems.append(
                        f"{path.name}: holds a {found.group(1).decode()} — other-people/ is for partners' public "
                        "certificates only; file ignored (move the key out of it)"
                    )
                    continue
                certs = (
                    x509.load_pem_x509_certificates(data)
                    if b"-----BEGIN" in data
                    else [x509.load_der_x509_certificate(data)]
                )
                for cert in certs:
                    self._add(self.other_people, StoredCert(cert, thumbprint_of(cert), path))
            except _Refused as exc:
                self.problems.append(f"{path.name}: {exc}")
            except (ValueError, OSError) as exc:
                self.problems.append(f"{path.name}: {_reason(exc, path)}")

    def load_crls(self, folder: Path) -> None:
        for path in self._files(folder, {".crl"}):
            try:
                data, _ = _read(path)
                crl = x509.load_pem_x509_crl(data) if b"-----BEGIN" in data else x509.load_der_x509_crl(data)
                self.crls.append(Crl(crl, str(path)))
            except _Refused as exc:
                self.problems.append(f"{path.name}: {exc}")
            except (ValueError, OSError) as exc:
                self.problems.append(f"{path.name}: {_reason(exc, path)}")

    @staticmethod
    def _add(index: dict[str, StoredCert], entry: StoredCert) -> None:
        # Two files may hold the same certificate (a renewal copy); one with a usable key wins.
        current = index.get(entry.thumbprint)
        if current is None or (current.key is None and entry.key is not None):
            index[entry.thumbprint] = entry

    def _files(self, folder: Path, suffixes: set[str]) -> list[Path]:
        """The folder's files with these suffixes; a symbolic link (to the folder or in it) is refused, never
        followed: it could lead into another account's store (SPEC: that is never read)."""
        try:
            st = folder.lstat()
        except OSError:
            return []
        if stat.S_ISLNK(st.st_mode):
            self.problems.append(f"{folder.name}/: is a symbolic link; refused (the store's folders must be real)")
            return []
        if not stat.S_ISDIR(st.st_mode):
            return []
        out = []
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            path = Path(entry.path)
            if path.suffix.lower() not in suffixes:
                continue
            if entry.is_symlink():
                self.problems.append(f"{entry.name}: is a symbolic link; refused (not followed)")
            elif entry.is_file(follow_symlinks=False):
                out.append(path)
        return out


class _Refused(Exception):
    """A store file that must not be read (a link, not a regular file, another owner's, too large)."""


def _read(path: Path) -> tuple[bytes, os.stat_result]:
    """Open once, without following a symbolic link, check what was opened (type, owner, size) on that
    descriptor and read from it: a rename between the check and the read cannot swap the file judged."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _Refused("is a symbolic link; refused (not followed)") from None
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise _Refused("is not a regular file; refused")
        if st.st_uid not in {os.geteuid(), 0}:
            raise _Refused(f"is owned by another user (uid {st.st_uid}); refused (chown it to the service account)")
        if st.st_size > _MAX_FILE_BYTES:
            raise _Refused(f"is {st.st_size} bytes, larger than any certificate file; refused")
        data = f.read(_MAX_FILE_BYTES + 1)
    return data, st


def _loose_mode(st: os.stat_result) -> int | None:
    mode = stat.S_IMODE(st.st_mode)
    return mode if mode & 0o077 else None


def _insecure(path: Path, loose: int) -> CertificateError:
    return _as_cert_error(
        StoreError(
            f"key file {path} is readable by group or others (mode {loose:04o}); refused: chmod 600 it",
            code=Code.KEY_FILE_INSECURE,
        )
    )


def _public(obj: x509.Certificate | PrivateKey) -> bytes:
    return obj.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _as_cert_error(err: StoreError) -> CertificateError:
    return CertificateError(err.message, code=err.code)


def _reason(exc: Exception, path: Path) -> str:
    if path.suffix.lower() in {".pfx", ".p12"} and isinstance(exc, ValueError):
        return "cannot open PKCS#12 (wrong or missing SENDPIPE_STORE_PASSWORD, or not PKCS#12)"
    return f"unreadable ({type(exc).__name__})"
