"""The few DER encodings (ITU-T X.690) the CMS writer needs: tag-length-value, OIDs, integers, ContentInfo."""

from __future__ import annotations

NULL = b"\x05\x00"


def hdr(tag: int, length: int) -> bytes:
    """A DER tag and definite length (X.690 §8.1)."""
    if length < 0x80:
        return bytes((tag, length))
    if length < 0x10000:  # the common long forms, without int.to_bytes
        return bytes((tag, 0x81, length)) if length < 0x100 else bytes((tag, 0x82, length >> 8, length & 0xFF))
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size


def tlv(tag: int, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return hdr(tag, len(body)) + body


def oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray((40 * arcs[0] + arcs[1],))
    for arc in arcs[2:]:
        group = [arc & 0x7F]
        while arc := arc >> 7:
            group.append(0x80 | (arc & 0x7F))
        out.extend(reversed(group))
    return tlv(0x06, bytes(out))


def integer(value: int) -> bytes:
    size = (value if value >= 0 else ~value).bit_length() // 8 + 1  # minimal two's complement
    return tlv(0x02, value.to_bytes(size, "big", signed=True))


def content_info_start(content_type: bytes, size: int) -> bytes:
    """The headers of a ContentInfo (RFC 5652 §3) whose content, a SEQUENCE of ``size`` bytes, follows::

        ContentInfo ::= SEQUENCE {
            contentType ContentType,
            content [0] EXPLICIT ANY DEFINED BY contentType }

    The streaming writers know every length before the content exists, so the headers go out first.
    """
    sequence = hdr(0x30, size)
    explicit = hdr(0xA0, len(sequence) + size)
    return hdr(0x30, len(content_type) + len(explicit) + len(sequence) + size) + content_type + explicit + sequence
