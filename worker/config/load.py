"""Reading the config file: TOML 1.1 into the models, every error naming the file, the field and what is allowed."""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import ValidationError

if sys.version_info >= (3, 15):
    import tomllib
else:  # TOML 1.1 (multi-line inline tables, as in SPEC's example) before Python 3.15
    import tomli as tomllib

from worker.config.model import Catalogue, Config, field_path
from worker.errors import AlgorithmNotSupported, Code, ConfigError


def load_config(path: Path, catalogue: Catalogue) -> Config:
    """Read and validate the config file against a component catalogue (worker.pipeline.catalogue's
    ``load_config`` passes its own); every error names the file, the field path and what is allowed."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found (set SENDPIPE_CONFIG)", code=Code.CONFIG_NOT_FOUND) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config ({type(exc).__name__})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return Config.model_validate(raw, context={"catalogue": catalogue})
    except ValidationError as exc:
        raise _config_error(path, exc) from None


def _config_error(path: Path, exc: ValidationError) -> ConfigError:
    lines = []
    legacy = False
    for err in exc.errors(include_url=False):
        legacy = legacy or err["type"] == "algorithm_not_supported"
        where = field_path(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {where}: {msg}" if where else f"{path}: {msg}")
    kind = AlgorithmNotSupported if legacy else ConfigError
    return kind("\n".join(lines))
