"""Operator commands of the CLI: check, send (more join here: suspended, demo, health)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from worker import settings
from worker.broker import session as broker
from worker.broker import topology
from worker.cli import bootstrap
from worker.config.model import Config
from worker.errors import Code, ConfigError, SendpipeError, UsageError
from worker.identity.store import CertificateStore
from worker.message import Outbound
from worker.ops import suspended
from worker.pipeline import limits
from worker.pipeline.catalogue import build_pipeline
from worker.pipeline.preflight import Finding, preflight
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


def cmd_check(args: argparse.Namespace) -> int:
    inst, _, config, store = bootstrap.load_common(need_host=True)
    findings = preflight(config, store, inst.host or "", warn_days=inst.expiry_warning_days)
    problems = [
        Finding("warning", "store", store.account, "-", str(store.path), "file unusable", p, Code.STORE_FILE)
        for p in store.problems
    ]
    rows = findings + problems + _settings_findings()
    failed = any(f.level == "error" for f in rows)
    limit = settings.load(BrokerSettings).broker_max_message_bytes if not failed else None
    ceilings = _ceilings(config, store, inst.host or "", limit) if limit else {}
    if args.json:
        json.dump(
            {
                "host": inst.host,
                "service_account": store.account,
                "ok": not failed,
                "findings": [dataclasses.asdict(f) for f in rows],
                "broker_max_message_bytes": limit,
                "largest_payload_bytes": ceilings,
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
        if ceilings:
            print(f"largest payload per send port under SENDPIPE_BROKER_MAX_MESSAGE_BYTES ({limit} bytes):")
            _table(["send port", "largest payload"], [[p, _size(n)] for p, n in ceilings.items()])
        print("FAILED" if failed else "OK")
    return 1 if failed else 0


def _settings_findings() -> list[Finding]:
    """SPEC: unknown SENDPIPE_* variables are named (warning); broker settings that would refuse `run`."""
    out = [
        Finding("warning", "settings", name, "-", "environment", "unknown variable", "no setting has this name")
        for name in settings.unknown_variables()
    ]
    try:
        settings.load(BrokerSettings)
    except SendpipeError as exc:
        out.append(Finding("error", "settings", "broker", "-", "environment", exc.code, exc.message, exc.code))
    return out


def _ceilings(config: Config, store: CertificateStore, host: str, limit: int) -> dict[str, int | None]:
    result: dict[str, int | None] = {}
    for port in sorted(config.ports_of(host)):
        try:
            pipeline = build_pipeline(config, port, store)
        except SendpipeError:
            result[port] = None
            continue
        result[port] = limits.largest_payload(pipeline, port, limit)
    return result


def _size(n: int | None) -> str:
    return "unknown (certificates missing)" if n is None else f"{n} bytes ({n / (1 << 20):.2f} MiB)"


def _table(head: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def cmd_send(args: argparse.Namespace) -> int:
    if args.message_id and len(args.files) > 1:
        raise UsageError("--message-id needs exactly one FILE", code=Code.USAGE)
    brk = settings.load(BrokerSettings)
    return asyncio.run(_send(brk, args))


async def _send(brk: BrokerSettings, args: argparse.Namespace) -> int:
    session = await broker.connect(brk, name="sendpipe-send")
    try:
        for path in args.files:
            message_id = args.message_id or str(uuid.uuid4())
            out = Outbound(
                path.read_bytes(),
                args.port,
                message_id=message_id,
                content_type=args.content_type,
                headers={"sendpipe-filename": path.name},
            )
            await session.publish(topology.OUTBOUND, out)
            print(f"sent {path} as {message_id} to port {args.port}")
    finally:
        await session.close()
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    inst = settings.load(InstanceSettings)
    if inst.health_file is None:
        raise ConfigError("SENDPIPE_HEALTH_FILE is not set: no heartbeat to check", code=Code.SETTINGS_INVALID)
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
    _table(
        ["id", "send port", "error code", "attempts", "age"],
        [[str(r["message_id"] or "(none)"), r["send_port"], r["error_code"], r["attempts"], r["age"]] for r in rows],
    )
    print(f"{len(rows)} suspended")
