"""`sendpipe run`: one host instance until SIGTERM/SIGINT, refusing to start without the signing cert."""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
from typing import Any

import structlog

from worker import logs, settings
from worker.cli import bootstrap
from worker.errors import SendpipeError
from worker.host import metrics
from worker.host.instance import HostInstance
from worker.host.supervisor import Supervisor
from worker.ops import autoresume
from worker.pipeline.preflight import log_findings, preflight
from worker.pipeline.runtime import Runtime
from worker.settings import BrokerSettings


def register(sub: Any) -> None:
    """Add `run` to the `sendpipe` parser."""
    run = sub.add_parser(
        "run",
        help="Run one host instance until SIGTERM/SIGINT, then drain and exit 0.",
        description="Run one host instance until SIGTERM/SIGINT, then drain and exit 0.",
    )
    run.set_defaults(func=cmd_run)


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
    try:
        hook = autoresume.after_reload(brk, host, inst.host_instance, inst.expiry_warning_days, instance.log)
        supervisor = Supervisor(instance, inst, store_settings, after_reload=hook)
        asyncio.run(_serve(instance, supervisor, inst.metrics_listen))
    except SendpipeError as exc:  # the metrics listener could not bind
        log.error("instance.refused", error_code=exc.code, error=exc.message)
        return 1
    log.info("instance.stopped", stats=instance.stats.totals())
    return 0


async def _serve(instance: HostInstance, supervisor: Supervisor, metrics_listen: str | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # The listener first: a port that cannot be bound refuses the start before anything is consumed.
    server = await metrics.start(instance, metrics_listen) if metrics_listen else None
    try:
        await asyncio.gather(instance.run(stop), supervisor.run(stop))
    finally:
        if server is not None:
            server.close()
