"""Components a pipeline may name in its config, and the assembly of a send port's pipeline from them."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from pydantic import BaseModel

from worker.stages import STAGES, ComponentType, Pipeline, Stage, StageContext
from worker.stages.smime import EncoderProperties, MimeSmimeEncoder
from worker.store import CertificateStore

if TYPE_CHECKING:  # config validates against REGISTRY, so it imports this module, not the reverse
    from worker.config import Config


def _encoder(props: BaseModel, ctx: StageContext) -> Stage:
    return MimeSmimeEncoder(cast(EncoderProperties, props), ctx)


REGISTRY: dict[str, ComponentType] = {
    c.name: c for c in (ComponentType("mime_smime_encoder", "encode", EncoderProperties, _encoder),)
}


def build_pipeline(config: Config, port_name: str, store: CertificateStore) -> Pipeline:
    """The send port's pipeline, bound to one store snapshot (rebuilt when the store is reloaded)."""
    port = config.send_ports[port_name]
    spec = config.pipelines[port.pipeline]
    ctx = StageContext(store, config.group.signing_thumbprint, port_name, port.encryption_thumbprint)
    steps = tuple(
        (stage, REGISTRY[comp.component].build(comp.properties, ctx))
        for stage in STAGES
        for comp in getattr(spec, stage)
    )
    return Pipeline(port.pipeline, steps, spec.encrypts)
