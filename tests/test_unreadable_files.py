"""An unreadable secret or store is a coded one-line error naming the file and the process's uid, not a traceback.

(Tests may run as root, whom file modes do not stop: the failing read is injected where the OS would raise it.)
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest
from pki import Issued, write_other_people, write_personal_pem
from pydantic_settings import SettingsConfigDict

from worker import settings
from worker.cli.main import main
from worker.errors import Code, ConfigError
from worker.identity.store import CertificateStore
from worker.settings import StoreSettings


def _denied(path: Path) -> PermissionError:
    return PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))


def test_unreadable_secret_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "sendpipe_store_password"
    secret.write_text("pw")
    real_read_text = Path.read_text

    def read_text(self: Path, *args: Any, **kwargs: Any) -> str:
        if self.name == secret.name:
            raise _denied(self)
        return real_read_text(self, *args, **kwargs)

    class FromSecrets(StoreSettings):
        model_config = SettingsConfigDict(**{**StoreSettings.model_config, "secrets_dir": str(tmp_path)})

    monkeypatch.setattr(Path, "read_text", read_text)
    monkeypatch.setenv("SENDPIPE_SERVICE_ACCOUNT", "svc-a")
    with pytest.raises(ConfigError) as err:
        settings.load(FromSecrets)
    assert err.value.code == Code.FILE_UNREADABLE
    message = err.value.message
    assert message.startswith("SENDPIPE_STORE_PASSWORD: cannot read the secret file ")
    assert str(secret) in message and f"uid {os.getuid()}, gid {os.getgid()}" in message
    assert "Permission denied" in message


def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, signer: Issued, partner: Issued) -> Path:
    stores = tmp_path / "stores"
    write_personal_pem(stores, "svc-a", "group", signer)
    write_other_people(stores, "svc-a", "partner", partner)
    config = tmp_path / "sendpipe.toml"
    config.write_text(f"""
[group]
name = "Contoso"
signing_thumbprint = "{signer.thumbprint}"
[pipelines.Sign]
encode = [ {{ component = "mime_smime_encoder", signature_type = "BlobSign" }} ]
[send_ports.Orders]
host = "SendHost"
pipeline = "Sign"
delivery_key = "orders"
""")
    for name in [n for n in os.environ if n.startswith("SENDPIPE_")]:
        monkeypatch.delenv(name)
    for name, value in {
        "SENDPIPE_CONFIG": str(config),
        "SENDPIPE_HOST": "SendHost",
        "SENDPIPE_SERVICE_ACCOUNT": "svc-a",
        "SENDPIPE_STORE_ROOT": str(stores),
        "SENDPIPE_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/",
    }.items():
        monkeypatch.setenv(name, value)
    return stores / "svc-a" / "personal"


def test_unreadable_store_folder_check_and_run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    signer_rsa2048: Issued,
    partner: Issued,
) -> None:
    personal = _env(monkeypatch, tmp_path, signer_rsa2048, partner)

    def refuse(*args: Any, **kwargs: Any) -> CertificateStore:
        raise _denied(personal)

    monkeypatch.setattr(CertificateStore, "open", refuse)
    assert main(["check"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one sentence, no traceback
    assert err[0].startswith("sendpipe: error [file-unreadable]: cannot read the certificate store ")
    assert str(personal) in err[0] and f"uid {os.getuid()}" in err[0]
    # `run` says the same as its JSON refusal line, and exits 1.
    assert main(["run"]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    refused = [line for line in lines if line.get("event") == "instance.refused"]
    assert refused and refused[0]["error_code"] == "file-unreadable" and str(personal) in refused[0]["error"]
