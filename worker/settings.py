"""SENDPIPE_* settings, one small object per concern, read from the environment and /run/secrets."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from secrets import token_hex
from typing import Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from worker.errors import Code, ConfigError, unreadable

SECRETS_DIR = Path("/run/secrets")
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def split_urls(value: str) -> list[str]:
    """``SENDPIPE_AMQP_URL`` as a node list; ValueError (never echoing the value: it holds a password)."""
    urls = [part.strip() for part in value.split(",")]
    if not urls or any(not u for u in urls):
        raise ValueError("empty URL in the list (URLs are separated by single commas)")
    for number, url in enumerate(urls, 1):
        where = f"URL {number} of {len(urls)}"
        parts = urlsplit(url)
        if parts.scheme not in {"amqp", "amqps"}:
            raise ValueError(
                f"{where}: not a full amqp:// or amqps:// URL (a cluster is one full URL per node, separated "
                "by commas: amqp://user:pass@h1:5672/vhost,amqp://user:pass@h2:5672/vhost)"
            )
        try:
            port = parts.port
        except ValueError:
            raise ValueError(
                f"{where}: the port is not a number (one full URL per node, e.g. "
                "amqp://user:pass@h1:5672/,amqp://user:pass@h2:5672/)"
            ) from None
        if not parts.hostname or (port is not None and not 0 < port < 65536):
            raise ValueError(f"{where}: no host, or a port out of range")
    return urls


def parse_listen(value: str) -> tuple[str, int]:
    """``SENDPIPE_METRICS_LISTEN``: ``HOST:PORT`` (``[v6]:PORT`` too) as (host, port); ValueError with the reason."""
    host, sep, port = value.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT (e.g. 0.0.0.0:9464, or 127.0.0.1:9464 for local probes only)")
    return host, int(port)


def probe_address(listen: str) -> tuple[str, int]:
    """Where `sendpipe health` connects for a listener on ``listen``: a wildcard address is reached locally."""
    host, port = parse_listen(listen)
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host), port  # noqa: S104 - mapped away from it


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

    # One URL, or the nodes of one cluster as full URLs separated by commas (SPEC), tried in order.
    amqp_url: SecretStr = SecretStr(DEFAULT_AMQP_URL)
    amqp_ca_file: Path | None = None  # CA bundle for amqps:// (server verification)
    prefetch_count: int = Field(default=0, ge=0, le=65535)  # 0: derived from the worker thread count
    publish_timeout_s: float = Field(default=30.0, gt=0)
    heartbeat_s: int = Field(default=30, ge=0)
    reconnect_initial_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=15.0, gt=0)
    # RabbitMQ 4's default max_message_size: larger entities are suspended before publishing, since
    # the broker would close the channel (406) and the message would loop through redeliveries.
    broker_max_message_bytes: int = Field(default=16 * 1024 * 1024, gt=0, le=512 * 1024 * 1024)

    @field_validator("amqp_url")
    @classmethod
    def _urls_parse(cls, value: SecretStr) -> SecretStr:
        split_urls(value.get_secret_value())  # raises ValueError without echoing the value
        return value

    @property
    def amqp_urls(self) -> list[str]:
        """The nodes to try, in order."""
        return split_urls(self.amqp_url.get_secret_value())


class StoreSettings(BaseSettings):
    """Which certificate store this instance opens, and how."""

    model_config = _config()

    store_root: Path = Path("stores")
    service_account: str
    store_password: SecretStr | None = None


def default_instance_name() -> str:
    """``<hostname>-<pid>-<6 hex>``: hostname and pid alone repeat across replicas sharing the host's
    network namespace (Docker ``network_mode: host``: one hostname, each instance pid 1)."""
    return f"{socket.gethostname()}-{os.getpid()}-{token_hex(3)}"


class InstanceSettings(BaseSettings):
    """What this host instance is and how it runs."""

    model_config = _config()

    config: Path = Path("config/sendpipe.toml")
    host: str | None = None
    host_instance: str = Field(default_factory=default_instance_name)
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
    # HOST:PORT of the HTTP listener for /metrics, /livez, /readyz (SPEC "Metrics"); none: off, and
    # `sendpipe health` falls back to the heartbeat file.
    metrics_listen: str | None = None
    health_timeout_s: float = Field(default=4.0, gt=0)  # `sendpipe health`: how long to wait for the listener
    # Payload bytes being processed at once (0: derived from the memory limit, see in_flight_budget).
    max_in_flight_bytes: int = Field(default=0, ge=0)

    @field_validator("metrics_listen")
    @classmethod
    def _listen_parses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_listen(value)
        return value

    @property
    def threads(self) -> int:
        return self.worker_threads or (os.cpu_count() or 1)

    @property
    def in_flight_budget(self) -> int:
        """A large message costs ~15x its size while it is encoded and published (docs/performance.md):
        by default 1/32 of the memory this process may use, between 16 MiB and 512 MiB."""
        if self.max_in_flight_bytes:
            return self.max_in_flight_bytes
        return min(512 << 20, max(16 << 20, memory_limit_bytes() // 32))


def memory_limit_bytes() -> int:
    """This process's cgroup memory limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``, found through
    /proc/self/cgroup, as a container runtime sets it), else the machine's memory."""
    candidates: list[Path] = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        if controllers == "":
            candidates.append(Path("/sys/fs/cgroup", rel, "memory.max"))
        elif "memory" in controllers.split(","):
            candidates.append(Path("/sys/fs/cgroup/memory", rel, "memory.limit_in_bytes"))
    for candidate in candidates:
        try:
            text = candidate.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # "max" (v2) or a huge number (v1) mean no limit
            return int(text)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 1 << 30


# Variables read by the settings objects above (and the secrets they may come from), as SENDPIPE_* names.
def known_variables() -> set[str]:
    fields = {*BrokerSettings.model_fields, *StoreSettings.model_fields, *InstanceSettings.model_fields}
    return {f"SENDPIPE_{name.upper()}" for name in fields}


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """SENDPIPE_* variables no setting reads: a typo would otherwise silently fall back to a default."""
    env = os.environ if environ is None else environ
    known = known_variables()
    return sorted(name for name in env if name.upper().startswith("SENDPIPE_") and name.upper() not in known)


def check_broker_variables(environ: Mapping[str, str] | None = None) -> None:
    """SPEC: with SENDPIPE_AMQP_URL unset but another SENDPIPE_AMQP* set, never use the default broker."""
    env = os.environ if environ is None else environ
    names = {name.upper() for name in env}
    url_secret = SECRETS_DIR / "sendpipe_amqp_url"
    if "SENDPIPE_AMQP_URL" in names or url_secret.is_file():
        return
    others = sorted(n for n in names if n.startswith("SENDPIPE_AMQP"))
    if others:
        raise ConfigError(
            f"SENDPIPE_AMQP_URL is not set but {', '.join(others)} is: refusing to fall back to the default "
            f"broker ({DEFAULT_AMQP_URL.replace('guest:guest@', '')}); set SENDPIPE_AMQP_URL (a typo?)",
            code=Code.SETTINGS_INVALID,
        )


S = TypeVar("S", bound=BaseSettings)


def load(kind: type[S]) -> S:
    """Build one settings object, turning pydantic's error into a ConfigError naming the variables."""
    if kind is BrokerSettings:
        check_broker_variables()
    try:
        return kind()
    except SettingsError as exc:
        # pydantic-settings wraps what went wrong reading a source, e.g. an unreadable /run/secrets file.
        field = re.search(r'field "(\w+)"', str(exc))
        variable = f"SENDPIPE_{field.group(1).upper()}" if field else "a SENDPIPE_* setting"
        cause = exc.__cause__
        if isinstance(cause, OSError):
            where = cause.filename if cause.filename is not None else SECRETS_DIR
            raise ConfigError(
                f"{variable}: {unreadable('the secret file', where, cause)}", code=Code.FILE_UNREADABLE
            ) from None
        raise ConfigError(f"{variable}: cannot be read ({cause or exc})", code=Code.SETTINGS_INVALID) from None
    except ValidationError as exc:
        problems = "; ".join(
            f"SENDPIPE_{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}", code=Code.SETTINGS_INVALID) from None
