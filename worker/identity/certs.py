"""Certificate rules, pure and in memory: thumbprints, validity, key usage and revocation."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from worker.errors import CertificateError, Code, MessageError

# Windows' certificate dialog copies a thumbprint with a left-to-right mark in front (U+200E),
# and editors may add U+200F or a BOM; separators are spaces or colons.
_INVISIBLE = dict.fromkeys(map(ord, "\u200e\u200f\ufeff \t\r\n:"), None)
_HEX40 = re.compile(r"[0-9A-F]{40}")
_IssuerKey = (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)


def normalize_thumbprint(raw: str) -> str:
    """The canonical thumbprint (40 upper-case hex digits) of a Windows-pasted or plain form."""
    value = raw.translate(_INVISIBLE).upper()
    if not _HEX40.fullmatch(value):
        # Say what is wrong without echoing a possibly huge or hostile value in full.
        shown = raw[:60] + ("…" if len(raw) > 60 else "")
        raise MessageError(
            f"thumbprint {shown!r} is not 40 hexadecimal digits (SHA-1 of the certificate, as Windows shows it)",
            code=Code.INVALID_THUMBPRINT,
        )
    return value


def thumbprint_of(cert: x509.Certificate) -> str:
    """SHA-1 over the DER, as Windows computes a certificate's thumbprint."""
    der = cert.public_bytes(serialization.Encoding.DER)
    return hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()


class Role(Enum):
    """What a certificate is needed for; error codes are prefixed with it."""

    SIGNING = "signing"
    ENCRYPTION = "encryption"


@dataclass(frozen=True, slots=True)
class Crl:
    """A revocation list from the store, with the file it came from."""

    crl: x509.CertificateRevocationList
    path: str


def check_validity(cert: x509.Certificate, role: Role, thumbprint: str, now: dt.datetime) -> None:
    """RFC 5280 §4.1.2.5: a certificate is only usable between notBefore and notAfter."""
    if now < cert.not_valid_before_utc:
        raise CertificateError(
            f"{role.value} certificate {thumbprint} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M}Z",
            code=Code(f"{role.value}-cert-not-yet-valid"),
        )
    if now > cert.not_valid_after_utc:
        raise CertificateError(
            f"{role.value} certificate {thumbprint} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z",
            code=Code(f"{role.value}-cert-expired"),
        )


def check_key_usage(cert: x509.Certificate, role: Role, thumbprint: str) -> None:
    """RFC 5751 §4.4.2: when keyUsage is present it must allow the operation; absent means any use."""
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if role is Role.SIGNING:
        ok, wanted = usage.digital_signature or usage.content_commitment, "digitalSignature"
    elif isinstance(cert.public_key(), rsa.RSAPublicKey):
        ok, wanted = usage.key_encipherment, "keyEncipherment"
    else:
        ok, wanted = usage.key_agreement, "keyAgreement"
    if not ok:
        raise CertificateError(
            f"{role.value} certificate {thumbprint} has a keyUsage without {wanted}",
            code=Code(f"{role.value}-cert-key-usage"),
        )


def check_revocation(
    cert: x509.Certificate,
    role: Role,
    thumbprint: str,
    crls: Iterable[Crl],
    issuers: Iterable[x509.Certificate],
    now: dt.datetime,
) -> None:
    """Look the serial up in a current CRL of the certificate's issuer; no usable CRL is a failure.

    BizTalk (via Windows CryptoAPI) rejects a certificate whose revocation status cannot be
    determined; so do we. A CRL counts when its issuer name matches, it is current (nextUpdate not
    passed) and, when the issuer's certificate is in the store, its signature verifies.
    """
    signed = signed_crls(cert, crls, issuers)
    check_listed(cert, role, thumbprint, [(c, listed_in(c, cert)) for c in signed], now)


def signed_crls(cert: x509.Certificate, crls: Iterable[Crl], issuers: Iterable[x509.Certificate]) -> tuple[Crl, ...]:
    """The CRLs from ``cert``'s issuer whose signature verifies (the costly part: a store caches it)."""
    issuer_keys = [k for c in issuers if c.subject == cert.issuer and isinstance(k := c.public_key(), _IssuerKey)]
    return tuple(c for c in crls if c.crl.issuer == cert.issuer and _signed(c.crl, issuer_keys))


def listed_in(crl: Crl, cert: x509.Certificate) -> x509.RevokedCertificate | None:
    return crl.crl.get_revoked_certificate_by_serial_number(cert.serial_number)


def check_listed(
    cert: x509.Certificate,
    role: Role,
    thumbprint: str,
    verdicts: Iterable[tuple[Crl, x509.RevokedCertificate | None]],
    now: dt.datetime,
) -> None:
    """The verdict from the signed CRLs' entries for ``cert``: only CRLs current at ``now`` count."""
    usable = [(c, revoked) for c, revoked in verdicts if _current(c.crl, now)]
    if not usable:
        raise CertificateError(
            f"{role.value} certificate {thumbprint}: no current CRL from its issuer "
            f"({cert.issuer.rfc4514_string()}) in the store's crls/, so its revocation status is unknown",
            code=Code.REVOCATION_STATUS_UNKNOWN,
        )
    for entry, revoked in usable:
        if revoked is not None:
            raise CertificateError(
                f"{role.value} certificate {thumbprint} is revoked since "
                f"{revoked.revocation_date_utc:%Y-%m-%d}Z (listed in {entry.path})",
                code=Code.CERT_REVOKED,
            )


def _current(crl: x509.CertificateRevocationList, now: dt.datetime) -> bool:
    next_update = crl.next_update_utc
    return crl.last_update_utc <= now and (next_update is None or now <= next_update)


def _signed(
    crl: x509.CertificateRevocationList, issuer_keys: list[rsa.RSAPublicKey | ec.EllipticCurvePublicKey]
) -> bool:
    if not issuer_keys:
        return True  # the issuer is not in this store: the name match is all we can check
    for key in issuer_keys:
        try:
            if crl.is_signature_valid(key):
                return True
        except (InvalidSignature, TypeError, ValueError):
            continue
    return False
