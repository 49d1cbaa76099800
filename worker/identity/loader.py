"""Reading one store's folders: each file judged and parsed, or recorded as a problem, never a crash.

Kept apart from ``store`` (the in-memory lookups) because this is the only code that touches the
disk: files are opened without following links and checked on the open descriptor (type, owner,
size, mode) before a byte is parsed, so a swap between check and read cannot change what is judged.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from worker.errors import CertificateError, Code, StoreError
from worker.identity.certs import Crl, thumbprint_of
from worker.identity.keys import PrivateKey

_KeyTypes = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)

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


class Loader:
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
