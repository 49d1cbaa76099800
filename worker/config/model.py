"""The TOML config (group, pipelines, send ports) as immutable, validated models (read by ``config.load``)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Protocol

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError

from worker.errors import SUSPENSION_CODES, Code, SendpipeError
from worker.identity.certs import normalize_thumbprint

# BizTalk's send pipeline stages, in the order they run (the TOML keys of a pipeline).
STAGES = ("pre_assemble", "assemble", "encode")


class ComponentKind(Protocol):
    """What the config needs to know of a component to validate it (the catalogue is the pipeline
    layer's, passed in as validation context, so loading a config imports no pipeline code)."""

    @property
    def stage(self) -> str: ...

    @property
    def properties(self) -> type[BaseModel]: ...

    def promises_encryption(self, properties: BaseModel) -> bool: ...


Catalogue = Mapping[str, ComponentKind]


# Host and port names become queue names and routing keys: keep them to AMQP-safe characters.
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


def _thumbprint(value: str) -> str:
    try:
        return normalize_thumbprint(value)
    except SendpipeError as exc:
        raise ValueError(exc.message) from None


Thumbprint = Annotated[str, AfterValidator(_thumbprint)]
Name = Annotated[str, Field(pattern=_NAME)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _aware(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise ValueError("`from` needs a time zone (e.g. 2027-03-01T00:00:00Z): a local time is ambiguous across hosts")
    return value.astimezone(dt.UTC)


class Scheduled(_Frozen):
    """One entry of a certificate schedule: from ``from`` on (until a later entry starts) this certificate is used."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    thumbprint: Thumbprint
    from_: Annotated[dt.datetime, AfterValidator(_aware)] = Field(alias="from")


def in_force(entries: Iterable[Scheduled], now: dt.datetime) -> Scheduled | None:
    """SPEC: the entry with the latest ``from`` that is not in the future (None: none has started yet)."""
    started = [e for e in entries if e.from_ <= now]
    return max(started, key=lambda e: e.from_) if started else None


def _ordered(entries: tuple[Scheduled, ...]) -> tuple[Scheduled, ...]:
    froms = [e.from_ for e in entries]
    if len(set(froms)) != len(froms):
        raise ValueError("two entries start at the same `from`: which one is in force would be ambiguous")
    return tuple(sorted(entries, key=lambda e: e.from_))


Schedule = Annotated[tuple[Scheduled, ...], AfterValidator(_ordered)]


class Group(_Frozen):
    """Us: the BizTalk group and its signing certificate, with the ones scheduled to take over (rollover)."""

    name: str = Field(min_length=1)
    signing_thumbprint: Thumbprint
    scheduled_signing: Schedule = ()

    def signing_at(self, now: dt.datetime) -> str:
        """The group signing certificate in force at ``now``: ``signing_thumbprint`` until a scheduled one starts."""
        entry = in_force(self.scheduled_signing, now)
        return self.signing_thumbprint if entry is None else entry.thumbprint


class Component(_Frozen):
    """One component of a stage: its catalogue name, its validated properties, and what the catalogue
    says of it (the stage it belongs in; whether it promises encryption, so the pipeline fails closed)."""

    component: str
    properties: BaseModel
    stage: str
    encrypts: bool

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any, info: ValidationInfo) -> Any:
        # In TOML the properties sit beside `component`; validate them with the component's model.
        if not isinstance(data, dict) or "component" not in data:
            raise ValueError('a component is a table with `component = "<name>"` and its properties')
        catalogue: Catalogue = (info.context or {})["catalogue"]
        name = data["component"]
        kind = catalogue.get(name)
        if kind is None:
            raise ValueError(f"unknown component {name!r}; allowed: {', '.join(sorted(catalogue))}")
        props = {k: v for k, v in data.items() if k != "component"}
        try:
            properties = kind.properties.model_validate(props)
            return {
                "component": name,
                "properties": properties,
                "stage": kind.stage,
                "encrypts": kind.promises_encryption(properties),
            }
        except ValidationError as exc:
            # Re-raised as one error at this component's location, keeping each property's name and
            # whether a refused algorithm was the cause (that error has its own code).
            errors = exc.errors(include_url=False)
            legacy = any(e["type"] == "algorithm_not_supported" for e in errors)
            names = ", ".join(kind.properties.model_fields)
            text = "; ".join(f"{field_path(e['loc'])}: {_allowed(e, names)}" for e in errors)
            raise PydanticCustomError("algorithm_not_supported" if legacy else "component_invalid", text) from None


class PipelineConfig(_Frozen):
    """A send pipeline: BizTalk's three assembling stages, each an ordered list of components."""

    pre_assemble: tuple[Component, ...] = ()
    assemble: tuple[Component, ...] = ()
    encode: tuple[Component, ...] = ()

    @model_validator(mode="after")
    def _placement(self) -> PipelineConfig:
        for stage in STAGES:
            for comp in self.components(stage):
                if comp.stage != stage:
                    raise ValueError(f"component {comp.component!r} belongs in the {comp.stage!r} stage, not {stage!r}")
        return self

    def components(self, stage: str) -> tuple[Component, ...]:
        by_stage = {"pre_assemble": self.pre_assemble, "assemble": self.assemble, "encode": self.encode}
        return by_stage[stage]

    @property
    def encrypts(self) -> bool:
        return any(c.encrypts for s in STAGES for c in self.components(s))


class SendPort(_Frozen):
    """Them: a destination with its pipeline, partner certificate, delivery key and retry policy."""

    host: Name
    pipeline: str
    encryption_thumbprint: Thumbprint | None = None
    encryption_certificates: Annotated[Schedule, Field(min_length=1)] | None = None
    delivery_key: str = Field(min_length=1, max_length=255)  # AMQP routing keys are shortstr
    retry_count: int = Field(default=3, ge=0, le=100)
    retry_interval_s: float = Field(default=300.0, gt=0, le=7 * 24 * 3600)
    auto_resume: tuple[Code, ...] = ()
    # Extra recipients of every message (e.g. our archive key), from other-people/ too; after the partner's.
    additional_recipient_thumbprints: tuple[Thumbprint, ...] = ()

    @model_validator(mode="after")
    def _one_certificate_source(self) -> SendPort:
        if self.encryption_thumbprint is not None and self.encryption_certificates is not None:
            raise ValueError(
                "encryption_thumbprint and encryption_certificates are alternatives: give one "
                "(a schedule's first entry replaces encryption_thumbprint)"
            )
        wrong = [c for c in self.auto_resume if c not in SUSPENSION_CODES]
        if wrong:
            raise ValueError(
                f"auto_resume: {', '.join(wrong)} is not a code a suspended message can carry; "
                "e.g. encryption-cert-not-found, encryption-cert-expired (README: error codes)"
            )
        self._extra_recipients()
        return self

    def _extra_recipients(self) -> None:
        extra = self.additional_recipient_thumbprints
        if not extra:
            return
        if not self.encrypts_to:
            raise ValueError(
                "additional_recipient_thumbprints: extra recipients come after the partner's certificate; "
                "give encryption_thumbprint (or encryption_certificates) too"
            )
        twice = sorted({tp for tp in extra if extra.count(tp) > 1})
        if twice:
            raise ValueError(
                f"additional_recipient_thumbprints: {', '.join(twice)} is listed more than once; "
                "each recipient gets one RecipientInfo"
            )
        own = {self.encryption_thumbprint, *(e.thumbprint for e in self.encryption_certificates or ())}
        repeated = [tp for tp in extra if tp in own]
        if repeated:
            raise ValueError(
                f"additional_recipient_thumbprints: {', '.join(repeated)} is the partner's own encryption "
                "certificate, which is always the first recipient; list only the others (e.g. an archive key)"
            )

    @property
    def encrypts_to(self) -> bool:
        return self.encryption_thumbprint is not None or self.encryption_certificates is not None

    def encryption_at(self, now: dt.datetime) -> str | None:
        """The partner certificate in force at ``now`` (None: the schedule has not started yet)."""
        if self.encryption_certificates is None:
            return self.encryption_thumbprint
        entry = in_force(self.encryption_certificates, now)
        return None if entry is None else entry.thumbprint


class Config(_Frozen):
    """The whole file; cross-references are checked here so a bad file never reaches a message."""

    group: Group
    pipelines: dict[str, PipelineConfig]
    send_ports: dict[Annotated[str, Field(pattern=_NAME)], SendPort]

    @model_validator(mode="after")
    def _references(self) -> Config:
        for name, port in self.send_ports.items():
            pipeline = self.pipelines.get(port.pipeline)
            if pipeline is None:
                raise ValueError(
                    f"send_ports.{name}.pipeline: {port.pipeline!r} is not defined; "
                    f"defined: {', '.join(sorted(self.pipelines)) or 'none'}"
                )
            if pipeline.encrypts and not port.encrypts_to:
                raise ValueError(
                    f"send_ports.{name}.encryption_thumbprint: required (or encryption_certificates), "
                    f"pipeline {port.pipeline!r} encrypts"
                )
            if port.additional_recipient_thumbprints and not pipeline.encrypts:
                raise ValueError(
                    f"send_ports.{name}.additional_recipient_thumbprints: pipeline {port.pipeline!r} does not "
                    "encrypt (enable_encryption = false), so there is nothing for extra recipients to decrypt; "
                    "turn encryption on or drop them"
                )
        return self

    def ports_of(self, host: str) -> dict[str, SendPort]:
        return {name: port for name, port in self.send_ports.items() if port.host == host}

    @property
    def hosts(self) -> set[str]:
        return {port.host for port in self.send_ports.values()}


def _allowed(err: Any, names: str) -> str:
    if err["type"] == "extra_forbidden":
        return f"unknown property; allowed: {names}"
    msg: str = err["msg"]
    return msg


def field_path(loc: tuple[int | str, ...]) -> str:
    # pydantic's loc for nested components looks like ('pipelines', 'P', 'encode', 0, 'properties', 'x');
    # show it as the TOML author wrote it: pipelines.P.encode[0].x
    out = ""
    for part in loc:
        if part in {"properties"} or (isinstance(part, str) and re.fullmatch(r"function-\w+\[.*\]", part)):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
