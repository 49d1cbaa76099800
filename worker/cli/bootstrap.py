"""Load what every command needs, the way a host instance does: settings, config, store."""

from __future__ import annotations

import sys

from worker import logs, settings
from worker.config.model import Config
from worker.errors import Code, ConfigError, StoreError, unreadable
from worker.identity.store import CertificateStore
from worker.pipeline.catalogue import load_config
from worker.settings import InstanceSettings, StoreSettings


def load_common(*, need_host: bool) -> tuple[InstanceSettings, StoreSettings, Config, CertificateStore]:
    """Settings, config and store as a host instance loads them; ConfigError/StoreError propagate."""
    inst = settings.load(InstanceSettings)
    logs.configure(inst.log_format, inst.log_level, stream=sys.stderr)
    store_settings = settings.load(StoreSettings)
    config = load_config(inst.config)
    if need_host:
        if not inst.host:
            raise ConfigError("SENDPIPE_HOST is required: the host this instance serves", code=Code.SETTINGS_INVALID)
        if inst.host not in config.hosts:
            raise ConfigError(
                f"host {inst.host!r} has no send ports in {inst.config}; hosts: {', '.join(sorted(config.hosts))}",
                code=Code.UNKNOWN_HOST,
            )
    try:
        store = CertificateStore.open(
            store_settings.store_root, store_settings.service_account, store_settings.store_password
        )
    except OSError as exc:  # e.g. a store folder this uid may not list (a host directory owned by another user)
        where = exc.filename if exc.filename is not None else store_settings.store_root
        raise StoreError(unreadable("the certificate store", where, exc), code=Code.FILE_UNREADABLE) from None
    return inst, store_settings, config, store
