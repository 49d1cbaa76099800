"""CMS AuthEnvelopedData (RFC 5083) with AES-GCM (RFC 5084): S/MIME 4.0's authenticated encryption."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

from cryptography.hazmat.primitives.ciphers import AEADEncryptionContext, Cipher, algorithms, modes

from worker.smime import mime
from worker.smime.body import EAGER, Body
from worker.smime.der import content_info_start, hdr, integer, oid, tlv
from worker.smime.identifiers import DATA, V0
from worker.smime.recipients import Recipient, recipient_infos

_AUTH_ENVELOPED_DATA = oid("1.2.840.113549.1.9.16.1.23")  # RFC 5083 §1 id-ct-authEnvelopedData
_AES_GCM = {128: oid("2.16.840.1.101.3.4.1.6"), 256: oid("2.16.840.1.101.3.4.1.46")}  # RFC 5084 §3.2
_GCM_NONCE, _GCM_TAG = 12, 16


def gcm_parameters(nonce: bytes) -> bytes:
    """The content-encryption algorithm's parameters for AES-GCM (RFC 5084 §3.2)::

        GCMParameters ::= SEQUENCE {
            aes-nonce        OCTET STRING,  -- recommended size is 12 octets
            aes-ICVlen       AES-GCM-ICVlen DEFAULT 12 }
        AES-GCM-ICVlen ::= INTEGER (12 | 13 | 14 | 15 | 16)

    A 12-octet nonce and the full 16-octet tag, which is not the default and so is written out.
    """
    return tlv(0x30, tlv(0x04, nonce), integer(_GCM_TAG))


def auth_enveloped_data(recipients: Sequence[Recipient], bits: int, plain: Body, *, oaep: bool = False) -> Body:
    """CMS AuthEnvelopedData (RFC 5083 §2.1) with AES-GCM (RFC 5084), for ``recipient_infos``' recipients::

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
    infos, _ = recipient_infos(recipients, key, oaep=oaep)  # AuthEnvelopedData: version 0 always
    mac = tlv(0x04, bytes(_GCM_TAG))  # its size; the tag itself is known once the content is encrypted
    content_info = DATA + tlv(0x30, _AES_GCM[bits], gcm_parameters(nonce)) + hdr(0x80, plain.length)
    fields = V0 + infos + hdr(0x30, len(content_info) + plain.length) + content_info
    size = len(fields) + plain.length + len(mac)
    start = content_info_start(_AUTH_ENVELOPED_DATA, size) + fields

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
