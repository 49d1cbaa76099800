"""SENDPIPE_* settings, one small object per concern, read from the environment and /run/secrets."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.errors import ConfigError

SECRETS_DIR = Path("/run/secrets")


def _config() -> SettingsConfigDict:
    # Secrets are files named like the variable in lower case (Docker secrets); pydantic-settings
    # warns about a missing directory, so only point at it when it exists.
    secrets = str(SECRETS_DIR) if SECRETS_DIR.is_dir() else None
    return SettingsConfigDict(
        env_prefix="SENDPIPE_",
        secrets_dir=secrets,
        case_sensitive=False,
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,  # a bad password must never be echoed into a log
    )


class BrokerSettings(BaseSettings):
    """How this instance talks to RabbitMQ."""

    model_config = _config()

    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    amqp_ca_file: Path | None = None  # CA bundle for amqps:// (server verification)
    prefetch_count: int = Field(default=0, ge=0, le=65535)  # 0: derived from the worker thread count
    publish_timeout_s: float = Field(default=30.0, gt=0)
    heartbeat_s: int = Field(default=30, ge=0)
    reconnect_initial_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=15.0, gt=0)


class StoreSettings(BaseSettings):
    """Which certificate store this instance opens, and how."""

    model_config = _config()

    store_root: Path = Path("stores")
    service_account: str
    store_password: SecretStr | None = None


class InstanceSettings(BaseSettings):
    """What this host instance is and how it runs."""

    model_config = _config()

    config: Path = Path("config/sendpipe.toml")
    host: str | None = None
    host_instance: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    worker_threads: int = Field(default=0, ge=0)  # 0: one per core
    # Messages up to this size are encoded on the event loop: the thread hand-off costs more than a
    # small message's encoding, and the loop is blocked for at most ~1 ms (docs/performance.md).
    inline_max_bytes: int = Field(default=64 * 1024, ge=0)
    max_message_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    # Input headers plus ours must fit one AMQP frame (frame_max, 128 KiB by default) when republished.
    max_header_bytes: int = Field(default=64 * 1024, gt=0, le=120 * 1024)
    drain_timeout_s: float = Field(default=30.0, ge=0)
    expiry_warning_days: int = Field(default=30, ge=0)
    reload_interval_s: float = Field(default=10.0, gt=0)
    stats_interval_s: float = Field(default=60.0, gt=0)
    health_file: Path | None = None  # heartbeat file written while consuming; `sendpipe health` reads it
    health_max_age_s: float = Field(default=30.0, gt=0)

    @property
    def threads(self) -> int:
        return self.worker_threads or (os.cpu_count() or 1)


S = TypeVar("S", bound=BaseSettings)


def load(kind: type[S]) -> S:
    """Build one settings object, turning pydantic's error into a ConfigError naming the variables."""
    try:
        return kind()
    except ValidationError as exc:
        problems = "; ".join(
            f"SENDPIPE_{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}", code="settings-invalid") from None
