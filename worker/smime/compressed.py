"""CMS CompressedData (RFC 3274), zlib: AS2's compression, before or after signing."""

from __future__ import annotations

import zlib

from worker.smime.body import Body
from worker.smime.der import oid, tlv
from worker.smime.identifiers import DATA, V0

_COMPRESSED_DATA = oid("1.2.840.113549.1.9.16.1.9")  # RFC 3274 §1.1 id-ct-compressedData
_ZLIB = tlv(0x30, oid("1.2.840.113549.1.9.16.3.8"))  # RFC 3274 §1.1 id-alg-zlibCompress, parameters absent


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
    encap = tlv(0x30, DATA, tlv(0xA0, octets))
    return Body.eager(tlv(0x30, _COMPRESSED_DATA, tlv(0xA0, tlv(0x30, V0, _ZLIB, encap))))
