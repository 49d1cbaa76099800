"""The send pipeline: an ordered tuple of small stages, each ``process(message) -> message``, no I/O."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel

from worker.errors import Code, ConfigError, SendpipeError
from worker.identity.store import CertificateStore
from worker.message import Message


class Stage(Protocol):
    """One pipeline component: pure and synchronous; raises a SendpipeError to fail the message."""

    name: str

    def process(self, message: Message) -> Message: ...


@dataclass(frozen=True, slots=True)
class StageContext:
    """What a component may use: this account's store (in memory) and the port's certificates."""

    store: CertificateStore
    group_signing_thumbprint: str
    send_port: str
    encryption_thumbprint: str | None
    additional_recipients: tuple[str, ...] = ()  # after the partner's, in the config's order


@dataclass(frozen=True, slots=True)
class Needs:
    """The certificates a component needs for its properties: preflight checks them before any message."""

    signing: bool = False
    encryption: bool = False
    check_crl: bool = False

    def __or__(self, other: Needs) -> Needs:
        return Needs(
            self.signing or other.signing, self.encryption or other.encryption, self.check_crl or other.check_crl
        )


@dataclass(frozen=True, slots=True)
class ComponentType:
    """A registered component: where it may sit, its properties model, and how to build it."""

    name: str
    stage: str
    properties: type[BaseModel]
    build: Callable[[BaseModel, StageContext], Stage]
    needs: Callable[[BaseModel], Needs] = lambda _: Needs()

    def promises_encryption(self, properties: BaseModel) -> bool:
        """A component that needs an encryption certificate promises encryption: the pipeline fails closed."""
        return self.needs(properties).encryption


@dataclass(frozen=True, slots=True)
class Pipeline:
    """A send port's pipeline, built for one store snapshot; pure and synchronous (large messages run in a pool)."""

    name: str
    steps: tuple[tuple[str, Stage], ...]
    encrypts: bool  # some component promised encryption: fail closed if nothing was encrypted

    def run(self, message: Message) -> Message:
        for stage_name, component in self.steps:
            try:
                message = component.process(message)
            except SendpipeError as exc:
                exc.stage = exc.stage or stage_name
                raise
        if self.encrypts and message.recipient_thumbprint is None:
            raise ConfigError(
                f"pipeline {self.name} asks for encryption but no stage encrypted the message",
                code=Code.ENCRYPTION_NOT_APPLIED,
                stage="encode",
            )
        return message
