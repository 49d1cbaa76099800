"""The largest payload each send port can carry under the broker's message size limit, measured.

RabbitMQ 4 refuses messages over ``max_message_size`` (16 MiB by default) by closing the channel, so a
protected entity must fit: a BlobSign + AES256 entity with a base64 body part is ~2.6x its payload
(base64 three times over, README "Message size ceilings"). Rather than a formula per layout, the
port's own pipeline encodes two probe payloads and the ceiling follows from the line through them:
every layout grows linearly with the payload (base64 4/3 plus CRLF per 76 characters; CMS adds
constant overhead). Probes are 0xFF bytes, the worst case for quoted-printable (=FF for each byte).
"""

from __future__ import annotations

from worker.errors import SendpipeError
from worker.message import Message
from worker.pipeline.stage import Pipeline

_PROBES = (32 * 1024, 160 * 1024)
_SAFETY_BYTES = 4096  # headers, line-break rounding and the entity's own MIME head vary a little


def largest_payload(pipeline: Pipeline, port: str, limit_bytes: int) -> int | None:
    """Bytes of the largest payload whose protected entity stays under ``limit_bytes``; None if the
    pipeline cannot run here (e.g. a certificate missing: preflight reports that)."""
    sizes: list[int] = []
    for n in _PROBES:
        probe = Message(body=b"\xff" * n, message_id="ceiling-probe", send_port=port)
        try:
            sizes.append(len(pipeline.run(probe).body))
        except SendpipeError:
            return None
    (x0, x1), (y0, y1) = _PROBES, sizes
    slope = (y1 - y0) / (x1 - x0)
    fixed = y0 - slope * x0
    ceiling = int((limit_bytes - _SAFETY_BYTES - fixed) / slope)
    return max(0, ceiling)
