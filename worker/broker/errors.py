"""The broker library's exceptions mapped to sendpipe's, in one place (like httpx's ``map_httpcore_exceptions``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import aio_pika
import aiormq

from worker.errors import BrokerUnavailable, SendpipeError

# What the broker library raises when a connection or channel fails: refused/reset sockets, timeouts,
# AMQP errors, a channel the broker closed (a RuntimeError subclass), and the bare ``Exception()`` aiormq
# sets on the futures of a dying channel.
_LIBRARY_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    aio_pika.exceptions.AMQPException,
)


@contextlib.contextmanager
def mapped(operation: str) -> Iterator[None]:
    """Every broker call runs in here: the library's exceptions become ``BrokerUnavailable`` (like httpx's
    ``map_httpcore_exceptions``), so the rest of sendpipe never names an aiormq or aio-pika type."""
    try:
        yield
    except SendpipeError:
        raise
    except _LIBRARY_ERRORS as exc:
        raise BrokerUnavailable(f"{operation}: {describe(exc)}") from exc
    except Exception as exc:
        if type(exc) is not Exception:  # a bug of ours or the library's: not a broker condition
            raise
        raise BrokerUnavailable(f"{operation}: the channel closed") from exc


def describe(exc: BaseException) -> str:
    try:
        text = str(exc) or repr(exc)
    except Exception:  # some aiormq errors format their frame, which may be missing
        text = "(no detail)"
    return f"{type(exc).__name__}: {text}"[:300]
