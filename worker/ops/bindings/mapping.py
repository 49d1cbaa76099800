"""The rules that turn BizTalk send ports into sendpipe send ports and pipelines (README "Migrating from BizTalk")."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from worker.config.model import Config
from worker.errors import SendpipeError
from worker.identity.certs import normalize_thumbprint
from worker.ops.bindings.encoder import Findings, map_encoder, messages, pipeline_name
from worker.ops.bindings.parse import BindingPort
from worker.pipeline.catalogue import CATALOGUE

ENCODER = "Microsoft.BizTalk.Component.MIME_SMIME_Encoder"
PASSTHRU_PIPELINE = "Microsoft.BizTalk.DefaultPipelines.PassThruTransmit"
# Not a certificate's thumbprint (no DER hashes to zero): `sendpipe check` reports signing-cert-not-found.
PLACEHOLDER_THUMBPRINT = "0" * 40
_RETRY_DEFAULTS = (3, 5)  # a send port's transport: 3 retries, 5 minutes apart
_NO_EQUIVALENT = (  # (name fragment, why) for components sendpipe has nothing like
    (
        "AS2Encoder",
        "the AS2 encoder (AS2 headers, MDN requests, agreements) has no equivalent: sendpipe's "
        "ClearSign + encryption gives the AS2 S/MIME layout, not the AS2 protocol",
    ),
    ("FFAsmComp", "the flat-file assembler has no equivalent: publish the flat file already assembled"),
    (
        "XmlAsmComp",
        "the XML assembler (envelopes, XML declaration, encoding) has no equivalent: publish the XML already assembled",
    ),
    ("BTFAsmComp", "the BizTalk Framework assembler has no equivalent"),
    ("Edi", "EDI components have no equivalent"),
)
_DEFAULT_PIPELINES = {  # BizTalk's own send pipelines other than PassThruTransmit (their components are known)
    "Microsoft.BizTalk.DefaultPipelines.XMLTransmit": "XmlAsmComp",
    "Microsoft.BizTalk.EdiInt.DefaultPipelines.AS2Send": "AS2Encoder",
    "Microsoft.BizTalk.EdiInt.DefaultPipelines.AS2EdiSend": "AS2Encoder",
    "Microsoft.BizTalk.Edi.DefaultPipelines.EdiSend": "Edi",
}


@dataclass(frozen=True)
class Options:
    host_map: Mapping[str, str] = field(default_factory=dict)
    upgrade_ciphers: bool = False
    signing_thumbprint: str | None = None


@dataclass(kw_only=True)
class Outcome(Findings):
    """One BizTalk send port's result; ``components`` and ``port`` also make the draft of a refused one."""

    biztalk: str
    application: str
    biztalk_pipeline: str
    name: str
    delivery_key: str
    components: tuple[dict[str, object], ...] | None = None  # the encode stage
    port: dict[str, object] | None = None  # the send port table, without `pipeline`
    pipeline: str = ""


@dataclass
class Imported:
    group_name: str
    signing_thumbprint: str
    placeholder: bool
    outcomes: list[Outcome]  # by sendpipe port name
    pipelines: dict[str, tuple[dict[str, object], ...]]  # the mapped ports' pipelines, by name
    warnings: list[str]

    @property
    def exit_code(self) -> int:
        mapped = sum(o.mapped for o in self.outcomes)
        return 1 if mapped == 0 else (2 if mapped < len(self.outcomes) else 0)


def port_name(biztalk: str) -> str:
    """sendpipe's name for a port: runs of characters outside [A-Za-z0-9._-] become `_`, led by a letter/digit."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", biztalk).lstrip("._-")[:128]
    return name or "port"


def delivery_key(name: str) -> str:
    """The delivery routing key: the port name lower-cased, each run of other characters one `.` (AMQP topic words)."""
    return re.sub(r"[^a-z0-9]+", ".", name.lower()).strip(".") or "port"


def _unique(wanted: str, taken: set[str], sep: str) -> str:
    out, n = wanted, 2
    while out in taken:
        out, n = f"{wanted}{sep}{n}", n + 1
    taken.add(out)
    return out


def import_ports(ports: Sequence[BindingPort], opts: Options) -> Imported:
    """Map every send port; names are assigned in BizTalk-name order, so the file order does not matter."""
    names: set[str] = set()
    keys: set[str] = set()
    outcomes = []
    for bp in sorted(ports, key=lambda p: p.name):
        name = _unique(port_name(bp.name), names, "_")
        out = Outcome(
            biztalk=bp.name,
            application=bp.application or "-",
            biztalk_pipeline=bp.pipeline or "-",
            name=name,
            delivery_key=_unique(delivery_key(name), keys, "."),
        )
        if name != bp.name:
            out.notes.append(f"sendpipe name {name!r}: the BizTalk name has characters sendpipe's names do not allow")
        _map_port(bp, out, opts)
        outcomes.append(out)
    pipelines: dict[str, tuple[dict[str, object], ...]] = {}
    for out in outcomes:
        if out.components is not None:
            out.pipeline = pipeline_name(out.components)
            if out.mapped:
                pipelines[out.pipeline] = out.components
    warnings = [
        f"--host-map {k}={v}: no send port uses host {k!r}"
        for k, v in sorted(opts.host_map.items())
        if not any(o.port and o.port.get("host") == v for o in outcomes)
    ]
    placeholder = opts.signing_thumbprint is None
    if placeholder:
        warnings.append(
            "group signing thumbprint: binding files do not hold it (a BizTalk group setting); a "
            "placeholder was written, which `sendpipe check` and `sendpipe run` reject: pass "
            "--signing-thumbprint or edit [group] signing_thumbprint"
        )
    apps = {p.application for p in ports if p.application}
    return Imported(
        group_name=apps.pop() if len(apps) == 1 else "BizTalk",
        signing_thumbprint=opts.signing_thumbprint or PLACEHOLDER_THUMBPRINT,
        placeholder=placeholder,
        outcomes=sorted(outcomes, key=lambda o: o.name),
        pipelines=dict(sorted(pipelines.items())),
        warnings=warnings,
    )


def _map_port(bp: BindingPort, out: Outcome, opts: Options) -> None:
    if bp.problem:
        out.reasons.append(f"its data cannot be read: {bp.problem}")
        return
    if not bp.is_static:
        out.reasons.append(
            "dynamic send port: its address and transport are set per message (by an orchestration); "
            "sendpipe's send ports are static — make one static port per destination"
        )
        return
    if bp.is_two_way:
        out.reasons.append(
            "solicit-response (two-way) port: sendpipe delivers one way to sendpipe.delivery; the "
            "response and its receive pipeline have no equivalent"
        )
        return
    out.components = _stage(bp, out, opts)
    if out.components is None:
        return
    out.port = _port_table(bp, out, opts)
    if out.mapped:
        _ask_the_models(out)


def _stage(bp: BindingPort, out: Outcome, opts: Options) -> tuple[dict[str, object], ...] | None:
    """The encode stage, from per-instance data (or a known default pipeline); None when it has no equivalent."""
    if not bp.components:
        if bp.pipeline == PASSTHRU_PIPELINE:
            return ()
        if bp.pipeline in _DEFAULT_PIPELINES:
            out.reasons.append(f"pipeline {bp.pipeline}: {_no_equivalent(_DEFAULT_PIPELINES[bp.pipeline])}")
        else:
            out.reasons.append(
                f"pipeline {bp.pipeline or '(none)'} has no per-instance data (SendPipelineData) in the binding: "
                "its components and settings are in the pipeline's assembly, not in this file — set its "
                "per-instance properties on the send port and export again, or write this port by hand"
            )
        return None
    encoders = [c for c in bp.components if c.name == ENCODER]
    for comp in bp.components:
        if comp.name != ENCODER:
            out.reasons.append(f"component {comp.name or '(unnamed)'}: {_no_equivalent(comp.name)}")
        elif comp.stage != "encode":
            out.reasons.append(f"the MIME/SMIME encoder sits in stage {comp.stage}, not Encode")
    if len(encoders) > 1:
        out.reasons.append("the pipeline has more than one MIME/SMIME encoder")
    if out.reasons:
        return None
    if not encoders:
        return ()
    props = map_encoder(encoders[0], out, opts.upgrade_ciphers)
    return (props,) if props is not None else None


def _no_equivalent(name: str) -> str:
    why = next((w for frag, w in _NO_EQUIVALENT if frag in name), None)
    return why or "a custom component sendpipe has no equivalent for (its code is not in the binding file)"


def _port_table(bp: BindingPort, out: Outcome, opts: Options) -> dict[str, object]:
    primary = bp.primary
    handler = primary.handler if primary else None
    table: dict[str, object] = {}
    if handler is None:
        out.reasons.append("its PrimaryTransport names no SendHandler (host)")
    else:
        table["host"] = opts.host_map.get(handler, handler)
        if table["host"] != handler:
            out.notes.append(f"host {handler!r} renamed {table['host']!r} (--host-map)")
    encrypts = any(c.get("enable_encryption") for c in out.components or ())
    if encrypts and not bp.thumbprint:
        out.reasons.append(
            "encryption is on but the port has no EncryptionCert (BizTalk may have taken "
            "BTS.EncryptionCert from each message): set encryption_thumbprint by hand"
        )
    elif encrypts and bp.thumbprint:
        try:
            table["encryption_thumbprint"] = normalize_thumbprint(bp.thumbprint)
        except SendpipeError as exc:
            out.reasons.append(f"EncryptionCert: {exc.message}")
    elif bp.thumbprint:
        out.notes.append("EncryptionCert dropped: the pipeline does not encrypt")
    table["delivery_key"] = out.delivery_key
    count = primary.retry_count if primary and primary.retry_count is not None else _RETRY_DEFAULTS[0]
    minutes = primary.retry_interval_min if primary and primary.retry_interval_min is not None else _RETRY_DEFAULTS[1]
    table["retry_count"] = count
    table["retry_interval_s"] = minutes * 60
    if primary:
        out.notes.append(
            f"BizTalk delivered by {primary.transport_type or '?'} to {primary.address or '?'}: bind "
            f"that delivery to sendpipe.delivery, key {out.delivery_key!r}"
        )
        if primary.ordered_delivery:
            out.notes.append("WARNING: ordered delivery is not kept (competing consumers, retries)")
        if primary.service_window:
            out.notes.append("WARNING: the service window is not kept: messages are delivered at any time")
    if bp.secondary and bp.secondary.address:
        out.notes.append(
            f"WARNING: backup transport {bp.secondary.transport_type or '?'} to "
            f"{bp.secondary.address} is not reproduced (sendpipe has one delivery key per port)"
        )
    return table


def _ask_the_models(out: Outcome) -> None:
    """Validate the port with sendpipe's own config models; what they refuse is not mapped, with their words."""
    draft = {
        "group": {"name": "import", "signing_thumbprint": PLACEHOLDER_THUMBPRINT},
        "pipelines": {"p": {"encode": list(out.components or ())}},
        "send_ports": {out.name: {**(out.port or {}), "pipeline": "p"}},
    }
    try:
        Config.model_validate(draft, context={"catalogue": CATALOGUE})
    except ValidationError as exc:
        out.reasons.append(f"sendpipe's config refuses it: {messages(exc)}")
