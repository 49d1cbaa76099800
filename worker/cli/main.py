"""The `sendpipe` command line (SPEC): run, check, encode, send, suspended, demo, health."""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from worker import logs, settings
from worker.cli import bootstrap
from worker.cli import ops as cli_ops
from worker.demo import init as demo
from worker.errors import Code, ConfigError, SendpipeError
from worker.host.instance import HostInstance
from worker.host.supervisor import Supervisor
from worker.message import Message
from worker.ops import bindings
from worker.pipeline.catalogue import build_pipeline
from worker.pipeline.preflight import log_findings, preflight
from worker.pipeline.runtime import Runtime
from worker.settings import BrokerSettings


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
    run = sub.add_parser(
        "run",
        help="Run one host instance until SIGTERM/SIGINT, then drain and exit 0.",
        description="Run one host instance until SIGTERM/SIGINT, then drain and exit 0.",
    )
    run.set_defaults(func=cmd_run)
    cli_ops.register(sub)
    bindings.register(sub)
    demo.register(sub)
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
    return p


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


def cmd_run(args: argparse.Namespace) -> int:
    log = structlog.get_logger("sendpipe")
    try:
        inst, store_settings, config, store = bootstrap.load_common(need_host=True)
        brk = settings.load(BrokerSettings)
    except SendpipeError as exc:
        logs.configure("json")
        log.error("instance.refused", error_code=exc.code, error=exc.message)
        return 1
    logs.configure(inst.log_format, inst.log_level)
    host = inst.host or ""
    log = log.bind(host=host, host_instance=inst.host_instance, service_account=store.account)
    for name in settings.unknown_variables():
        log.warning("settings.unknown_variable", variable=name, hint="no setting of this name (a typo?)")
    for problem in store.problems:
        log.warning("store.file_unusable", store=str(store.path), problem=problem)
    findings = preflight(config, store, host, warn_days=inst.expiry_warning_days)
    for f in findings:
        if f.level == "error" and f.role == "signing":
            # BizTalk needs the group signing certificate in every host instance's account store.
            log.error("instance.refused", error_code=f.code, error=f.detail, store=f.where, thumbprint=f.thumbprint)
            return 1
    log_findings(log, findings)
    instance = HostInstance(inst, brk, Runtime.build(config, store, host), host)
    log.info("instance.starting", config=str(inst.config), store=str(store.path), threads=inst.threads)
    # What start-up built (modules, config, certificates) lives as long as the process: frozen, the
    # collector's full passes stop walking it; otherwise each one paused the loop for 20-30 ms, the
    # tail of the latency bench (docs/performance.md; https://docs.python.org/3/library/gc.html#gc.freeze).
    gc.collect()
    gc.freeze()
    asyncio.run(_serve(instance, Supervisor(instance, inst, store_settings)))
    log.info("instance.stopped", stats=instance.stats.totals())
    return 0


async def _serve(instance: HostInstance, supervisor: Supervisor) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await asyncio.gather(instance.run(stop), supervisor.run(stop))


if __name__ == "__main__":
    raise SystemExit(main())
