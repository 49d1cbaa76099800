"""Types of the C module built from _crlf.c (base64 text cut into CRLF lines)."""

from _typeshed import ReadableBuffer

def crlf_lines(text: ReadableBuffer, width: int, /) -> bytes: ...
