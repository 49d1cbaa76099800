"""What the CMS structures share: object identifiers, AlgorithmIdentifiers and IssuerAndSerialNumber.

RFC 5652 §10 (AlgorithmIdentifier, IssuerAndSerialNumber), the hashes and their RFC 5751 names, the AES
modes (RFC 3565, RFC 5084), RSA-OAEP and RSASSA-PSS parameters (RFC 4055/4056) and the ECDH scheme
(RFC 5753). Each structure module (signed, recipients, enveloped, authenveloped, compressed) takes its
constants from here, so an identifier is spelled once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.ciphers import algorithms

from worker.smime.der import NULL, integer, oid, tlv

V0, V1 = integer(0), integer(1)
DATA = oid("1.2.840.113549.1.7.1")  # RFC 5652 §4 id-data
RSA = tlv(0x30, oid("1.2.840.113549.1.1.1"), NULL)  # rsaEncryption: RSA signatures and key transport
AES = {128: oid("2.16.840.1.101.3.4.1.2"), 192: oid("2.16.840.1.101.3.4.1.22"), 256: oid("2.16.840.1.101.3.4.1.42")}
PKCS1 = padding.PKCS1v15()
_MGF1 = oid("1.2.840.113549.1.1.8")  # RFC 4055 §2.2 id-mgf1
_RSAES_OAEP = oid("1.2.840.113549.1.1.7")  # RFC 4055 §4.1 id-RSAES-OAEP
_RSASSA_PSS = oid("1.2.840.113549.1.1.10")  # RFC 4055 §3.1 id-RSASSA-PSS
_MESSAGE_DIGEST = oid("1.2.840.113549.1.9.4")
CURVES = {"secp256r1": ec.SECP256R1, "secp384r1": ec.SECP384R1}  # P-256, P-384 (RFC 5753 §8, RFC 8551)


@dataclass(frozen=True, slots=True)
class Digest:
    algorithm: type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]
    micalg: str  # RFC 5751 §3.4.3.2 (``sha-256``); also the RFC 4130 §7.3.1 MIC's algorithm name
    identifier: bytes  # AlgorithmIdentifier, parameters NULL
    ecdsa: bytes  # ecdsa-with-SHA* AlgorithmIdentifier (RFC 5758 §3.2: no parameters)
    hasher: hashes.HashAlgorithm
    ecdsa_signature: ec.ECDSA
    attr_head: bytes  # the messageDigest attribute up to the digest's octets

    def new(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm.name)

    def attribute(self, message_digest: bytes) -> bytes:
        return self.attr_head + message_digest

    @property
    def legacy_micalg(self) -> str:
        """The RFC 3851-era spelling some receivers insist on (``sha256``)."""
        return self.algorithm.name


def _sha(algorithm: type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512], micalg: str, arc: int) -> Digest:
    identifier = tlv(0x30, oid(f"2.16.840.1.101.3.4.2.{arc}"), NULL)
    ecdsa = tlv(0x30, oid(f"1.2.840.10045.4.3.{arc + 1}"))
    attr = tlv(0x30, _MESSAGE_DIGEST, tlv(0x31, tlv(0x04, bytes(algorithm.digest_size))))
    head = attr[: -algorithm.digest_size]
    return Digest(algorithm, micalg, identifier, ecdsa, algorithm(), ec.ECDSA(algorithm()), head)


# The block cipher (called with the content-encryption key) and its key size in bits. AES-192 is
# cryptography's generic AES with a 24-byte key: the enveloping is ours, so any AES key size works.
CipherSpec = tuple[type[algorithms.AES128] | type[algorithms.AES256] | type[algorithms.AES], int]
CIPHERS: dict[str, CipherSpec] = {
    "AES128": (algorithms.AES128, 128),
    "AES192": (algorithms.AES, 192),
    "AES256": (algorithms.AES256, 256),
}
# AuthEnvelopedData with AES-GCM (RFC 5083/5084): the key size in bits.
GCM_CIPHERS: dict[str, int] = {"AES128-GCM": 128, "AES256-GCM": 256}
DIGESTS: dict[str, Digest] = {
    "SHA256": _sha(hashes.SHA256, "sha-256", 1),
    "SHA384": _sha(hashes.SHA384, "sha-384", 2),
    "SHA512": _sha(hashes.SHA512, "sha-512", 3),
}


def hash_identifier(digest: Digest) -> bytes:
    """The hash's AlgorithmIdentifier as RFC 4055 §2.1 writes it inside RSASSA-PSS / RSAES-OAEP parameters.

    ``sha256Identifier AlgorithmIdentifier ::= { id-sha256, NULL }`` (likewise sha384, sha512): RFC 4055
    lists these with the NULL parameter present; receivers MUST accept NULL and absent alike.
    """
    return digest.identifier


def mgf1_identifier(digest: Digest) -> bytes:
    """MGF1 over the same hash (RFC 4055 §2.2).

    ``mgf1SHA256Identifier AlgorithmIdentifier ::= { id-mgf1, sha256Identifier }``
    (``id-mgf1 OBJECT IDENTIFIER ::= { pkcs-1 8 }``; the parameter is the hash's AlgorithmIdentifier).
    """
    return tlv(0x30, _MGF1, hash_identifier(digest))


def rsaes_oaep_identifier(digest: Digest) -> bytes:
    """The keyEncryptionAlgorithm of an RSA-OAEP KeyTransRecipientInfo (RFC 4055 §4.1, RFC 8017 A.2.1)::

        rSAES-OAEP-SHA256-Identifier AlgorithmIdentifier ::= { id-RSAES-OAEP, rSAES-OAEP-SHA256-Params }
        RSAES-OAEP-params ::= SEQUENCE {
            hashFunc    [0] AlgorithmIdentifier DEFAULT sha1Identifier,
            maskGenFunc [1] AlgorithmIdentifier DEFAULT mgf1SHA1Identifier,
            pSourceFunc [2] AlgorithmIdentifier DEFAULT pSpecifiedEmptyIdentifier }

    The module is EXPLICIT TAGS; pSourceFunc keeps its default (empty label) and is therefore omitted (DER).
    """
    params = tlv(0x30, tlv(0xA0, hash_identifier(digest)), tlv(0xA1, mgf1_identifier(digest)))
    return tlv(0x30, _RSAES_OAEP, params)


def rsassa_pss_identifier(digest: Digest) -> bytes:
    """The signatureAlgorithm of an RSASSA-PSS SignerInfo (RFC 4056 §2, parameters of RFC 4055 §3.1)::

        RSASSA-PSS-params ::= SEQUENCE {
            hashAlgorithm    [0] HashAlgorithm DEFAULT sha1Identifier,
            maskGenAlgorithm [1] MaskGenAlgorithm DEFAULT mgf1SHA1Identifier,
            saltLength       [2] INTEGER DEFAULT 20,
            trailerField     [3] TrailerField DEFAULT trailerFieldBC }

    RFC 4056 §3: the hash is the SignerInfo's digestAlgorithm, MGF1 uses the same hash, the salt is the
    digest's length; trailerField keeps its default (omitted).
    """
    params = tlv(
        0x30,
        tlv(0xA0, hash_identifier(digest)),
        tlv(0xA1, mgf1_identifier(digest)),
        tlv(0xA2, integer(digest.algorithm.digest_size)),
    )
    return tlv(0x30, _RSASSA_PSS, params)


def pss_padding(digest: Digest) -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(digest.algorithm()), salt_length=digest.algorithm.digest_size)


def oaep_padding() -> padding.OAEP:
    sha256 = hashes.SHA256()
    return padding.OAEP(mgf=padding.MGF1(sha256), algorithm=sha256, label=None)


def issuer_and_serial(cert: x509.Certificate) -> bytes:
    """How a SignerInfo's sid and a RecipientInfo's rid name a certificate (RFC 5652 §10.2.4)::

    IssuerAndSerialNumber ::= SEQUENCE { issuer Name, serialNumber CertificateSerialNumber }
    """
    return tlv(0x30, cert.issuer.public_bytes(), integer(cert.serial_number))


class _Validity(Protocol):
    @property
    def not_before(self) -> dt.datetime: ...

    @property
    def not_after(self) -> dt.datetime: ...


def still_valid(entry: _Validity) -> bool:
    # The one check of the store's (validity, key usage) that can change while a snapshot is in use.
    return entry.not_before <= dt.datetime.now(dt.UTC) <= entry.not_after
