"""Us and them as the pipeline uses them: the signing identity (certificate + key) and a partner certificate.

Free of the store's disk loading, so the wire-format code (worker/smime/) can name them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True, slots=True)
class SigningIdentity:
    """Us: the group signing certificate and its private key, as this service account holds them."""

    cert: x509.Certificate
    key: PrivateKey
    thumbprint: str
    path: Path


@dataclass(frozen=True, slots=True)
class PartnerCertificate:
    """Them: a partner's public certificate from Other People (the encryption recipient)."""

    cert: x509.Certificate
    thumbprint: str
    path: Path
