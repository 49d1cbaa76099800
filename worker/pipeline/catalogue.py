"""Components a pipeline may name in its config, and the assembly of a send port's pipeline from them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import cast

from pydantic import BaseModel

from worker.config import load
from worker.config.model import STAGES, Config
from worker.identity.store import CertificateStore
from worker.pipeline.encoder import EncoderProperties, MimeSmimeEncoder
from worker.pipeline.stage import ComponentType, Needs, Pipeline, Stage, StageContext


def _encoder(props: BaseModel, ctx: StageContext) -> Stage:
    return MimeSmimeEncoder(cast(EncoderProperties, props), ctx)


def _encoder_needs(props: BaseModel) -> Needs:
    p = cast(EncoderProperties, props)
    return Needs(
        signing=p.signature_type != "NoSign", encryption=p.enable_encryption, check_crl=p.check_revocation_list
    )


CATALOGUE: dict[str, ComponentType] = {
    c.name: c for c in (ComponentType("mime_smime_encoder", "encode", EncoderProperties, _encoder, _encoder_needs),)
}


def load_config(path: Path) -> Config:
    """The config file, its components validated against this catalogue."""
    return load.load_config(path, CATALOGUE)


def build_pipeline(config: Config, port_name: str, store: CertificateStore, now: dt.datetime | None = None) -> Pipeline:
    """The send port's pipeline, bound to one store snapshot (rebuilt when the store is reloaded) and to the
    certificates in force at ``now`` (SPEC "Certificate schedules"; rebuilt when one takes over)."""
    at = now or dt.datetime.now(dt.UTC)
    port = config.send_ports[port_name]
    spec = config.pipelines[port.pipeline]
    ctx = StageContext(
        store, config.group.signing_at(at), port_name, port.encryption_at(at), port.additional_recipient_thumbprints
    )
    steps = tuple(
        (stage, CATALOGUE[comp.component].build(comp.properties, ctx))
        for stage in STAGES
        for comp in spec.components(stage)
    )
    return Pipeline(port.pipeline, steps, spec.encrypts)


def needs_of(config: Config, port_name: str) -> Needs:
    """What the send port's pipeline needs of the store, from what each of its components declares."""
    spec = config.pipelines[config.send_ports[port_name].pipeline]
    needs = Needs()
    for stage in STAGES:
        for comp in spec.components(stage):
            needs = needs | CATALOGUE[comp.component].needs(comp.properties)
    return needs
