"""`sendpipe check`: preflight of this host instance, the size ceilings, settings warnings."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from worker import settings
from worker.cli import bootstrap
from worker.cli.table import print_table
from worker.config.model import Config
from worker.errors import Code, SendpipeError
from worker.identity.store import CertificateStore
from worker.pipeline import limits
from worker.pipeline.catalogue import build_pipeline
from worker.pipeline.preflight import Finding, preflight
from worker.settings import BrokerSettings


def register(sub: Any) -> None:
    """Add `check` to the `sendpipe` parser."""
    chk = sub.add_parser(
        "check",
        help="Preflight this host instance: config, store and every certificate it needs.",
        description="Preflight this host instance: config, store and every certificate it needs; "
        "exit 1 on any error (warnings such as near expiry keep 0).",
    )
    chk.add_argument("--json", action="store_true", help="machine-readable output")
    chk.set_defaults(func=cmd_check)


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
        print_table(
            ["level", "role", "for", "thumbprint", "looked in", "status"],
            [[f.level.upper(), f.role, f.subject, f.thumbprint, f.where, _status(f)] for f in rows],
        )
        for f in rows:
            if f.level in {"warning", "error"} and f.detail:
                print(f"  {f.level}: {f.subject}: {f.detail}")
        if ceilings:
            print(f"largest payload per send port under SENDPIPE_BROKER_MAX_MESSAGE_BYTES ({limit} bytes):")
            print_table(["send port", "largest payload"], [[p, _size(n)] for p, n in ceilings.items()])
        print("FAILED" if failed else "OK")
    return 1 if failed else 0


def _status(f: Finding) -> str:
    # A scheduled certificate's status says when it takes over; the one in force since its `from` says since when.
    if f.takes_over and "takes over" not in f.status and f.status != "superseded":
        return f"{f.status} (in force since {f.takes_over})"
    if f.status == "superseded" and f.takes_over:
        return f"superseded (was from {f.takes_over})"
    return f.status


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
