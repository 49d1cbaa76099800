"""The config and store in force, with every send port's pipeline built from them: one immutable snapshot.

A message takes the snapshot once and keeps it to the end; a reload builds a new one and swaps it whole.
Within a snapshot the certificates in force follow their schedules (SPEC "Certificate schedules"): the
pipelines are rebuilt, without a reload, when the clock passes the next scheduled ``from``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from worker.config.model import Config
from worker.identity.store import CertificateStore
from worker.pipeline.catalogue import build_pipeline
from worker.pipeline.stage import Pipeline

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def switch_instants(config: Config, host: str) -> list[dt.datetime]:
    """Every instant at which a certificate this host uses takes over, sorted."""
    froms = {e.from_ for e in config.group.scheduled_signing}
    for port in config.ports_of(host).values():
        froms.update(e.from_ for e in port.encryption_certificates or ())
    return sorted(froms)


@dataclass(frozen=True, slots=True)
class _Period:
    start: dt.datetime | None  # the last switch at or before the build (None: before every switch)
    end: dt.datetime | None  # the next switch (None: no more)
    pipelines: dict[str, Pipeline]

    def covers(self, now: dt.datetime) -> bool:
        return (self.start is None or self.start <= now) and (self.end is None or now < self.end)


@dataclass(frozen=True)
class Runtime:
    """The config and store in force, with the pipelines built from them; replaced whole on reload."""

    config: Config
    store: CertificateStore
    host: str
    clock: Clock = utc_now
    _switches: list[dt.datetime] = field(default_factory=list, repr=False)
    _period: list[_Period] = field(default_factory=list, repr=False)  # one slot, swapped whole

    @classmethod
    def build(cls, config: Config, store: CertificateStore, host: str, clock: Clock = utc_now) -> Runtime:
        runtime = cls(config, store, host, clock, switch_instants(config, host))
        runtime.pipelines  # noqa: B018 - built now, so a bad config fails here, not on the first message
        return runtime

    @property
    def pipelines(self) -> dict[str, Pipeline]:
        """Every send port's pipeline with the certificates in force now (a dict lookup unless a switch passed)."""
        now = self.clock()
        current = self._period[0] if self._period else None
        if current is not None and current.covers(now):
            return current.pipelines
        start = max((s for s in self._switches if s <= now), default=None)
        end = min((s for s in self._switches if s > now), default=None)
        built = {name: build_pipeline(self.config, name, self.store, now) for name in self.config.ports_of(self.host)}
        self._period[:] = [_Period(start, end, built)]
        return built
