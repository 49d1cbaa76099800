"""MIME framing written by hand (RFC 2045/2046/5751), byte-exact: CRLF line ends, no re-canonicalisation.

We do not use ``email`` or cryptography's ``Encoding.SMIME``: both rewrite bare LF to CRLF, which
corrupts binary payloads, and both are much slower than framing the bytes ourselves.
"""

from __future__ import annotations

import binascii
import re
import secrets
from collections.abc import Sequence
from urllib.parse import quote

from worker.errors import MessageError

CRLF = b"\r\n"
_B64_LINE = 76  # RFC 2045 §6.8: encoded lines of at most 76 characters
# RFC 2045 §5.1 token / tspecials, loosely: type/subtype plus parameters, printable ASCII only.
# Only SP/HTAB as whitespace: CR, LF (and Unicode line separators) would inject header lines.
_CONTENT_TYPE = re.compile(
    r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+([ \t]*;[ \t]*[\x21-\x7e][\x20-\x7e]*)?", re.ASCII
)

Headers = Sequence[tuple[str, str]]


def b64_lines(data: bytes) -> bytes:
    """Base64 in 76-character CRLF-terminated lines, in one pass over the data (no per-line calls)."""
    if not data:
        return b""
    encoded = binascii.b2a_base64(data, newline=False)
    view = memoryview(encoded)
    lines = [view[i : i + _B64_LINE] for i in range(0, len(encoded), _B64_LINE)]
    return CRLF.join(lines) + CRLF


def encode_body(data: bytes, transfer_encoding: str) -> bytes:
    """Apply a Content-Transfer-Encoding (RFC 2045 §6); ``binary`` leaves the bytes as they are."""
    if transfer_encoding == "base64":
        return b64_lines(data)
    if transfer_encoding == "quoted-printable":
        # istext=False encodes CR and LF themselves, so binary survives; soft breaks become CRLF.
        return binascii.b2a_qp(data, quotetabs=True, istext=False, header=False).replace(b"=\n", b"=\r\n")
    return data


def entity(headers: Headers, body: bytes) -> bytes:
    """A MIME entity: header lines, an empty line, the body (RFC 2045 §3)."""
    head = CRLF.join(f"{name}: {value}".encode("ascii") for name, value in headers)
    return b"".join((head, CRLF, CRLF, body))


def checked_content_type(value: str) -> str:
    """The payload's declared type, refused if it could inject header lines or is not a MIME type."""
    value = value.strip()
    if len(value) > 900 or not _CONTENT_TYPE.fullmatch(value):
        raise MessageError(
            f"content type {value[:60]!r} is not a MIME type (type/subtype[; parameters], printable ASCII)",
            code="invalid-content-type",
        )
    return value


def disposition(filename: str | None) -> str:
    """Content-Disposition: attachment with a filename made safe (RFC 2183, RFC 2231 for non-ASCII)."""
    if not filename:
        return "attachment"
    name = re.sub(r"[\x00-\x1f\x7f\"\\]", "_", filename.replace("\\", "/").rsplit("/", 1)[-1])[:200] or "payload"
    if name.isascii():
        return f'attachment; filename="{name}"'
    return f"attachment; filename*=utf-8''{quote(name, safe='')}"


def boundary_for(*parts: bytes) -> str:
    """A multipart boundary that does not occur in any part (RFC 2046 §5.1.1)."""
    while True:
        candidate = f"----=_sendpipe_{secrets.token_hex(16)}"
        marker = b"--" + candidate.encode()
        if not any(marker in part for part in parts):
            return candidate


def multipart(boundary: str, parts: Sequence[bytes], preamble: bytes = b"") -> bytes:
    """The body of a multipart entity; the CRLF before each delimiter belongs to it (RFC 2046 §5.1.1)."""
    delimiter = CRLF + b"--" + boundary.encode()
    out = [preamble, b"--", boundary.encode()]
    for i, part in enumerate(parts):
        if i:
            out.append(delimiter)
        out.extend((CRLF, part))
    out.extend((delimiter, b"--", CRLF))
    return b"".join(out)
