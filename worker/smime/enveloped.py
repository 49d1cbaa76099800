"""CMS EnvelopedData (RFC 5652 §6) with AES-CBC (RFC 3565), streamed: the classic S/MIME encryption."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

from cryptography.hazmat.primitives.ciphers import Cipher, modes

from worker.smime import mime
from worker.smime.body import EAGER, Body
from worker.smime.der import content_info_start, hdr, integer, oid, tlv
from worker.smime.identifiers import AES, DATA, V0, CipherSpec
from worker.smime.recipients import Recipient, recipient_infos

_ENVELOPED_DATA = oid("1.2.840.113549.1.7.3")


def enveloped_data(recipients: Sequence[Recipient], cipher: CipherSpec, plain: Body, *, oaep: bool = False) -> Body:
    """CMS EnvelopedData (RFC 5652 §6.1), AES-CBC, as a stream::

        EnvelopedData ::= SEQUENCE {
            version CMSVersion,
            originatorInfo [0] IMPLICIT OriginatorInfo OPTIONAL,
            recipientInfos RecipientInfos,
            encryptedContentInfo EncryptedContentInfo,
            unprotectedAttrs [1] IMPLICIT UnprotectedAttributes OPTIONAL }
        EncryptedContentInfo ::= SEQUENCE {
            contentType ContentType,
            contentEncryptionAlgorithm ContentEncryptionAlgorithmIdentifier,
            encryptedContent [0] IMPLICIT EncryptedContent OPTIONAL }

    AES-128, AES-192 or AES-256 in CBC mode (RFC 3565 §4.1: ``id-aes192-CBC``, parameters the IV); the
    recipients are ``recipient_infos``' (the partner first); version 0 when every RecipientInfo is
    (key transport), else 2 (an EC recipient's kari). No originatorInfo, no unprotectedAttrs.
    """
    algorithm, bits = cipher
    key, iv = os.urandom(bits // 8), os.urandom(16)
    infos, v0 = recipient_infos(recipients, key, oaep=oaep)
    padded = (plain.length // 16 + 1) * 16  # PKCS #7 padding always adds 1 to 16 bytes
    content_info = DATA + tlv(0x30, AES[bits], tlv(0x04, iv)) + hdr(0x80, padded)
    version = V0 if v0 else integer(2)
    fields = version + infos + hdr(0x30, len(content_info) + padded) + content_info
    size = len(fields) + padded
    start = content_info_start(_ENVELOPED_DATA, size) + fields

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
