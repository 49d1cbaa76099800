"""CMS SignedData and EnvelopedData (RFC 5652) written as DER from cryptography's primitives, streamed.

Also (S/MIME 4.0, AS2): AuthEnvelopedData with AES-GCM (RFC 5083/5084), RSA-OAEP key transport (RFC 4055),
RSASSA-PSS signatures (RFC 4056), ECDH key agreement for EC recipients (RFC 5753), CompressedData
(RFC 3274), the signer's intermediate CAs in SignedData. One function per structure, its ASN.1 in the
docstring; the defaults write exactly the bytes below.

The output is the DER cryptography's PKCS7 builders emit (same attributes, order and algorithm
identifiers; with RSA byte-identical within the same second), but every layer streams: the body part
is base64-encoded, hashed, wrapped in signed-data, base64-encoded again, AES-encrypted and
base64-encoded once more, block by block, into the one buffer that becomes the message. No layer is
held whole (except a clear-signed part, which multipart/signed needs as it is, an EC-signed body part
up to 4 MiB, and a compressed layer, whose size is known only once compressed), so a message costs
about its output in memory. OpenSSL's `cms` checks every shape of it in tests/test_interop.py and
tests/test_interop_as2.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import AEADEncryptionContext, Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from worker.identity.keys import PrivateKey, SigningIdentity
from worker.smime import mime
from worker.smime.body import EAGER, Body
from worker.smime.der import NULL, hdr, integer, oid, tlv

_V0, _V1 = integer(0), integer(1)
_DATA = oid("1.2.840.113549.1.7.1")
_SIGNED_DATA = oid("1.2.840.113549.1.7.2")
_ENVELOPED_DATA = oid("1.2.840.113549.1.7.3")
_AUTH_ENVELOPED_DATA = oid("1.2.840.113549.1.9.16.1.23")  # RFC 5083 §1 id-ct-authEnvelopedData
_AES_GCM = {128: oid("2.16.840.1.101.3.4.1.6"), 256: oid("2.16.840.1.101.3.4.1.46")}  # RFC 5084 §3.2
_GCM_NONCE, _GCM_TAG = 12, 16
# RFC 5753 §7.1.4 dhSinglePass-stdDH-sha256kdf-scheme (SEC 1 / X9.63 KDF with SHA-256); RFC 3565 §2.3.2
# id-aes*-wrap (parameters absent); RFC 5480 id-ecPublicKey for the ephemeral originator key.
_ECDH_SHA256_KDF = oid("1.3.132.1.11.1")
_AES_WRAP = {bits: oid(f"2.16.840.1.101.3.4.1.{arc}") for bits, arc in ((128, 5), (192, 25), (256, 45))}
_EC_PUBLIC_KEY = oid("1.2.840.10045.2.1")
CURVES = {"secp256r1": ec.SECP256R1, "secp384r1": ec.SECP384R1}  # P-256, P-384 (RFC 5753 §8, RFC 8551)
_COMPRESSED_DATA = oid("1.2.840.113549.1.9.16.1.9")  # RFC 3274 §1.1 id-ct-compressedData
_ZLIB = tlv(0x30, oid("1.2.840.113549.1.9.16.3.8"))  # RFC 3274 §1.1 id-alg-zlibCompress, parameters absent
_RSA = tlv(0x30, oid("1.2.840.113549.1.1.1"), NULL)  # rsaEncryption: RSA signatures and key transport
_AES = {128: oid("2.16.840.1.101.3.4.1.2"), 192: oid("2.16.840.1.101.3.4.1.22"), 256: oid("2.16.840.1.101.3.4.1.42")}
_CONTENT_TYPE_ATTR = tlv(0x30, oid("1.2.840.113549.1.9.3"), tlv(0x31, _DATA))
_MESSAGE_DIGEST = oid("1.2.840.113549.1.9.4")
_SIGNING_TIME = oid("1.2.840.113549.1.9.5")
_RSAES_OAEP = oid("1.2.840.113549.1.1.7")  # RFC 4055 §4.1 id-RSAES-OAEP
_MGF1 = oid("1.2.840.113549.1.1.8")  # RFC 4055 §2.2 id-mgf1
_RSASSA_PSS = oid("1.2.840.113549.1.1.10")  # RFC 4055 §3.1 id-RSASSA-PSS
# RFC 5751 §2.5.2 SMIMECapabilities, as cryptography's builder announces them.
_CAPABILITIES_ATTR = tlv(
    0x30,
    oid("1.2.840.113549.1.9.15"),
    tlv(0x31, tlv(0x30, *(tlv(0x30, _AES[bits]) for bits in (256, 192, 128)))),
)


_PKCS1 = padding.PKCS1v15()


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


_MATERIALIZE = 4 * 1024 * 1024  # an EC-signed body part up to this size is kept rather than encoded twice


@dataclass(frozen=True, slots=True)
class Signer:
    """The group signing identity with its DER pieces, computed once per store snapshot."""

    identity: SigningIdentity
    issuer_and_serial: bytes
    cert_der: bytes
    signature_size: int | None  # an RSA signature is always the modulus size; ECDSA's DER varies
    not_before: dt.datetime
    not_after: dt.datetime
    certificates: bytes  # SignedData's [0] certificates: this one
    chain: tuple[bytes, ...] = ()  # DER of the intermediate CA certificates above it (never the root)

    @classmethod
    def of(cls, identity: SigningIdentity, chain: tuple[x509.Certificate, ...] = ()) -> Signer:
        key, cert = identity.key, identity.cert
        size = (key.key_size + 7) // 8 if isinstance(key, rsa.RSAPrivateKey) else None
        der = cert.public_bytes(serialization.Encoding.DER)
        return cls(
            identity,
            issuer_and_serial(cert),
            der,
            size,
            cert.not_valid_before_utc,
            cert.not_valid_after_utc,
            tlv(0xA0, der),
            tuple(c.public_bytes(serialization.Encoding.DER) for c in chain),
        )

    @property
    def is_rsa(self) -> bool:
        return self.signature_size is not None

    def certificate_set(self, *, with_cert: bool, with_chain: bool) -> bytes:
        """SignedData's certificates field (RFC 5652 §5.1, §10.2.3)::

            certificates [0] IMPLICIT CertificateSet OPTIONAL
            CertificateSet ::= SET OF CertificateChoices
            CertificateChoices ::= CHOICE { certificate Certificate, ... }

        The signer's certificate and its intermediate CAs (RFC 5652 §5.1: enough for the receiver to
        build the path to a root it trusts; the root itself is left out, the receiver has it), in the
        order of their encodings as DER wants a SET OF (X.690 §11.6; cryptography's reader insists).
        Absent when empty.
        """
        if not with_chain or not self.chain:
            return self.certificates if with_cert else b""
        return tlv(0xA0, *sorted(((self.cert_der,) if with_cert else ()) + self.chain))

    def info_head(self, digest: Digest) -> bytes:
        """SignerInfo's version, sid (issuerAndSerialNumber) and digestAlgorithm."""
        return _V1 + self.issuer_and_serial + digest.identifier

    def sign(self, data: bytes, digest: Digest, *, pss: bool = False) -> bytes:
        key: PrivateKey = self.identity.key
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, pss_padding(digest) if pss else _PKCS1, digest.hasher)
        return key.sign(data, digest.ecdsa_signature)

    def signature_algorithm(self, digest: Digest, *, pss: bool = False) -> bytes:
        if self.signature_size is None:
            return digest.ecdsa
        return rsassa_pss_identifier(digest) if pss else _RSA


@dataclass(frozen=True, slots=True)
class Recipient:
    thumbprint: str
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    issuer_and_serial: bytes
    not_before: dt.datetime
    not_after: dt.datetime


def issuer_and_serial(cert: x509.Certificate) -> bytes:
    return tlv(0x30, cert.issuer.public_bytes(), integer(cert.serial_number))


def still_valid(entry: Signer | Recipient) -> bool:
    # The one check of the store's (validity, key usage) that can change while a snapshot is in use.
    return entry.not_before <= dt.datetime.now(dt.UTC) <= entry.not_after


_time_attr: tuple[int, bytes] = (-1, b"")  # the signingTime attribute of the current second


def _signing_time(when: dt.datetime) -> bytes:
    # RFC 5652 §11.3: UTCTime for 1950-2049, GeneralizedTime otherwise.
    if 1950 <= when.year < 2050:
        return tlv(0x17, when.strftime("%y%m%d%H%M%SZ").encode())
    return tlv(0x18, when.strftime("%Y%m%d%H%M%SZ").encode())


def _signing_time_attr() -> bytes:
    global _time_attr  # noqa: PLW0603 - a one-entry cache; a stale read only costs a recomputation
    now = dt.datetime.now(dt.UTC)
    second = int(now.timestamp())
    cached = _time_attr
    if cached[0] != second:
        cached = _time_attr = (second, tlv(0x30, _SIGNING_TIME, tlv(0x31, _signing_time(now))))
    return cached[1]


def signed_data(
    signer: Signer,
    digest: Digest,
    content: Body,
    *,
    with_cert: bool,
    detached: bool = False,
    with_chain: bool = False,
    pss: bool = False,
    on_digest: Callable[[bytes], None] | None = None,
) -> Body:
    """CMS SignedData (RFC 5652 §5) over ``content``, as a stream.

    With an RSA key the signature's size is known up front, so the content is hashed while it streams
    out and the SignerInfo follows it; otherwise (ECDSA, detached) the content is hashed first.
    ``with_chain`` adds the signer's intermediate CAs (``Signer.certificate_set``); ``pss`` signs an RSA
    key with RSASSA-PSS (``rsassa_pss_identifier``, RFC 4056) instead of PKCS #1 v1.5. ``on_digest``
    receives the content's digest (the messageDigest attribute: what an AS2 MIC is, RFC 4130 §7.3.1)
    once the content has been hashed, which for a streamed body is while it is being produced.
    """
    time_attr = _signing_time_attr()
    certificates = signer.certificate_set(with_cert=with_cert, with_chain=with_chain)
    info_head = signer.info_head(digest)
    algorithm = signer.signature_algorithm(digest, pss=pss)

    def tail(message_digest: bytes, signature: bytes | None) -> bytes:
        # DER: a SET OF in the order of its encodings (a longer digest moves messageDigest last).
        signed = b"".join(sorted((_CONTENT_TYPE_ATTR, time_attr, digest.attribute(message_digest), _CAPABILITIES_ATTR)))
        if signature is None:
            signature = signer.sign(hdr(0x31, len(signed)) + signed, digest, pss=pss)
        info = tlv(0x30, info_head, hdr(0xA0, len(signed)), signed, algorithm, hdr(0x04, len(signature)), signature)
        return certificates + tlv(0x31, info)

    def head(tail_size: int) -> bytes:
        if detached:
            encap = tlv(0x30, _DATA)
        else:
            octets = hdr(0x04, content.length)
            explicit = hdr(0xA0, len(octets) + content.length)
            size = len(_DATA) + len(explicit) + len(octets) + content.length
            encap = hdr(0x30, size) + _DATA + explicit + octets
        fields = _V1 + tlv(0x31, digest.identifier) + encap
        size = len(fields) + (0 if detached else content.length) + tail_size
        sequence = hdr(0x30, size)
        explicit = hdr(0xA0, len(sequence) + size)
        return (
            hdr(0x30, len(_SIGNED_DATA) + len(explicit) + len(sequence) + size)
            + _SIGNED_DATA
            + explicit
            + sequence
            + fields
        )

    # Hash first, then emit: when the signature size is not known in advance (ECDSA's DER varies),
    # when detached, and for small content (cheaper than sizing the SignerInfo with a dummy signature).
    if signer.signature_size is None or detached or content.length <= mime.STREAM_ABOVE:
        if not detached and content.length <= _MATERIALIZE:
            content = Body.of(content.materialize())  # hashed and then sent: encode it once
        hashed = digest.new()
        for chunk in content.chunks():
            hashed.update(chunk)
        message_digest = hashed.digest()
        if on_digest is not None:
            on_digest(message_digest)
        end = tail(message_digest, None)
        start = head(len(end))
        if detached:
            return Body.of(start, end)
        if content.data is not None and content.length <= EAGER:
            return Body.eager(b"".join((start, content.data, end)))
        return Body(len(start) + content.length + len(end), lambda: chain((start,), content.chunks(), (end,)))

    tail_size = len(tail(digest.new().digest(), b"\0" * signer.signature_size))
    start = head(tail_size)

    def stream() -> Iterator[mime.Chunk]:
        yield start
        hashed = digest.new()
        for chunk in content.chunks():
            hashed.update(chunk)
            yield chunk
        message_digest = hashed.digest()
        if on_digest is not None:
            on_digest(message_digest)
        end = tail(message_digest, None)
        if len(end) != tail_size:  # the lengths above are already out: never emit inconsistent DER
            raise RuntimeError(f"SignerInfo of {len(end)} bytes, {tail_size} announced")
        yield end

    return Body(len(start) + content.length + tail_size, stream)


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
        algorithm, encrypted = _RSA, public.encrypt(key, _PKCS1)
    return tlv(0x30, _V0, recipient.issuer_and_serial, algorithm, tlv(0x04, encrypted))


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


def enveloped_data(recipient: Recipient, cipher: CipherSpec, plain: Body, *, oaep: bool = False) -> Body:
    """CMS EnvelopedData (RFC 5652 §6) for one recipient, AES-CBC, as a stream.

    AES-128, AES-192 or AES-256 in CBC mode (RFC 3565 §4.1: ``id-aes192-CBC``, parameters the IV); the
    recipient is ``recipient_info``'s (version 2 with an EC recipient's kari, else 0).
    """
    algorithm, bits = cipher
    key, iv = os.urandom(bits // 8), os.urandom(16)
    transport, v0 = recipient_info(recipient, key, oaep=oaep)
    padded = (plain.length // 16 + 1) * 16  # PKCS #7 padding always adds 1 to 16 bytes
    content_info = _DATA + tlv(0x30, _AES[bits], tlv(0x04, iv)) + hdr(0x80, padded)
    version = _V0 if v0 else integer(2)
    fields = version + tlv(0x31, transport) + hdr(0x30, len(content_info) + padded) + content_info
    size = len(fields) + padded
    sequence = hdr(0x30, size)
    explicit = hdr(0xA0, len(sequence) + size)
    start = (
        hdr(0x30, len(_ENVELOPED_DATA) + len(explicit) + len(sequence) + size)
        + _ENVELOPED_DATA
        + explicit
        + sequence
        + fields
    )

    pad = padded - plain.length
    if plain.data is not None and plain.length <= EAGER:
        encryptor = Cipher(algorithm(key), modes.CBC(iv)).encryptor()
        return Body.eager(b"".join((start, encryptor.update(plain.data + bytes((pad,)) * pad), encryptor.finalize())))

    def stream() -> Iterator[mime.Chunk]:
        yield start
        encryptor = Cipher(algorithm(key), modes.CBC(iv)).encryptor()
        for chunk in plain.chunks():
            yield encryptor.update(chunk)
        yield encryptor.update(bytes((pad,)) * pad) + encryptor.finalize()

    return Body(len(start) + padded, stream)


def gcm_parameters(nonce: bytes) -> bytes:
    """The content-encryption algorithm's parameters for AES-GCM (RFC 5084 §3.2)::

        GCMParameters ::= SEQUENCE {
            aes-nonce        OCTET STRING,  -- recommended size is 12 octets
            aes-ICVlen       AES-GCM-ICVlen DEFAULT 12 }
        AES-GCM-ICVlen ::= INTEGER (12 | 13 | 14 | 15 | 16)

    A 12-octet nonce and the full 16-octet tag, which is not the default and so is written out.
    """
    return tlv(0x30, tlv(0x04, nonce), integer(_GCM_TAG))


def auth_enveloped_data(recipient: Recipient, bits: int, plain: Body, *, oaep: bool = False) -> Body:
    """CMS AuthEnvelopedData (RFC 5083 §2.1) with AES-GCM (RFC 5084), one RSA key-transport recipient::

        AuthEnvelopedData ::= SEQUENCE {
            version CMSVersion,                                   -- always 0
            originatorInfo [0] IMPLICIT OriginatorInfo OPTIONAL,
            recipientInfos RecipientInfos,
            authEncryptedContentInfo EncryptedContentInfo,
            authAttrs [1] IMPLICIT AuthAttributes OPTIONAL,
            mac MessageAuthenticationCode,                        -- OCTET STRING: the GCM tag
            unauthAttrs [2] IMPLICIT UnauthAttributes OPTIONAL }
        EncryptedContentInfo ::= SEQUENCE {
            contentType ContentType,
            contentEncryptionAlgorithm ContentEncryptionAlgorithmIdentifier,  -- id-aes*-GCM, GCMParameters
            encryptedContent [0] IMPLICIT EncryptedContent OPTIONAL }

    No authAttrs, so the additional authenticated data is empty (RFC 5083 §2.2). GCM needs no padding:
    the ciphertext is as long as the plaintext and streams; the tag follows it.
    """
    key, nonce = os.urandom(bits // 8), os.urandom(_GCM_NONCE)
    transport, _ = recipient_info(recipient, key, oaep=oaep)  # AuthEnvelopedData: version 0 always
    mac = tlv(0x04, bytes(_GCM_TAG))  # its size; the tag itself is known once the content is encrypted
    content_info = _DATA + tlv(0x30, _AES_GCM[bits], gcm_parameters(nonce)) + hdr(0x80, plain.length)
    fields = _V0 + tlv(0x31, transport) + hdr(0x30, len(content_info) + plain.length) + content_info
    size = len(fields) + plain.length + len(mac)
    sequence = hdr(0x30, size)
    explicit = hdr(0xA0, len(sequence) + size)
    start = (
        hdr(0x30, len(_AUTH_ENVELOPED_DATA) + len(explicit) + len(sequence) + size)
        + _AUTH_ENVELOPED_DATA
        + explicit
        + sequence
        + fields
    )

    def tag_of(encryptor: AEADEncryptionContext) -> bytes:
        return tlv(0x04, encryptor.tag)

    if plain.data is not None and plain.length <= EAGER:
        encryptor = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
        sealed = encryptor.update(plain.data) + encryptor.finalize()
        return Body.eager(b"".join((start, sealed, tag_of(encryptor))))

    def stream() -> Iterator[mime.Chunk]:
        yield start
        encryptor = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
        for chunk in plain.chunks():
            yield encryptor.update(chunk)
        yield encryptor.finalize() + tag_of(encryptor)

    return Body(len(start) + plain.length + len(mac), stream)


def compressed_data(content: Body) -> Body:
    """CMS CompressedData (RFC 3274 §1.1), zlib (RFC 1950) over the content::

        CompressedData ::= SEQUENCE {
            version CMSVersion,       -- Always set to 0
            compressionAlgorithm CompressionAlgorithmIdentifier,
            encapContentInfo EncapsulatedContentInfo }
        CompressionAlgorithmIdentifier ::= AlgorithmIdentifier  -- id-alg-zlibCompress, parameters absent
        EncapsulatedContentInfo ::= SEQUENCE {
            eContentType ContentType,  -- id-data
            eContent [0] EXPLICIT OCTET STRING OPTIONAL }

    The compressed size is known only once compressed, so this layer is held whole (its input streams in).
    """
    compressor = zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS)
    packed = b"".join([*(compressor.compress(chunk) for chunk in content.chunks()), compressor.flush()])
    octets = tlv(0x04, packed)
    encap = tlv(0x30, _DATA, tlv(0xA0, octets))
    return Body.eager(tlv(0x30, _COMPRESSED_DATA, tlv(0xA0, tlv(0x30, _V0, _ZLIB, encap))))
