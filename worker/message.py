"""The message as the pipeline sees it: an immutable value, free of any broker type."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

DEFAULT_CONTENT_TYPE = "application/octet-stream"

# Input headers that steer the pipeline (SPEC "Messages"); everything else passes through.
H_ENCRYPTION_THUMBPRINT = "sendpipe-encryption-thumbprint"
H_FILENAME = "sendpipe-filename"


@dataclass(frozen=True, slots=True)
class Message:
    """One outbound message on its way through the stages.

    ``body`` is the payload until a stage replaces it with the MIME entity it built; stages return
    a new Message (``evolve``) rather than mutating, like structlog's event dicts passed down a chain.
    """

    body: bytes
    message_id: str
    send_port: str
    content_type: str = DEFAULT_CONTENT_TYPE
    correlation_id: str | None = None
    headers: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # Set by the encoder: the entity's own Content-Type and the certificates used.
    entity_content_type: str | None = None
    signer_thumbprint: str | None = None
    recipient_thumbprint: str | None = None
    # When signed: the RFC 4130 §7.3.1 MIC over the exact signed bytes, "<base64 digest>, sha-256".
    mic: str | None = None

    def evolve(self, **changes: Any) -> Message:
        return dataclasses.replace(self, **changes)

    def header_str(self, name: str) -> str | None:
        """A header as text (AMQP long strings may arrive as bytes), or None when absent."""
        value = self.headers.get(name)
        if value is None:
            return None
        if isinstance(value, bytes | bytearray):
            return bytes(value).decode("utf-8", "replace")
        return value if isinstance(value, str) else repr(value)


@dataclass(frozen=True, slots=True)
class Outbound:
    """A message to publish: body, routing and the AMQP properties we set (no broker type: routing builds it)."""

    body: bytes
    routing_key: str
    message_id: str | None = None
    correlation_id: str | None = None
    content_type: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
