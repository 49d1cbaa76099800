"""Background duties of a running instance: heartbeat, stats line, hot reload of config and store, expiry.

A reload never makes things worse: the candidate config and store are read off the event loop and checked
with start-up's rules before they replace the ones in force (else ``config.rejected`` / ``store.rejected``
and the previous stay). A certificate error looks at the store again before it suspends a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from worker.config.model import Config
from worker.errors import Code, ConfigError, SendpipeError
from worker.host.instance import HostInstance
from worker.identity.store import CertificateStore
from worker.pipeline.catalogue import load_config
from worker.pipeline.preflight import log_findings, preflight
from worker.pipeline.runtime import Clock, Runtime, utc_now
from worker.settings import InstanceSettings, StoreSettings

_DAY_S = 24 * 3600.0


def _stamp(path: Path) -> tuple[int, ...] | None:
    # The inode: a file replaced by rename (sed -i, most editors, an atomic copy) is a new one. Mode and
    # owner: a chmod (a key file made world-readable) or chown must be noticed like an edit. Not ctime: it
    # changes on an inode that is only unlinked, which a single-file bind mount keeps showing (the replaced
    # file, untouched): that was reported as a reload of nothing. An edit in place changes mtime or size.
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size, st.st_mode, st.st_uid, st.st_gid)


def store_fingerprint(store_dir: Path) -> tuple[object, ...]:
    """What changes when an operator drops, replaces or removes a file in the store (cheap: stat only)."""
    entries: list[object] = []
    for folder in ("personal", "other-people", "crls"):
        base = store_dir / folder
        with contextlib.suppress(OSError):
            entries.extend((folder, p.name, _stamp(p)) for p in sorted(base.iterdir()))
    return tuple(entries)


AfterReload = Callable[[Runtime, Runtime], Awaitable[None]]


class Supervisor:
    """Runs beside the consumer; every duty is a loop that ends with ``stop``."""

    def __init__(
        self,
        instance: HostInstance,
        inst: InstanceSettings,
        store_settings: StoreSettings,
        *,
        after_reload: AfterReload | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.instance = instance
        self.inst = inst
        self.store_settings = store_settings
        self.log = instance.log
        self.after_reload = after_reload
        self.clock = clock
        self._config_seen = _stamp(inst.config)
        self._detached_warned = False
        self._store_seen = store_fingerprint(instance.runtime.store.path)
        self._lock = asyncio.Lock()
        self._retry = (False, False)  # (config, store) of a refused candidate
        self._background: set[asyncio.Task[None]] = set()
        instance.refresh = self.refresh

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
        """Daily: warn again about certificates near expiry, scheduled ones due and missing, and any that
        became unusable."""
        runtime = self.instance.runtime
        log_findings(
            self.log,
            preflight(
                runtime.config,
                runtime.store,
                self.instance.host,
                warn_days=self.inst.expiry_warning_days,
                now=self.clock(),
            ),
        )

    async def reload(self) -> None:
        """Pick up a changed config file or store folder without a restart (the periodic duty)."""
        async with self._lock:
            await self._reload()

    async def refresh(self, used: Runtime) -> bool:
        """A message failed on a certificate with ``used``: before it is suspended, look at the files again
        (stat only; a reload when they changed). True when a newer runtime is in force to try it with."""
        async with self._lock:
            if self.instance.runtime is not used:
                return True  # another message's refresh, or the timer, already reloaded
            # Every time, not rate-limited: it is a stat of the store's files (a reload only when they
            # changed), and a limit made a message resumed right after the fix fail again on the old files.
            await self._reload()
            return self.instance.runtime is not used

    def _warn_if_detached(self) -> None:
        """Once: the config file seen here has no name left (replaced or removed outside, e.g. on the host of a
        single-file bind mount, which keeps showing the old inode): its edits will never arrive."""
        try:
            detached = self.inst.config.stat().st_nlink == 0
        except OSError:
            return
        if detached and not self._detached_warned:
            self.log.warning(
                "config.detached",
                config=str(self.inst.config),
                hint="the file was replaced outside; a single-file bind mount keeps the old one: mount its folder",
            )
        self._detached_warned = detached

    async def _reload(self) -> None:
        self._warn_if_detached()
        config_now = _stamp(self.inst.config)
        store_now = store_fingerprint(self.instance.runtime.store.path)
        config_changed, store_changed = config_now != self._config_seen, store_now != self._store_seen
        if not (config_changed or store_changed):
            return
        # A refused candidate is tried again, whole, with the next change (the config waiting for its
        # certificate: the certificate arrives).
        config_changed, store_changed = config_changed or self._retry[0], store_changed or self._retry[1]
        self._retry = (False, False)
        # Seen even when rejected: a half-copied file is looked at again when it changes (the copy ends).
        self._config_seen, self._store_seen = config_now, store_now
        old = self.instance.runtime
        try:
            # Files are read (PKCS#12 decryption included) off the event loop: messages keep flowing.
            candidate, refusal = await asyncio.to_thread(self._prepare, old, config_changed, store_changed)
        except SendpipeError as exc:
            what = "config" if isinstance(exc, ConfigError) else "store"
            self.log.error(f"{what}.rejected", error_code=exc.code, error=exc.message[:2000], kept="previous")
            return
        config, store = candidate.config, candidate.store
        if refusal is not None:
            self._retry = (config_changed, store_changed)
            what, code, reason = refusal
            self.log.error(f"{what}.rejected", error_code=code, error=reason[:2000], kept="previous")
            return
        self.instance.runtime = candidate
        if config is not old.config:
            self.log.info(
                "config.reloaded",
                config=str(self.inst.config),
                signing_thumbprint=config.group.signing_at(self.clock()),
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
        if self.after_reload is not None:
            # In the background: a message that triggered this reload must not wait for a queue scan.
            task = asyncio.create_task(self._after(old, candidate))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _after(self, old: Runtime, new: Runtime) -> None:
        assert self.after_reload is not None  # noqa: S101 - checked by the caller
        try:
            await self.after_reload(old, new)
        except Exception:  # never take the instance down
            self.log.exception("supervisor.after_reload_failed")

    def _prepare(
        self, old: Runtime, config_changed: bool, store_changed: bool
    ) -> tuple[Runtime, tuple[str, str, str] | None]:
        """In a worker thread: read the changed files, build the candidate runtime, vet it."""
        config, store = self._load(old, config_changed, store_changed)
        candidate = Runtime.build(config, store, self.instance.host, self.clock)
        return candidate, self._refusal(old, candidate, store_changed)

    def _load(self, old: Runtime, config_changed: bool, store_changed: bool) -> tuple[Config, CertificateStore]:
        config, store = old.config, old.store
        if config_changed:
            config = load_config(self.inst.config)
            if self.instance.host not in config.hosts:
                raise ConfigError(
                    f"host {self.instance.host!r} has no send ports in the new config", code=Code.UNKNOWN_HOST
                )
        if store_changed:
            s = self.store_settings
            store = CertificateStore.open(s.store_root, s.service_account, s.store_password)
        return config, store

    def _refusal(self, old: Runtime, new: Runtime, store_changed: bool) -> tuple[str, str, str] | None:
        """Why the candidate must not replace the runtime in force, by start-up's rules (None: it may).

        Start-up refuses an unusable group signing certificate: so does a reload, keeping the previous
        config and store (a half-copied PKCS#12, a new signing_thumbprint not yet in personal/, a wrong
        password after rotation). A security refusal (a key file made readable by others) is the
        exception: it takes effect at once, failing closed. A store whose new unreadable files took away
        a partner certificate in use is refused too (a partner's file being copied in).
        """
        host, days, now = self.instance.host, self.inst.expiry_warning_days, self.clock()
        found = preflight(new.config, new.store, host, warn_days=days, now=now)
        if any(f.level == "error" and f.code == Code.KEY_FILE_INSECURE for f in found):
            return None  # fail closed at once: a key others can read is not used, whatever else changed
        signing = [f for f in found if f.level == "error" and f.role == "signing"]
        if signing:
            f = signing[0]
            if store_changed and new.config is old.config:
                what = "store"
            elif not store_changed:
                what = "config"
            else:  # both changed: blame the config if the old store cannot serve it either
                with_old = preflight(new.config, old.store, host, warn_days=days, now=now)
                what = "config" if any(g.level == "error" and g.role == "signing" for g in with_old) else "store"
            return what, f.code or Code.SIGNING_CERT_NOT_FOUND, f"start-up would refuse it: {f.detail}"
        if store_changed and set(new.store.problems) - set(old.store.problems):
            before = {(f.subject, f.thumbprint) for f in preflight(old.config, old.store, host, warn_days=days, now=now)
                      if f.level == "error"}  # fmt: skip
            lost = [f for f in found if f.level == "error" and (f.subject, f.thumbprint) not in before]
            if lost:
                problems = "; ".join(sorted(set(new.store.problems) - set(old.store.problems)))
                return "store", lost[0].code or Code.STORE_FILE, f"{lost[0].detail} (unreadable now: {problems})"
        return None
