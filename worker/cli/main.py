"""The `sendpipe` command line (SPEC): the parser, one module per command, errors as one line and exit 1."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from worker.cli import cert, check, encode, health, run, send, suspended, verify
from worker.demo import init as demo
from worker.errors import SendpipeError
from worker.ops import bindings


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        code: int = args.func(args)
    except SendpipeError as exc:
        print(f"sendpipe: error [{exc.code}]: {exc.message}", file=sys.stderr)
        return 1
    return code


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sendpipe",
        description="Sign and encrypt outbound messages as S/MIME (BizTalk-style send pipelines) from RabbitMQ.",
    )
    sub = p.add_subparsers(metavar="COMMAND")
    # The order of `sendpipe --help`: the host instance, operators' commands, then the tools.
    for command in (run, check, send, health, suspended, bindings, demo, encode, verify, cert):
        command.register(sub)
    return p


if __name__ == "__main__":
    raise SystemExit(main())
