"""RecipientInfos (RFC 5652 §6.2): how each recipient gets the content-encryption key, by its key type.

RSA: key transport (PKCS #1 v1.5, or RSA-OAEP per RFC 3560/4055); EC P-256/P-384: ephemeral-static ECDH
key agreement (RFC 5753) with AES key wrap (RFC 3394). Shared by EnvelopedData and AuthEnvelopedData.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from worker.smime.der import integer, oid, tlv
from worker.smime.identifiers import DIGESTS, PKCS1, RSA, V0, oaep_padding, rsaes_oaep_identifier

# RFC 5753 §7.1.4 dhSinglePass-stdDH-sha256kdf-scheme (SEC 1 / X9.63 KDF with SHA-256); RFC 3565 §2.3.2
# id-aes*-wrap (parameters absent); RFC 5480 id-ecPublicKey for the ephemeral originator key.
_ECDH_SHA256_KDF = oid("1.3.132.1.11.1")
_AES_WRAP = {bits: oid(f"2.16.840.1.101.3.4.1.{arc}") for bits, arc in ((128, 5), (192, 25), (256, 45))}
_EC_PUBLIC_KEY = oid("1.2.840.10045.2.1")


@dataclass(frozen=True, slots=True)
class Recipient:
    thumbprint: str
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    issuer_and_serial: bytes
    not_before: dt.datetime
    not_after: dt.datetime


def key_trans_recipient_info(recipient: Recipient, key: bytes, *, oaep: bool = False) -> bytes:
    """One RSA key-transport recipient (RFC 5652 §6.2.1; RSA-OAEP: RFC 3560 §3, RFC 4055 §4)::

        KeyTransRecipientInfo ::= SEQUENCE {
            version CMSVersion,  -- always set to 0 or 2
            rid RecipientIdentifier,
            keyEncryptionAlgorithm KeyEncryptionAlgorithmIdentifier,
            encryptedKey EncryptedKey }

    ``rid`` is issuerAndSerialNumber, hence version 0; the algorithm is rsaEncryption (PKCS #1 v1.5) or
    ``rsaes_oaep_identifier`` (OAEP, SHA-256, MGF1-SHA-256, empty label).
    """
    public = recipient.key
    if not isinstance(public, rsa.RSAPublicKey):
        raise TypeError("key transport needs an RSA recipient")
    if oaep:
        algorithm, encrypted = rsaes_oaep_identifier(DIGESTS["SHA256"]), public.encrypt(key, oaep_padding())
    else:
        algorithm, encrypted = RSA, public.encrypt(key, PKCS1)
    return tlv(0x30, V0, recipient.issuer_and_serial, algorithm, tlv(0x04, encrypted))


def ecc_cms_shared_info(wrap_bits: int) -> bytes:
    """The X9.63 KDF's SharedInfo for ECDH in CMS (RFC 5753 §7.2)::

    ECC-CMS-SharedInfo ::= SEQUENCE {
        keyInfo         AlgorithmIdentifier,            -- the key-wrap algorithm, parameters absent
        entityUInfo [0] EXPLICIT OCTET STRING OPTIONAL, -- the ukm; none here
        suppPubInfo [2] EXPLICIT OCTET STRING  }        -- the KEK's length in bits, 32-bit big-endian
    """
    return tlv(0x30, tlv(0x30, _AES_WRAP[wrap_bits]), tlv(0xA2, tlv(0x04, wrap_bits.to_bytes(4, "big"))))


def key_agree_recipient_info(recipient: Recipient, key: bytes) -> bytes:
    """One EC recipient: ephemeral-static ECDH (RFC 5753 §3.1), the content key AES-wrapped (RFC 3394)::

        RecipientInfo ::= CHOICE { ktri KeyTransRecipientInfo, kari [1] KeyAgreeRecipientInfo, ... }
        KeyAgreeRecipientInfo ::= SEQUENCE {
            version CMSVersion,  -- always set to 3
            originator [0] EXPLICIT OriginatorIdentifierOrKey,
            ukm [1] EXPLICIT UserKeyingMaterial OPTIONAL,
            keyEncryptionAlgorithm KeyEncryptionAlgorithmIdentifier,
            recipientEncryptedKeys RecipientEncryptedKeys }
        OriginatorIdentifierOrKey ::= CHOICE { ..., originatorKey [1] OriginatorPublicKey }
        OriginatorPublicKey ::= SEQUENCE { algorithm AlgorithmIdentifier, publicKey BIT STRING }
        RecipientEncryptedKeys ::= SEQUENCE OF RecipientEncryptedKey
        RecipientEncryptedKey ::= SEQUENCE { rid KeyAgreeRecipientIdentifier, encryptedKey EncryptedKey }

    The originator is a fresh key on the recipient's curve (id-ecPublicKey, parameters absent, the point
    uncompressed); keyEncryptionAlgorithm is dhSinglePass-stdDH-sha256kdf-scheme whose parameter is the
    key wrap (``id-aes*-wrap`` of the content key's size); the KEK is the X9.63 KDF (SHA-256) of the
    shared secret with ``ecc_cms_shared_info``; rid is the recipient's issuerAndSerialNumber; no ukm.
    Returned with its [1] tag: the caller puts it straight into RecipientInfos.
    """
    public = recipient.key
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise TypeError("key agreement needs an EC recipient")
    wrap_bits = len(key) * 8
    ephemeral = ec.generate_private_key(public.curve)
    shared = ephemeral.exchange(ec.ECDH(), public)
    kek = X963KDF(hashes.SHA256(), wrap_bits // 8, ecc_cms_shared_info(wrap_bits)).derive(shared)
    point = ephemeral.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    originator = tlv(0xA0, tlv(0xA1, tlv(0x30, _EC_PUBLIC_KEY), tlv(0x03, b"\0", point)))
    algorithm = tlv(0x30, _ECDH_SHA256_KDF, tlv(0x30, _AES_WRAP[wrap_bits]))
    encrypted = tlv(0x30, tlv(0x30, recipient.issuer_and_serial, tlv(0x04, aes_key_wrap(kek, key))))
    return tlv(0xA1, integer(3), originator, algorithm, encrypted)


def recipient_info(recipient: Recipient, key: bytes, *, oaep: bool) -> tuple[bytes, bool]:
    """The recipient's RecipientInfo, by its key (RSA: key transport, EC: key agreement), and whether it
    is version 0 (RFC 5652 §6.1: EnvelopedData is version 0 only when every RecipientInfo is)."""
    if isinstance(recipient.key, ec.EllipticCurvePublicKey):
        return key_agree_recipient_info(recipient, key), False
    return key_trans_recipient_info(recipient, key, oaep=oaep), True


def recipient_infos(recipients: Sequence[Recipient], key: bytes, *, oaep: bool) -> tuple[bytes, bool]:
    """Every recipient's RecipientInfo, in the order given, and whether all are version 0::

        RecipientInfos ::= SET SIZE (1..MAX) OF RecipientInfo

    The same content-encryption key for each (RFC 5652 §6.1), so any one recipient's private key opens
    the content. The first is the partner's: pyas2lib (django-pyas2) tries only the first RecipientInfo,
    so the order is kept as given rather than sorted as a DER SET OF would be; EnvelopedData and
    AuthEnvelopedData are BER (RFC 5652 §1: DER is required only of signed and authenticated
    attributes), and OpenSSL, Bouncy Castle and gpgsm match a RecipientInfo wherever it sits. With one
    recipient this is exactly the single-recipient SET.
    """
    if not recipients:
        raise ValueError("an envelope needs at least one recipient")
    infos = [recipient_info(r, key, oaep=oaep) for r in recipients]
    return tlv(0x31, *(info for info, _ in infos)), all(v0 for _, v0 in infos)
