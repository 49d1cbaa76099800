"""`sendpipe send`: publish payloads to a send port as an upstream producer would."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from worker import settings
from worker.errors import Code, UsageError
from worker.ops import send
from worker.settings import BrokerSettings


def register(sub: Any) -> None:
    """Add `send` to the `sendpipe` parser."""
    snd = sub.add_parser(
        "send",
        help="Publish payloads to a send port as an upstream producer would (confirmed).",
        description="Publish payloads to sendpipe.outbound as an upstream producer would, with publisher confirms.",
    )
    snd.add_argument("--port", required=True, help="send port name (the routing key)")
    snd.add_argument("--content-type", default="application/octet-stream", help="payload MIME type")
    snd.add_argument("--message-id", help="message id (only with one FILE; default: a new UUID per file)")
    snd.add_argument("files", type=Path, nargs="+", metavar="FILE")
    snd.set_defaults(func=cmd_send)


def cmd_send(args: argparse.Namespace) -> int:
    if args.message_id and len(args.files) > 1:
        raise UsageError("--message-id needs exactly one FILE", code=Code.USAGE)
    brk = settings.load(BrokerSettings)

    def sent(path: Path, message_id: str) -> None:
        print(f"sent {path} as {message_id} to port {args.port}")

    coro = send.send_files(
        brk, args.port, args.files, content_type=args.content_type, message_id=args.message_id, on_sent=sent
    )
    asyncio.run(coro)
    return 0
