"""The config and store in force, with every send port's pipeline built from them: one immutable snapshot.

A message takes the snapshot once and keeps it to the end; a reload builds a new one and swaps it whole.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.config.model import Config
from worker.identity.store import CertificateStore
from worker.pipeline.catalogue import build_pipeline
from worker.pipeline.stage import Pipeline


@dataclass(frozen=True)
class Runtime:
    """The config and store in force, with the pipelines built from them; replaced whole on reload."""

    config: Config
    store: CertificateStore
    pipelines: dict[str, Pipeline]

    @classmethod
    def build(cls, config: Config, store: CertificateStore, host: str) -> Runtime:
        return cls(config, store, {name: build_pipeline(config, name, store) for name in config.ports_of(host)})
