"""Read a BizTalk binding file (BindingInfo XML) into plain records, with DTDs and entities refused."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from worker.errors import Code, ConfigError

_XSI_NIL = "{http://www.w3.org/2001/XMLSchema-instance}nil"
# Send pipeline stages by CategoryId (Microsoft.BizTalk.Component.Interop.CategoryTypes: CATID_PreAssembler,
# CATID_AssemblingSerializer, CATID_Encoder), as they appear in per-instance pipeline data.
STAGE_IDS = {
    "9d0e4101-4cce-4536-83fa-4a5040674ad6": "pre_assemble",
    "9d0e4107-4cce-4536-83fa-4a5040674ad6": "assemble",
    "9d0e4108-4cce-4536-83fa-4a5040674ad6": "encode",
}
_XML_DECL = re.compile(r"^\s*<\?xml[^>]*\?>")  # inner documents may claim encoding="utf-16"
_INT_VTS = {"2", "3", "16", "17", "18", "19", "20", "21", "22", "23"}  # VT_I2 … VT_UINT: all integers


class BindingsError(ConfigError):
    """The binding file cannot be read: missing, not well-formed, unsafe, or not a BindingInfo."""

    code = Code.BINDINGS_INVALID


class PortProblem(Exception):
    """One send port's data cannot be read (its other ports still can): the port is not mapped."""


@dataclass(frozen=True, slots=True)
class Prop:
    """A pipeline component property: its name, variant type and typed value (int, str or bool)."""

    name: str
    vt: str
    value: int | str | bool


@dataclass(frozen=True, slots=True)
class PipelineComponent:
    """One component of the per-instance pipeline data; ``stage`` is sendpipe's name or the raw CategoryId."""

    stage: str
    name: str
    properties: tuple[Prop, ...]


@dataclass(frozen=True, slots=True)
class Transport:
    """A primary or secondary transport of a send port."""

    address: str
    transport_type: str
    retry_count: int | None
    retry_interval_min: int | None
    handler: str | None
    ordered_delivery: bool
    service_window: bool


@dataclass(frozen=True, slots=True)
class BindingPort:
    """A ``SendPort`` as the binding file describes it; ``problem`` says why its data could not be read."""

    name: str
    application: str
    is_static: bool
    is_two_way: bool
    pipeline: str  # TransmitPipeline Name ("" when absent)
    pipeline_fqn: str
    components: tuple[PipelineComponent, ...] | None  # None = no per-instance pipeline data
    primary: Transport | None
    secondary: Transport | None
    thumbprint: str | None  # EncryptionCert ThumbPrint as Windows shows it
    problem: str | None = None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(el: Element, name: str) -> Element | None:
    return next((c for c in el if _local(c.tag) == name), None)


def _text(el: Element | None) -> str:
    return (el.text or "").strip() if el is not None else ""


def _nil(el: Element | None) -> bool:
    return el is None or el.get(_XSI_NIL) == "true"


def _bool(text: str, what: str) -> bool:
    # Binding files write booleans as true/false; component properties (vt=11, VT_BOOL) as -1/0.
    low = text.strip().lower()
    if low in {"true", "-1", "1"}:
        return True
    if low in {"false", "0", ""}:
        return False
    raise PortProblem(f"{what}: {text[:40]!r} is not a boolean (-1/0 or true/false)")


def _int(text: str, what: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise PortProblem(f"{what}: {text[:40]!r} is not an integer") from None


def read_bindings(data: bytes, source: str) -> tuple[BindingPort, ...]:
    """Every ``SendPort`` of a binding file, in file order; whole-file problems raise BindingsError."""
    root = _parse_document(data, source)
    if _local(root.tag) != "BindingInfo":
        raise BindingsError(f"{source}: the root element is <{_local(root.tag)}>, not <BindingInfo> (a binding file)")
    ports: list[BindingPort] = []
    for coll in root:
        if _local(coll.tag) != "SendPortCollection":
            continue  # receive ports, parties, module refs: nothing of sendpipe's
        ports.extend(_port(sp) for sp in coll if _local(sp.tag) == "SendPort")
    return tuple(ports)


def _parse_document(data: bytes, source: str) -> Element:
    """Parse with defusedxml (no DTD, no entities); a syntax error names the open elements and the line."""
    opened: list[str] = []
    events = SafeET.iterparse(io.BytesIO(data), events=("start", "end"), forbid_dtd=True)
    try:
        for event, el in events:
            if event == "start":
                name = el.get("Name")
                opened.append(f"<{_local(el.tag)} Name={name!r}>" if name else f"<{_local(el.tag)}>")
            else:
                opened.pop()
    except DefusedXmlException as exc:
        raise BindingsError(
            f"{source}: refused: the file declares a DTD or entities ({type(exc).__name__}); BizTalk exports "
            "none, and entity expansion (billion laughs, external entities) is not allowed in input from "
            "another system",
            code=Code.BINDINGS_UNSAFE_XML,
        ) from None
    except ParseError as exc:
        where = " in " + " / ".join(opened) if opened else ""
        raise BindingsError(f"{source}: not well-formed XML: {exc}{where}", code=Code.BINDINGS_MALFORMED) from None
    root: Element = events.root  # type: ignore[attr-defined]  # set by iterparse once exhausted, not in its stubs
    return root


def _port(sp: Element) -> BindingPort:
    name = sp.get("Name", "")
    application = _text(_child(sp, "ApplicationName"))
    tp = _child(sp, "TransmitPipeline")
    pipeline = tp.get("Name", "") if tp is not None and not _nil(tp) else ""
    fqn = tp.get("FullyQualifiedName", "") if tp is not None else ""
    base = {"name": name, "application": application, "pipeline": pipeline, "pipeline_fqn": fqn}
    try:
        cert = _child(sp, "EncryptionCert")
        return BindingPort(
            **base,
            is_static=_bool(sp.get("IsStatic", "true"), "IsStatic"),
            is_two_way=_bool(sp.get("IsTwoWay", "false"), "IsTwoWay"),
            components=_pipeline_data(_child(sp, "SendPipelineData")),
            primary=_transport(_child(sp, "PrimaryTransport"), "PrimaryTransport"),
            secondary=_transport(_child(sp, "SecondaryTransport"), "SecondaryTransport"),
            thumbprint=cert.get("ThumbPrint") if cert is not None and not _nil(cert) else None,
        )
    except PortProblem as exc:
        return BindingPort(
            **base,
            is_static=True,
            is_two_way=False,
            components=None,
            primary=None,
            secondary=None,
            thumbprint=None,
            problem=str(exc),
        )


def _transport(el: Element | None, what: str) -> Transport | None:
    if _nil(el) or el is None:
        return None
    handler = _child(el, "SendHandler")
    count, interval = _child(el, "RetryCount"), _child(el, "RetryInterval")
    ttype = _child(el, "TransportType")
    return Transport(
        address=_text(_child(el, "Address")),
        transport_type=ttype.get("Name", "") if ttype is not None else "",
        retry_count=_int(_text(count), f"{what}/RetryCount") if _text(count) else None,
        retry_interval_min=_int(_text(interval), f"{what}/RetryInterval") if _text(interval) else None,
        handler=handler.get("Name") if handler is not None and not _nil(handler) else None,
        ordered_delivery=_bool(_text(_child(el, "OrderedDelivery")), f"{what}/OrderedDelivery"),
        service_window=_bool(_text(_child(el, "ServiceWindowEnabled")), f"{what}/ServiceWindowEnabled"),
    )


def _pipeline_data(el: Element | None) -> tuple[PipelineComponent, ...] | None:
    """Per-instance pipeline data: BizTalk stores it as escaped XML text; unescaped (a child element) works too."""
    if el is None or _nil(el):
        return None
    inner = next(iter(el), None)
    if inner is None:
        text = (el.text or "").strip()
        if not text:
            return None
        try:
            inner = SafeET.fromstring(_XML_DECL.sub("", text, count=1), forbid_dtd=True)
        except DefusedXmlException as exc:
            raise PortProblem(f"SendPipelineData declares a DTD or entities ({type(exc).__name__}): refused") from None
        except ParseError as exc:
            raise PortProblem(f"SendPipelineData is not well-formed XML: {exc}") from None
    stages = _child(inner, "Stages")
    out = []
    for stage in stages if stages is not None else ():
        cat = stage.get("CategoryId", "").strip("{}").lower()
        comps = _child(stage, "Components")
        for comp in comps if comps is not None else ():
            props = _child(comp, "Properties")
            name = comp.get("Name", "")
            typed = tuple(_prop(p, name) for p in (props if props is not None else ()))
            out.append(PipelineComponent(STAGE_IDS.get(cat, cat or "?"), name, typed))
    return tuple(out)


def _prop(el: Element, component: str) -> Prop:
    # Variant types as BizTalk writes them: vt=3 (VT_I4) integers, vt=8 (VT_BSTR) strings, vt=11 (VT_BOOL) -1/0.
    name, vt, text = _local(el.tag), el.get("vt", ""), el.text or ""
    what = f"{component} property {name} (vt={vt or 'missing'})"
    if vt == "8":
        return Prop(name, vt, text)
    if vt in _INT_VTS:
        return Prop(name, vt, _int(text, what))
    if vt == "11":
        if text.strip() not in {"-1", "0"}:
            raise PortProblem(f"{what}: {text[:40]!r} is not -1 (true) or 0 (false)")
        return Prop(name, vt, text.strip() == "-1")
    raise PortProblem(f"{what}: variant type not understood (expected 3, 8 or 11)")
