"""CMS SignedData and EnvelopedData (RFC 5652) written as DER from cryptography's primitives, streamed.

The output is the DER cryptography's PKCS7 builders emit (same attributes, order and algorithm
identifiers; with RSA byte-identical within the same second), but every layer streams: the body part
is base64-encoded, hashed, wrapped in signed-data, base64-encoded again, AES-encrypted and
base64-encoded once more, block by block, into the one buffer that becomes the message. No layer is
held whole (except a clear-signed part, which multipart/signed needs as it is, and an EC-signed body
part up to 4 MiB), so a message costs about its output in memory. OpenSSL's `cms` checks every shape
of it in tests/test_interop.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from worker.identity.keys import PrivateKey, SigningIdentity
from worker.smime import mime
from worker.smime.body import EAGER, Body
from worker.smime.der import NULL, hdr, integer, oid, tlv

_V0, _V1 = integer(0), integer(1)
_DATA = oid("1.2.840.113549.1.7.1")
_SIGNED_DATA = oid("1.2.840.113549.1.7.2")
_ENVELOPED_DATA = oid("1.2.840.113549.1.7.3")
_RSA = tlv(0x30, oid("1.2.840.113549.1.1.1"), NULL)  # rsaEncryption: RSA signatures and key transport
_AES = {128: oid("2.16.840.1.101.3.4.1.2"), 192: oid("2.16.840.1.101.3.4.1.22"), 256: oid("2.16.840.1.101.3.4.1.42")}
_CONTENT_TYPE_ATTR = tlv(0x30, oid("1.2.840.113549.1.9.3"), tlv(0x31, _DATA))
_MESSAGE_DIGEST = oid("1.2.840.113549.1.9.4")
_SIGNING_TIME = oid("1.2.840.113549.1.9.5")
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
    micalg: str  # RFC 5751 §3.4.3.2
    identifier: bytes  # AlgorithmIdentifier, parameters NULL
    ecdsa: bytes  # ecdsa-with-SHA* AlgorithmIdentifier (RFC 5758 §3.2: no parameters)
    hasher: hashes.HashAlgorithm
    ecdsa_signature: ec.ECDSA
    attr_head: bytes  # the messageDigest attribute up to the digest's octets

    def new(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm.name)

    def attribute(self, message_digest: bytes) -> bytes:
        return self.attr_head + message_digest


def _sha(algorithm: type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512], micalg: str, arc: int) -> Digest:
    identifier = tlv(0x30, oid(f"2.16.840.1.101.3.4.2.{arc}"), NULL)
    ecdsa = tlv(0x30, oid(f"1.2.840.10045.4.3.{arc + 1}"))
    attr = tlv(0x30, _MESSAGE_DIGEST, tlv(0x31, tlv(0x04, bytes(algorithm.digest_size))))
    head = attr[: -algorithm.digest_size]
    return Digest(algorithm, micalg, identifier, ecdsa, algorithm(), ec.ECDSA(algorithm()), head)


CIPHERS: dict[str, tuple[type[algorithms.AES128] | type[algorithms.AES256], int]] = {
    "AES128": (algorithms.AES128, 128),
    "AES256": (algorithms.AES256, 256),
}
DIGESTS: dict[str, Digest] = {
    "SHA256": _sha(hashes.SHA256, "sha-256", 1),
    "SHA384": _sha(hashes.SHA384, "sha-384", 2),
    "SHA512": _sha(hashes.SHA512, "sha-512", 3),
}
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

    @classmethod
    def of(cls, identity: SigningIdentity) -> Signer:
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
        )

    def info_head(self, digest: Digest) -> bytes:
        """SignerInfo's version, sid (issuerAndSerialNumber) and digestAlgorithm."""
        return _V1 + self.issuer_and_serial + digest.identifier

    def sign(self, data: bytes, digest: Digest) -> bytes:
        key: PrivateKey = self.identity.key
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, _PKCS1, digest.hasher)
        return key.sign(data, digest.ecdsa_signature)

    def signature_algorithm(self, digest: Digest) -> bytes:
        return _RSA if self.signature_size is not None else digest.ecdsa


@dataclass(frozen=True, slots=True)
class Recipient:
    thumbprint: str
    key: rsa.RSAPublicKey
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


def signed_data(signer: Signer, digest: Digest, content: Body, *, with_cert: bool, detached: bool = False) -> Body:
    """CMS SignedData (RFC 5652 §5) over ``content``, as a stream.

    With an RSA key the signature's size is known up front, so the content is hashed while it streams
    out and the SignerInfo follows it; otherwise (ECDSA, detached) the content is hashed first.
    """
    time_attr = _signing_time_attr()
    certificates = signer.certificates if with_cert else b""
    info_head = signer.info_head(digest)
    algorithm = signer.signature_algorithm(digest)

    def tail(message_digest: bytes, signature: bytes | None) -> bytes:
        # DER: a SET OF in the order of its encodings (a longer digest moves messageDigest last).
        signed = b"".join(sorted((_CONTENT_TYPE_ATTR, time_attr, digest.attribute(message_digest), _CAPABILITIES_ATTR)))
        if signature is None:
            signature = signer.sign(hdr(0x31, len(signed)) + signed, digest)
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
        end = tail(hashed.digest(), None)
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
        end = tail(hashed.digest(), None)
        if len(end) != tail_size:  # the lengths above are already out: never emit inconsistent DER
            raise RuntimeError(f"SignerInfo of {len(end)} bytes, {tail_size} announced")
        yield end

    return Body(len(start) + content.length + tail_size, stream)


def enveloped_data(
    recipient: Recipient, cipher: tuple[type[algorithms.AES128] | type[algorithms.AES256], int], plain: Body
) -> Body:
    """CMS EnvelopedData (RFC 5652 §6) for one RSA key-transport recipient, AES-CBC, as a stream."""
    algorithm, bits = cipher
    key, iv = os.urandom(bits // 8), os.urandom(16)
    transport = tlv(0x30, _V0, recipient.issuer_and_serial, _RSA, tlv(0x04, recipient.key.encrypt(key, _PKCS1)))
    padded = (plain.length // 16 + 1) * 16  # PKCS #7 padding always adds 1 to 16 bytes
    content_info = _DATA + tlv(0x30, _AES[bits], tlv(0x04, iv)) + hdr(0x80, padded)
    fields = _V0 + tlv(0x31, transport) + hdr(0x30, len(content_info) + padded) + content_info
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
