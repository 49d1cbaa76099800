"""A byte budget for messages being processed: memory bounded by size, not only by the prefetch count.

Prefetch bounds how many deliveries an instance holds; with inputs up to 64 MiB and an encoder that
needs ~15x a large payload while it works (docs/performance.md), a count alone lets a burst of large
messages exhaust memory. Each message asks for its body size before it is processed:

- small messages (up to ``small_bytes``) never wait, so they keep flowing beside large ones;
- others wait in arrival order (FIFO, so a large one is not starved) until the bytes fit;
- one message larger than the whole budget runs once no other large message is in progress.

Pure asyncio, no I/O; ``in_use`` feeds the stats line.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator


class ByteBudget:
    """At most ``limit_bytes`` of large message bodies in progress at once (see the module docstring)."""

    def __init__(self, limit_bytes: int, small_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.small_bytes = small_bytes
        self.in_use = 0  # bytes of every message in progress, small ones included
        self._large_in_use = 0
        self._waiting: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    @contextlib.asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        large = size > self.small_bytes
        if large:
            await self._admit(size)
        self.in_use += size
        try:
            yield
        finally:
            self.in_use -= size
            if large:
                self._large_in_use -= size
                self._wake()

    def _fits(self, size: int) -> bool:
        return self._large_in_use == 0 or self._large_in_use + size <= self.limit_bytes

    async def _admit(self, size: int) -> None:
        if not self._waiting and self._fits(size):
            self._large_in_use += size
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((size, done))
        try:
            await done  # _wake has counted our bytes when it resolves us
        except asyncio.CancelledError:
            if done.done() and not done.cancelled():
                self._large_in_use -= size  # admitted and cancelled in the same tick: give it back
            with contextlib.suppress(ValueError):
                self._waiting.remove((size, done))
            self._wake()
            raise

    def _wake(self) -> None:
        while self._waiting and self._fits(self._waiting[0][0]):
            size, done = self._waiting.popleft()
            if not done.done():
                self._large_in_use += size
                done.set_result(None)

    @property
    def waiting(self) -> int:
        return len(self._waiting)
