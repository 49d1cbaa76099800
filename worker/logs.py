"""structlog set-up: one JSON object per line (or console), stdlib records (aio-pika, aiormq) included."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

# Keys whose values must never reach a log line, whatever a caller passes by mistake.
_SECRET_KEYS = {"password", "store_password", "amqp_url", "key", "private_key", "body", "payload"}


def _redact(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    for key in _SECRET_KEYS.intersection(event):
        event[key] = "[redacted]"
    return event


def configure(log_format: str = "json", level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog and route stdlib logging through the same processors (one format everywhere)."""
    out = stream or sys.stdout
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,  # per-message context bound by the consumer
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
        _redact,
    ]
    if log_format == "json":
        # No locals in tracebacks: they could hold payloads or key material.
        renderer: Processor = structlog.processors.JSONRenderer()
        tail: list[Processor] = [
            structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False)),
        ]
    else:
        renderer = structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
        tail = []
    numeric = logging.getLevelName(level.upper())
    # Our own lines skip stdlib logging (about 10% of a small message's CPU); the libraries' records
    # go through the same processors via ProcessorFormatter, so every line has one format.
    structlog.configure(
        processors=[*shared, *tail, renderer],
        logger_factory=structlog.WriteLoggerFactory(file=out),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail, renderer],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # aiormq and aio-pika log every frame and message (payload bytes included) at debug: never go
    # below INFO for them, whatever the level, so no payload can reach a log line.
    for name in ("aio_pika", "aiormq", "pamqp"):
        logging.getLogger(name).setLevel(max(numeric, logging.INFO))
