"""MIME framing written by hand (RFC 2045/2046/5751), byte-exact: CRLF line ends, no re-canonicalisation.

We use neither ``email`` nor cryptography's S/MIME serialisation: both rewrite bare LF to CRLF, which
corrupts binary payloads, and both are much slower than framing the bytes ourselves.
"""

from __future__ import annotations

import binascii
import functools
import io
import re
import secrets
from collections.abc import Iterable, Iterator, Sequence
from urllib.parse import quote

import pybase64

from worker.errors import Code, MessageError
from worker.smime._crlf import crlf_lines

CRLF = b"\r\n"
_B64_LINE = 76  # RFC 2045 §6.8: encoded lines of at most 76 characters
_LINE_IN = 57  # input bytes of one full line
_BLOCK_LINES = 1024  # lines encoded per step: ~57 KiB in, ~78 KiB out, cache-sized
_BLOCK = _LINE_IN * _BLOCK_LINES
_SMALL = 256 * 1024  # below this a plain join is cheaper than a preallocated buffer
STREAM_ABOVE = _BLOCK  # smaller bodies are encoded in one call rather than streamed
# RFC 2045 §5.1 token / tspecials, loosely: type/subtype plus parameters, printable ASCII only.
# Only SP/HTAB as whitespace: CR, LF (and Unicode line separators) would inject header lines.
_CONTENT_TYPE = re.compile(
    r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+([ \t]*;[ \t]*[\x21-\x7e][\x20-\x7e]*)?", re.ASCII
)

Headers = Sequence[tuple[str, str]]
Chunk = bytes | bytearray | memoryview


def b64_length(size: int) -> int:
    """Length of ``b64_lines`` output for ``size`` input bytes (known before encoding, for DER lengths)."""
    return 4 * -(-size // 3) + 2 * -(-size // _LINE_IN)


def b64_lines(data: Chunk) -> bytes:
    """Base64 in 76-character CRLF-terminated lines (RFC 2045 §6.8)."""
    return _lines(memoryview(data))


def b64_stream(chunks: Iterable[Chunk]) -> Iterator[bytes]:
    """``b64_lines`` of the concatenated chunks, produced block by block (no copy of the whole input).

    Whole blocks are encoded straight from the caller's buffers; only a block's worth is ever held.
    """
    pending = bytearray()
    for chunk in chunks:
        view = memoryview(chunk)
        if pending:
            take = min(_BLOCK - len(pending), len(view))
            pending += view[:take]
            view = view[take:]
            if len(pending) < _BLOCK:
                continue
            yield _block(pending)
            pending.clear()
        whole = len(view) - len(view) % _BLOCK
        for start in range(0, whole, _BLOCK):
            yield _block(view[start : start + _BLOCK])
        pending += view[whole:]
    if pending:
        yield _lines(memoryview(pending))


def _block(data: Chunk) -> bytes:
    return _lines(memoryview(data))  # _BLOCK_LINES whole lines


def _lines(view: memoryview) -> bytes:
    # Base64 is SIMD (pybase64: ~20x binascii, which made base64 half the encoder's time at 1 MiB and
    # above); the lines are cut in C: per line in Python (struct + join) it cost 25x the base64 itself
    # (worker/smime/_crlf.c, docs/performance.md).
    return crlf_lines(pybase64.b64encode(view), _B64_LINE)


def assemble(size: int, chunks: Iterable[Chunk]) -> bytes:
    """Concatenate chunks totalling ``size`` bytes into one ``bytes``, allocated once and never copied whole.

    ``b"".join`` of a large list holds the parts and the result at once; here the result is written in
    place (``BytesIO.getvalue`` hands its buffer over without a copy when it is exactly full).
    """
    if size <= _SMALL:
        out = b"".join(chunks)
    else:
        buf = io.BytesIO()
        buf.seek(size - 1)
        buf.write(b"\0")
        buf.seek(0)
        for chunk in chunks:
            buf.write(chunk)
        if buf.tell() != size:
            raise RuntimeError(f"assembled {buf.tell()} bytes, expected {size}")
        out = buf.getvalue()
    if len(out) != size:
        raise RuntimeError(f"assembled {len(out)} bytes, expected {size}")
    return out


def encode_body(data: bytes, transfer_encoding: str) -> bytes:
    """Apply a Content-Transfer-Encoding (RFC 2045 §6); ``binary`` leaves the bytes as they are."""
    if transfer_encoding == "base64":
        return b64_lines(data)
    if transfer_encoding == "quoted-printable":
        # istext=False encodes CR and LF themselves, so binary survives; soft breaks become CRLF.
        return binascii.b2a_qp(data, quotetabs=True, istext=False, header=False).replace(b"=\n", b"=\r\n")
    return data


def head(headers: Headers) -> bytes:
    """The header lines of an entity and the empty line that ends them (RFC 2045 §3)."""
    return _head(tuple(headers))


@functools.lru_cache(maxsize=512)  # the same few header sets, message after message
def _head(headers: tuple[tuple[str, str], ...]) -> bytes:
    return CRLF.join(f"{name}: {value}".encode("ascii") for name, value in headers) + CRLF + CRLF


def entity(headers: Headers, body: Chunk) -> bytes:
    """A MIME entity: header lines, an empty line, the body (RFC 2045 §3)."""
    return b"".join((head(headers), body))


@functools.lru_cache(maxsize=512)  # producers send the same few types; a refusal is not cached
def checked_content_type(value: str) -> str:
    """The payload's declared type, refused if it could inject header lines or is not a MIME type."""
    value = value.strip()
    if len(value) > 900 or not _CONTENT_TYPE.fullmatch(value):
        raise MessageError(
            f"content type {value[:60]!r} is not a MIME type (type/subtype[; parameters], printable ASCII)",
            code=Code.INVALID_CONTENT_TYPE,
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


def multipart_chunks(boundary: str, parts: Sequence[Chunk], preamble: bytes = b"") -> list[Chunk]:
    """The body of a multipart entity as the list of its pieces, the parts themselves not copied; the CRLF
    before each delimiter belongs to it (RFC 2046 §5.1.1)."""
    delimiter = CRLF + b"--" + boundary.encode()
    out: list[Chunk] = [preamble, b"--", boundary.encode()]
    for i, part in enumerate(parts):
        if i:
            out.append(delimiter)
        out.extend((CRLF, part))
    out.extend((delimiter, b"--", CRLF))
    return out
