"""A message body still to be produced, by layer: its exact length up front, its bytes streamed or held.

The CMS writer needs every layer's length before the layer exists (DER lengths come first), and a
16 MiB message must not be held whole at every layer; a 1 KiB one must not pay for streaming either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain

from worker.smime import mime

EAGER = 256 * 1024  # bodies up to this size are built at once as bytes: no generator layers


@dataclass(frozen=True, slots=True)
class Body:
    """A body still to be produced: its exact length (for the DER and the output) and its pieces.

    A small body is simply its bytes (``data``): each layer is then one concatenation, which for a
    1 KiB message costs less than the streaming machinery that keeps a large one out of memory.
    """

    length: int
    chunks: Callable[[], Iterator[mime.Chunk]]  # may be called again: a second pass re-encodes
    data: bytes | None = None

    @classmethod
    def of(cls, *pieces: mime.Chunk) -> Body:
        length = sum(len(p) for p in pieces)
        if length <= EAGER:
            return cls.eager(b"".join(pieces))
        return cls(length, lambda: iter(pieces))

    @classmethod
    def eager(cls, data: bytes) -> Body:
        return cls(len(data), lambda: iter((data,)), data)

    def entity(self, headers: mime.Headers) -> Body:
        head = mime.head(headers)
        if self.data is not None and self.length <= EAGER:
            return Body.eager(head + self.data)
        return Body(len(head) + self.length, lambda: chain((head,), self.chunks()))

    def base64(self) -> Body:
        if self.length <= mime.STREAM_ABOVE:  # small: one call, no generators
            return Body.eager(mime.b64_lines(self.materialize()))
        return Body(mime.b64_length(self.length), lambda: mime.b64_stream(self.chunks()))

    def materialize(self) -> bytes:
        if self.data is not None:
            return self.data
        return mime.assemble(self.length, self.chunks())
