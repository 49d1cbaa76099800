"""``auto_resume`` (SPEC "Suspended"): after a reload removes the cause, the instance resumes its own
suspended messages of the send ports and error codes that opted in, each resume logged.

Once per cause: a port's messages are resumed only by the reload that took its certificate problem
away (the runtime before had an error for it, the new one has none); one that fails again with the same
code stays suspended until the next such fix. Others are moved untouched (``scan``), at most ``batch``
are resumed per fix.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from worker.broker import session as broker
from worker.ops.suspended import Action, Suspended, scan
from worker.pipeline.catalogue import needs_of
from worker.pipeline.preflight import Finding, preflight
from worker.pipeline.runtime import Runtime
from worker.settings import BrokerSettings

BATCH = 1000


def _broken(runtime: Runtime, host: str, warn_days: int) -> set[str]:
    """The send ports of ``host`` whose pipeline cannot get a certificate it needs from this runtime."""
    found: list[Finding] = preflight(runtime.config, runtime.store, host, warn_days=warn_days, now=runtime.clock())
    errors = [f for f in found if f.level == "error"]
    signing_broken = any(f.role == "signing" for f in errors)
    out = set()
    for name in runtime.config.ports_of(host):
        encryption = any(f.role == "encryption" and f.subject == name for f in errors)
        if encryption or (signing_broken and needs_of(runtime.config, name).signing):
            out.add(name)
    return out


def fixed_ports(old: Runtime, new: Runtime, host: str, warn_days: int) -> dict[str, frozenset[str]]:
    """Ports that opted in to auto_resume and whose cause this reload removed, with their codes."""
    opted = {name: frozenset(p.auto_resume) for name, p in new.config.ports_of(host).items() if p.auto_resume}
    if not opted:
        return {}
    was, now = _broken(old, host, warn_days), _broken(new, host, warn_days)
    # A port new to this host (config change) had no pipeline before: it counts as broken then.
    was |= set(opted) - set(old.config.ports_of(host))
    return {name: codes for name, codes in opted.items() if name in was and name not in now}


async def resume_fixed(
    brk: BrokerSettings,
    host: str,
    instance_name: str,
    ports: dict[str, frozenset[str]],
    log: Any,
    *,
    batch: int = BATCH,
) -> list[str]:
    """Resume the suspended messages of ``ports`` with their codes; log ``suspended.resumed``. Returns the ids."""
    if not ports:
        return []
    resumed: list[str] = []

    def visit(item: Suspended) -> Action:
        codes = ports.get(item.send_port)
        if codes is not None and item.error_code in codes and len(resumed) < batch:
            resumed.append(item.id)
            return Action.RESUME
        return Action.KEEP

    session = await broker.connect(brk, name=f"{instance_name}-auto-resume")
    try:
        await scan(session, host, visit, done=lambda: len(resumed) >= batch)
    finally:
        await session.close()
        if resumed:
            log.info(
                "suspended.resumed",
                by="auto-resume",
                reason="a store or config reload removed the cause",
                send_ports=sorted(ports),
                error_codes=sorted({c for codes in ports.values() for c in codes}),
                count=len(resumed),
                ids=resumed[:1000],
            )
    return resumed


def after_reload(
    brk: BrokerSettings, host: str, instance_name: str, warn_days: int, log: Any
) -> Callable[[Runtime, Runtime], Awaitable[None]]:
    """The supervisor's hook: after each reload it installs, resume what that reload fixed."""

    async def hook(old: Runtime, new: Runtime) -> None:
        await resume_fixed(brk, host, instance_name, fixed_ports(old, new, host, warn_days), log)

    return hook
