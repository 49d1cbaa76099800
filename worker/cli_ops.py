"""Operator commands of the CLI: check, send (more join here: suspended, demo, health)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from worker import bootstrap, broker, settings
from worker.errors import SendpipeError
from worker.preflight import Finding, preflight
from worker.settings import BrokerSettings, InstanceSettings


def register(sub: Any) -> None:
    """Add the operator subcommands to the `sendpipe` parser."""
    chk = sub.add_parser(
        "check",
        help="Preflight this host instance: config, store and every certificate it needs.",
        description="Preflight this host instance: config, store and every certificate it needs; "
        "exit 1 on any error (warnings such as near expiry keep 0).",
    )
    chk.add_argument("--json", action="store_true", help="machine-readable output")
    chk.set_defaults(func=cmd_check)
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
    hlt = sub.add_parser(
        "health",
        help="Exit 0 if this instance's consumer is alive (fresh heartbeat file).",
        description="Exit 0 if this instance's consumer is alive: the heartbeat file "
        "(SENDPIPE_HEALTH_FILE) was touched within SENDPIPE_HEALTH_MAX_AGE_S; else exit 1.",
    )
    hlt.set_defaults(func=cmd_health)


def cmd_check(args: argparse.Namespace) -> int:
    inst, _, config, store = bootstrap.load_common(need_host=True)
    findings = preflight(config, store, inst.host or "", warn_days=inst.expiry_warning_days)
    problems = [
        Finding("warning", "store", store.account, "-", str(store.path), "file unusable", p, "store-file")
        for p in store.problems
    ]
    rows = findings + problems
    failed = any(f.level == "error" for f in rows)
    if args.json:
        json.dump(
            {
                "host": inst.host,
                "service_account": store.account,
                "ok": not failed,
                "findings": [dataclasses.asdict(f) for f in rows],
            },
            sys.stdout,
            indent=2,
        )
        print()
    else:
        print(f"host {inst.host}  service account {store.account}  store {store.path}  config {inst.config}")
        _table(
            ["level", "role", "for", "thumbprint", "looked in", "status"],
            [[f.level.upper(), f.role, f.subject, f.thumbprint, f.where, f.status] for f in rows],
        )
        for f in rows:
            if f.level != "ok" and f.detail:
                print(f"  {f.level}: {f.subject}: {f.detail}")
        print("FAILED" if failed else "OK")
    return 1 if failed else 0


def _table(head: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def cmd_send(args: argparse.Namespace) -> int:
    if args.message_id and len(args.files) > 1:
        raise SendpipeError("--message-id needs exactly one FILE", code="usage")
    brk = settings.load(BrokerSettings)
    return asyncio.run(_send(brk, args))


async def _send(brk: BrokerSettings, args: argparse.Namespace) -> int:
    session = await broker.connect(brk, name="sendpipe-send")
    try:
        for path in args.files:
            message_id = args.message_id or str(uuid.uuid4())
            out = broker.Outbound(
                path.read_bytes(),
                args.port,
                message_id=message_id,
                content_type=args.content_type,
                headers={"sendpipe-filename": path.name},
            )
            await session.publish(broker.OUTBOUND, out)
            print(f"sent {path} as {message_id} to port {args.port}")
    finally:
        await session.close()
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    inst = settings.load(InstanceSettings)
    if inst.health_file is None:
        raise SendpipeError("SENDPIPE_HEALTH_FILE is not set: no heartbeat to check", code="settings-invalid")
    try:
        age = time.time() - inst.health_file.stat().st_mtime
    except FileNotFoundError:
        print(f"unhealthy: no heartbeat at {inst.health_file} (consumer never started)")
        return 1
    if age > inst.health_max_age_s:
        print(f"unhealthy: heartbeat {age:.0f}s old (max {inst.health_max_age_s:.0f}s): consumer not running")
        return 1
    print(f"healthy: heartbeat {age:.1f}s old")
    return 0
