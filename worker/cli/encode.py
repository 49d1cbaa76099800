"""`sendpipe encode`: a send port's pipeline offline, writing what the partner receives."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from worker.cli import bootstrap
from worker.errors import Code, ConfigError
from worker.message import Message
from worker.pipeline.catalogue import build_pipeline


def register(sub: Any) -> None:
    """Add `encode` to the `sendpipe` parser."""
    enc = sub.add_parser(
        "encode",
        help="Run a send port's pipeline offline and write the protected MIME entity.",
        description="Run a send port's pipeline offline, as this host instance would, and "
        "write the protected MIME entity the partner will receive.",
    )
    enc.add_argument("--port", required=True, help="send port name")
    enc.add_argument("--content-type", default="application/octet-stream", help="payload MIME type")
    enc.add_argument("-o", "--output", type=Path, help="output file (default: stdout)")
    enc.add_argument("file", type=Path, help="payload file")
    enc.set_defaults(func=cmd_encode)


def cmd_encode(args: argparse.Namespace) -> int:
    _, _, config, store = bootstrap.load_common(need_host=False)
    if args.port not in config.send_ports:
        raise ConfigError(
            f"send port {args.port!r} is not in the config; ports: {', '.join(sorted(config.send_ports))}",
            code=Code.UNKNOWN_SEND_PORT,
        )
    pipeline = build_pipeline(config, args.port, store)
    body = args.file.read_bytes()
    result = pipeline.run(
        Message(
            body=body,
            message_id=args.file.name,
            send_port=args.port,
            content_type=args.content_type,
            headers={"sendpipe-filename": args.file.name},
        )
    )
    if args.output:
        args.output.write_bytes(result.body)
    else:
        sys.stdout.buffer.write(result.body)
        sys.stdout.buffer.flush()
    return 0
