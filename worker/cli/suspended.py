"""`sendpipe suspended list/show/resume/discard`: the host's suspended messages."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from worker import settings
from worker.broker import session as broker
from worker.cli.table import print_table
from worker.errors import Code, ConfigError, UsageError
from worker.ops import suspended
from worker.settings import BrokerSettings, InstanceSettings


def register(sub: Any) -> None:
    """Add `suspended` and its actions to the `sendpipe` parser."""
    sus = sub.add_parser(
        "suspended",
        help="Operate on this host's suspended messages: list, show, resume, discard.",
        description="Operate on the suspended messages of SENDPIPE_HOST.",
    )
    ops = sus.add_subparsers(metavar="ACTION")
    lst = ops.add_parser(
        "list",
        help="List suspended messages: id, send port, error code, age.",
        description="List suspended messages: id, send port, error code, attempts, age.",
    )
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    lst.set_defaults(func=cmd_suspended, action="list", ids=[], all=False)
    shw = ops.add_parser(
        "show",
        help="Show one suspended message's properties and headers (not its body).",
        description="Show one suspended message's properties and headers (not its body).",
    )
    shw.add_argument("ids", nargs=1, metavar="ID")
    shw.add_argument("--save-body", type=Path, help="write the original payload to this file")
    shw.set_defaults(func=cmd_suspended, action="show", all=False)
    for action, text in (
        ("resume", "Re-run the whole pipeline for suspended messages (publish them back)."),
        ("discard", "Delete suspended messages for good."),
    ):
        p = ops.add_parser(action, help=text, description=text)
        p.add_argument("ids", nargs="*", metavar="ID")
        p.add_argument("--all", action="store_true", help="every suspended message of the host")
        p.set_defaults(func=cmd_suspended, action=action)


def cmd_suspended(args: argparse.Namespace) -> int:
    inst = settings.load(InstanceSettings)
    if not inst.host:
        raise ConfigError("SENDPIPE_HOST is required: whose suspended queue to open", code=Code.SETTINGS_INVALID)
    if args.action in {"resume", "discard"} and not (args.ids or args.all):
        raise UsageError(f"{args.action} needs message ids or --all", code=Code.USAGE)
    return asyncio.run(_suspended(settings.load(BrokerSettings), inst.host, args))


async def _suspended(brk: BrokerSettings, host: str, args: argparse.Namespace) -> int:
    session = await broker.connect(brk, name=f"sendpipe-suspended-{host}")
    wanted, found = set(args.ids), set[str]()
    rows: list[dict[str, Any]] = []  # what a listing shows, never the bodies (memory: one message)
    acted: list[str] = []

    def visit(item: suspended.Suspended) -> suspended.Action:
        chosen = args.all or (item.id in wanted and item.id not in found)
        if args.action == "list":
            rows.append({**item.details(), "attempts": item.header("sendpipe-attempts"), "age": item.age()})
            return suspended.Action.KEEP
        if not chosen:
            return suspended.Action.KEEP
        found.add(item.id)
        acted.append(item.id)
        if args.action == "show":
            json.dump(item.details(), sys.stdout, indent=2, default=str)
            print()
            if args.save_body:
                args.save_body.write_bytes(item.inbound.body)
            return suspended.Action.STOP
        print(f"{'resumed' if args.action == 'resume' else 'discarded'} {item.id}"
              + (f" to port {item.send_port}" if args.action == "resume" else ""))  # fmt: skip
        return suspended.Action.RESUME if args.action == "resume" else suspended.Action.DISCARD

    try:
        await suspended.scan(session, host, visit, done=lambda: not args.all and bool(wanted) and wanted <= found)
    finally:
        await session.close()
        if args.action in {"resume", "discard"} and acted:
            _audit({"resume": "suspended.resumed", "discard": "suspended.discarded"}[args.action], host, acted)
    if args.action == "list":
        _list(rows, args.json)
    missing = wanted - found
    for mid in sorted(missing):
        print(f"not found: {mid}", file=sys.stderr)
    return 1 if missing else 0


def _audit(event: str, host: str, ids: list[str]) -> None:
    """SPEC: every resume and discard is logged, with who did it (one JSON line on stderr)."""
    line = {"event": event, "host": host, "by": "cli", "user": getpass.getuser(), "count": len(ids), "ids": ids[:1000]}
    print(json.dumps(line), file=sys.stderr)


def _list(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        json.dump(rows, sys.stdout, indent=2, default=str)
        print()
        return
    print_table(
        ["id", "send port", "error code", "attempts", "age"],
        [[str(r["message_id"] or "(none)"), r["send_port"], r["error_code"], r["attempts"], r["age"]] for r in rows],
    )
    print(f"{len(rows)} suspended")
