"""Publishing payloads to a send port as an upstream producer would: confirmed, one message per file."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from worker.broker import session as broker
from worker.broker import topology
from worker.message import Outbound
from worker.settings import BrokerSettings


async def send_files(
    brk: BrokerSettings,
    port: str,
    files: Sequence[Path],
    *,
    content_type: str,
    message_id: str | None,
    on_sent: Callable[[Path, str], None],
) -> None:
    """Each file to ``sendpipe.outbound`` with ``port`` as routing key, publisher-confirmed (an input over
    the broker's size limit is refused before anything is sent: ``message-too-large``)."""
    session = await broker.connect(brk, name="sendpipe-send")
    try:
        for path in files:
            mid = message_id or str(uuid.uuid4())
            out = Outbound(
                path.read_bytes(), port, message_id=mid, content_type=content_type,
                headers={"sendpipe-filename": path.name},
            )  # fmt: skip
            await session.publish(topology.OUTBOUND, out)
            on_sent(path, mid)
    finally:
        await session.close()
