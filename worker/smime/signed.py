"""CMS SignedData (RFC 5652 §5) from cryptography's primitives, streamed: BlobSign's and ClearSign's signature.

The DER is what cryptography's PKCS7 builders emit (same attributes, order and algorithm identifiers; with
RSA byte-identical within the same second: tests/test_cms.py), but an RSA-signed body streams through the
hash into the output; RSASSA-PSS (RFC 4056) and the signer's intermediate CAs are the S/MIME 4.0 / AS2
additions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from worker.identity.keys import PrivateKey, SigningIdentity
from worker.smime import mime
from worker.smime.body import EAGER, Body
from worker.smime.der import content_info_start, hdr, oid, tlv
from worker.smime.identifiers import (
    AES,
    DATA,
    PKCS1,
    RSA,
    V1,
    Digest,
    issuer_and_serial,
    pss_padding,
    rsassa_pss_identifier,
)

_SIGNED_DATA = oid("1.2.840.113549.1.7.2")
_CONTENT_TYPE_ATTR = tlv(0x30, oid("1.2.840.113549.1.9.3"), tlv(0x31, DATA))
_SIGNING_TIME = oid("1.2.840.113549.1.9.5")
# RFC 5751 §2.5.2 SMIMECapabilities, as cryptography's builder announces them.
_CAPABILITIES_ATTR = tlv(
    0x30,
    oid("1.2.840.113549.1.9.15"),
    tlv(0x31, tlv(0x30, *(tlv(0x30, AES[bits]) for bits in (256, 192, 128)))),
)


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
        return V1 + self.issuer_and_serial + digest.identifier

    def sign(self, data: bytes, digest: Digest, *, pss: bool = False) -> bytes:
        key: PrivateKey = self.identity.key
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, pss_padding(digest) if pss else PKCS1, digest.hasher)
        return key.sign(data, digest.ecdsa_signature)

    def signature_algorithm(self, digest: Digest, *, pss: bool = False) -> bytes:
        if self.signature_size is None:
            return digest.ecdsa
        return rsassa_pss_identifier(digest) if pss else RSA


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
            encap = tlv(0x30, DATA)
        else:
            octets = hdr(0x04, content.length)
            explicit = hdr(0xA0, len(octets) + content.length)
            size = len(DATA) + len(explicit) + len(octets) + content.length
            encap = hdr(0x30, size) + DATA + explicit + octets
        fields = V1 + tlv(0x31, digest.identifier) + encap
        size = len(fields) + (0 if detached else content.length) + tail_size
        return content_info_start(_SIGNED_DATA, size) + fields

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
