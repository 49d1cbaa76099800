"""The certificate store of one service account (Personal, Other People, CRLs), loaded once into memory.

Layout (SPEC): ``<root>/<account>/personal/`` holds certificates with private keys (PKCS#12 or PEM),
``other-people/`` partners' public certificates, ``crls/`` revocation lists. Keys are parsed once
here (by `loader`), so the hot path never touches the disk; rotation builds a new store and swaps it in.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
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
)
from worker.identity.keys import PartnerCertificate, SigningIdentity
from worker.identity.loader import Loader, StoredCert

# A plain account name ("svc-biztalk", not "CONTOSO\\svc-biztalk"): nothing that could walk out of
# the store root or name another account's folder.
_ACCOUNT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@$-]{0,127}")


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
        loader = Loader(password.get_secret_value().encode() if password else None)
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
