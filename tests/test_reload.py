"""Hot reload that cannot make things worse (issue 12): a candidate config and store are read off the event
loop and checked with start-up's rules before they replace the ones in force; a certificate error looks at
the store again before it suspends; auto_resume picks the ports a reload fixed."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from pki import Issued, write_other_people, write_personal_pfx
from pydantic import SecretStr

from worker.host.instance import HostInstance
from worker.host.supervisor import Supervisor
from worker.identity.store import CertificateStore
from worker.ops.autoresume import fixed_ports
from worker.pipeline.catalogue import load_config
from worker.pipeline.runtime import Runtime
from worker.settings import BrokerSettings, InstanceSettings, StoreSettings

ACCOUNT = "svc-a"
PASSWORD = "pfx-pass"

CONFIG = """
[group]
name = "Contoso"
signing_thumbprint = "{signer}"

[pipelines.SignAndEncrypt]
encode = [ {{ component = "mime_smime_encoder", signature_type = "BlobSign", enable_encryption = true }} ]

[send_ports.Orders]
host = "SendHost"
pipeline = "SignAndEncrypt"
encryption_thumbprint = "{partner}"
delivery_key = "orders"
auto_resume = ["encryption-cert-not-found"]

[send_ports.Invoices]
host = "SendHost"
pipeline = "SignAndEncrypt"
encryption_thumbprint = "{partner}"
delivery_key = "invoices"
"""


class Setup:
    def __init__(self, root: Path, signer: Issued, partner: Issued) -> None:
        self.root, self.signer, self.partner = root, signer, partner
        self.stores = root / "stores"
        self.config = root / "sendpipe.toml"
        self.pfx = write_personal_pfx(self.stores, ACCOUNT, "group-signing", signer, PASSWORD.encode())
        self.partner_file = write_other_people(self.stores, ACCOUNT, "fabrikam", partner)
        self.write_config(signer.thumbprint)
        self.made: list[HostInstance] = []

    def write_config(self, signer: str) -> None:
        self.config.write_text(CONFIG.format(signer=signer, partner=self.partner.thumbprint))

    def open_store(self, password: str = PASSWORD) -> CertificateStore:
        return CertificateStore.open(self.stores, ACCOUNT, SecretStr(password))

    def supervisor(self, password: str = PASSWORD, config: Path | None = None) -> Supervisor:
        config = config or self.config
        runtime = Runtime.build(load_config(config), self.open_store(), "SendHost")
        inst = InstanceSettings(host="SendHost", host_instance="unit", config=config, worker_threads=1)
        instance = HostInstance(inst, BrokerSettings(), runtime, "SendHost")
        self.made.append(instance)
        store = StoreSettings(store_root=self.stores, service_account=ACCOUNT, store_password=SecretStr(password))
        return Supervisor(instance, inst, store)


@pytest.fixture(autouse=True)
def _own_log_capture() -> Iterator[None]:
    """Log lines go to a capture of this test, whatever a CLI test before configured (a closed stream)."""
    with structlog.testing.capture_logs():
        yield


@pytest.fixture
def setup(tmp_path: Path, signer_rsa2048: Issued, partner: Issued) -> Iterator[Setup]:
    s = Setup(tmp_path, signer_rsa2048, partner)
    yield s
    for instance in s.made:
        instance._pool.shutdown()


def _events(logs: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


async def test_a_half_copied_pkcs12_is_rejected_and_the_previous_store_kept(setup: Setup) -> None:
    with structlog.testing.capture_logs() as logs:
        sup = setup.supervisor()
        before = sup.instance.runtime
        setup.pfx.write_bytes(setup.pfx.read_bytes()[:700])  # the copy is still under way
        await sup.reload()
    assert sup.instance.runtime is before
    (rejected,) = _events(logs, "store.rejected")
    assert rejected["error_code"] == "signing-cert-not-found" and rejected["kept"] == "previous"
    assert "start-up would refuse it" in rejected["error"] and not _events(logs, "store.reloaded")
    assert before.pipelines["Orders"].run is not None and before.store.signing(setup.signer.thumbprint)


async def test_a_wrong_password_after_rotation_is_rejected(setup: Setup) -> None:
    with structlog.testing.capture_logs() as logs:
        sup = setup.supervisor()
        sup.store_settings = StoreSettings(
            store_root=setup.stores, service_account=ACCOUNT, store_password=SecretStr("not-it")
        )
        before = sup.instance.runtime
        write_personal_pfx(setup.stores, ACCOUNT, "group-signing-2027", setup.signer, PASSWORD.encode())
        await sup.reload()
    assert sup.instance.runtime is before
    assert _events(logs, "store.rejected")[0]["error_code"] == "signing-cert-not-found"
    assert "not-it" not in repr(logs)


async def test_a_signing_thumbprint_not_yet_in_personal_is_rejected(setup: Setup, signer_ec: Issued) -> None:
    with structlog.testing.capture_logs() as logs:
        sup = setup.supervisor()
        before = sup.instance.runtime
        setup.write_config(signer_ec.thumbprint)  # config changed before the new PKCS#12 was dropped in
        await sup.reload()
        assert sup.instance.runtime is before
        assert _events(logs, "config.rejected")[0]["error_code"] == "signing-cert-not-found"
        # Then the operator drops the certificate in: the next look installs both.
        write_personal_pfx(setup.stores, ACCOUNT, "group-signing-2027", signer_ec, PASSWORD.encode())
        await sup.reload()
    after = sup.instance.runtime
    assert after is not before and after.config.group.signing_thumbprint == signer_ec.thumbprint
    assert _events(logs, "config.reloaded") and _events(logs, "store.reloaded")


async def test_a_key_made_readable_by_others_takes_effect_at_once(setup: Setup) -> None:
    with structlog.testing.capture_logs() as logs:
        sup = setup.supervisor()
        setup.pfx.chmod(0o644)
        await sup.reload()
    assert not _events(logs, "store.rejected")
    with pytest.raises(Exception, match="readable by group or others"):
        sup.instance.runtime.store.signing(setup.signer.thumbprint)


async def test_a_partner_file_being_copied_in_does_not_replace_the_one_in_use(setup: Setup) -> None:
    with structlog.testing.capture_logs() as logs:
        sup = setup.supervisor()
        before = sup.instance.runtime
        setup.partner_file.write_bytes(setup.partner_file.read_bytes()[:100])
        await sup.reload()
    assert sup.instance.runtime is before
    (rejected,) = _events(logs, "store.rejected")
    assert rejected["error_code"] == "encryption-cert-not-found" and "fabrikam.cer" in rejected["error"]


async def test_files_are_loaded_off_the_event_loop(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    sup = setup.supervisor()
    threads: list[str] = []
    real = CertificateStore.open

    def spy(*args: Any, **kwargs: Any) -> CertificateStore:
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(CertificateStore, "open", spy)
    write_personal_pfx(setup.stores, ACCOUNT, "another", setup.signer, PASSWORD.encode())
    await sup.reload()
    assert threads and threading.main_thread().name not in threads


async def test_refresh_before_suspending_reloads_only_when_the_files_changed(setup: Setup) -> None:
    setup.partner_file.unlink()  # the partner certificate is missing at start
    sup = setup.supervisor()
    used = sup.instance.runtime
    assert await sup.refresh(used) is False  # nothing changed: stat only, no reload
    write_other_people(setup.stores, ACCOUNT, "fabrikam", setup.partner)  # the operator's fix
    assert await sup.refresh(used) is True  # the fix is seen at once (a resume right after it is delivered)
    assert sup.instance.runtime.store.recipient(setup.partner.thumbprint)
    assert await sup.refresh(used) is True  # another message of the old snapshot: the new one is there


async def test_a_replaced_config_is_reloaded_and_a_pinned_old_inode_is_not(setup: Setup) -> None:
    """A single-file bind mount keeps showing the inode it was made with; /proc/self/fd/N is the same view
    of it here. Replacing the file (sed -i: a new file renamed over it) only unlinks that inode: nothing
    to reload there (a warning says so, once), while a watcher of the path sees a new file and reloads it."""
    fd = os.open(setup.config, os.O_RDONLY)
    try:
        by_path, pinned = setup.supervisor(), setup.supervisor(config=Path(f"/proc/self/fd/{fd}"))
        with structlog.testing.capture_logs() as logs:
            edited = setup.config.with_name("sendpipe.toml.new")
            edited.write_text(setup.config.read_text() + "\n# edited\n")
            edited.replace(setup.config)
            await pinned.reload()
            assert not _events(logs, "config.reloaded")
            (detached,) = _events(logs, "config.detached")  # told once that its edits will never arrive
            assert detached["log_level"] == "warning" and "mount its folder" in detached["hint"]
            await pinned.reload()
            assert len(_events(logs, "config.detached")) == 1
            await by_path.reload()
        assert len(_events(logs, "config.reloaded")) == 1
        assert by_path.instance.runtime.config is not pinned.instance.runtime.config
    finally:
        os.close(fd)


async def test_concurrent_refreshes_reload_once(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    setup.partner_file.unlink()
    sup = setup.supervisor()
    used = sup.instance.runtime
    write_other_people(setup.stores, ACCOUNT, "fabrikam", setup.partner)
    opens: list[int] = []
    real = CertificateStore.open

    def counting(*args: Any, **kwargs: Any) -> CertificateStore:
        opens.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(CertificateStore, "open", counting)
    results = await asyncio.gather(*(sup.refresh(used) for _ in range(20)))
    assert all(results) and len(opens) == 1


def test_auto_resume_only_for_the_ports_a_reload_fixed(setup: Setup) -> None:
    setup.partner_file.unlink()
    config = load_config(setup.config)
    broken = Runtime.build(config, setup.open_store(), "SendHost")
    write_other_people(setup.stores, ACCOUNT, "fabrikam", setup.partner)
    fixed = Runtime.build(config, setup.open_store(), "SendHost")
    # Orders opted in; Invoices (same fix) did not.
    assert fixed_ports(broken, fixed, "SendHost", 30) == {"Orders": frozenset({"encryption-cert-not-found"})}
    assert fixed_ports(fixed, fixed, "SendHost", 30) == {}  # once per cause: no fix, no resume
    assert fixed_ports(fixed, broken, "SendHost", 30) == {}
