"""Background duties of a running instance: heartbeat, stats line, hot reload of config and store, expiry."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from worker.errors import Code, ConfigError, SendpipeError
from worker.host.instance import HostInstance
from worker.identity.store import CertificateStore
from worker.pipeline.catalogue import load_config
from worker.pipeline.preflight import log_findings, preflight
from worker.pipeline.runtime import Runtime
from worker.settings import InstanceSettings, StoreSettings

_DAY_S = 24 * 3600.0


def _stamp(path: Path) -> tuple[int, int, int, int] | None:
    # ctime and mode too: a chmod (a key file made world-readable) must be noticed like an edit.
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_mode)


def store_fingerprint(store_dir: Path) -> tuple[object, ...]:
    """What changes when an operator drops, replaces or removes a file in the store (cheap: stat only)."""
    entries: list[object] = []
    for folder in ("personal", "other-people", "crls"):
        base = store_dir / folder
        with contextlib.suppress(OSError):
            entries.extend((folder, p.name, _stamp(p)) for p in sorted(base.iterdir()))
    return tuple(entries)


class Supervisor:
    """Runs beside the consumer; every duty is a loop that ends with ``stop``."""

    def __init__(self, instance: HostInstance, inst: InstanceSettings, store_settings: StoreSettings) -> None:
        self.instance = instance
        self.inst = inst
        self.store_settings = store_settings
        self.log = instance.log
        self._config_seen = _stamp(inst.config)
        self._store_seen = store_fingerprint(instance.runtime.store.path)

    async def run(self, stop: asyncio.Event) -> None:
        duties: list[tuple[float, Callable[[], Awaitable[None]]]] = [
            (self.inst.stats_interval_s, self.log_stats),
            (self.inst.reload_interval_s, self.reload),
            (_DAY_S, self.warn_expiry),
        ]
        if self.inst.health_file is not None:
            duties.append((self.inst.health_max_age_s / 3, self.heartbeat))
        await asyncio.gather(*(self._every(interval, duty, stop) for interval, duty in duties))

    async def _every(self, interval_s: float, duty: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
                return
            try:
                await duty()
            except Exception:  # a duty must never take the instance down
                self.log.exception("supervisor.duty_failed", duty=duty.__name__)

    async def heartbeat(self) -> None:
        """Touch the health file only while a consumer is attached: a dead consumer goes stale."""
        path = self.inst.health_file
        if path is None or not self.instance.consuming:
            return
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"ts": time.time(), "pid": os.getpid(), **self.instance.stats.totals()}))
        tmp.replace(path)

    async def log_stats(self) -> None:
        self.log.info("stats", **self.instance.stats.snapshot())

    async def warn_expiry(self) -> None:
        """Daily: warn again about certificates near expiry (and any that became unusable)."""
        runtime = self.instance.runtime
        log_findings(
            self.log,
            preflight(runtime.config, runtime.store, self.instance.host, warn_days=self.inst.expiry_warning_days),
        )

    async def reload(self) -> None:
        """Pick up a changed config file or store folder without a restart; keep the old on a bad config."""
        config_now = _stamp(self.inst.config)
        store_now = store_fingerprint(self.instance.runtime.store.path)
        config_changed, store_changed = config_now != self._config_seen, store_now != self._store_seen
        if not (config_changed or store_changed):
            return
        self._config_seen, self._store_seen = config_now, store_now
        old = self.instance.runtime
        config, store = old.config, old.store
        try:
            if config_changed:
                config = load_config(self.inst.config)
                if self.instance.host not in config.hosts:
                    raise ConfigError(
                        f"host {self.instance.host!r} has no send ports in the new config", code=Code.UNKNOWN_HOST
                    )
            if store_changed:
                s = self.store_settings
                store = CertificateStore.open(s.store_root, s.service_account, s.store_password)
        except SendpipeError as exc:
            what = "config" if config_changed and config is old.config else "store"
            self.log.error(f"{what}.rejected", error_code=exc.code, error=exc.message[:2000], kept="previous")
            return
        self.instance.runtime = Runtime.build(config, store, self.instance.host)
        if config is not old.config:
            self.log.info(
                "config.reloaded",
                config=str(self.inst.config),
                signing_thumbprint=config.group.signing_thumbprint,
                send_ports=sorted(config.ports_of(self.instance.host)),
            )
            session = self.instance.session
            if session is not None and config.ports_of(self.instance.host) != old.config.ports_of(self.instance.host):
                await self.instance.declare(session)  # bind new send ports, declare new retry intervals
        if store is not old.store:
            self.log.info(
                "store.reloaded",
                store=str(store.path),
                personal=sorted(store.personal),
                other_people=sorted(store.other_people),
                problems=list(store.problems),
            )
        await self.warn_expiry()
