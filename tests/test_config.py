"""The TOML config and the SENDPIPE_* settings: what loads, and what each refusal says."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from worker import settings
from worker.config.model import Config
from worker.errors import AlgorithmNotSupported, ConfigError
from worker.pipeline.catalogue import load_config
from worker.pipeline.encoder import EncoderProperties
from worker.settings import StoreSettings

SIGNING_TP = "0B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3D4E"
PARTNER_TP = "9F1122334455667788990AABBCCDDEEFF0011223"


def _spaced(tp: str) -> str:
    return " ".join(tp[i : i + 2] for i in range(0, 40, 2))


# SPEC "Config file", with the elided thumbprints written out as Windows shows them (a left-to-right
# mark in front, pairs separated by spaces), and its multi-line inline table (TOML 1.1) kept as is.
SPEC_EXAMPLE = f"""
[group]
name = "Contoso"
signing_thumbprint = "\u200e{_spaced(SIGNING_TP).lower()}"            # the group signing certificate

[pipelines.SignAndEncrypt]
encode = [ {{ component = "mime_smime_encoder", signature_type = "BlobSign",
             enable_encryption = true, encryption_algorithm = "AES256" }} ]

[send_ports.FabrikamOrders]
host = "SendHost"
pipeline = "SignAndEncrypt"
encryption_thumbprint = "{_spaced(PARTNER_TP)}"         # the send port's certificate (Other People)
delivery_key = "fabrikam.orders"
retry_count = 3                              # transient failures
retry_interval_s = 300
"""

# A small valid file the invalid cases are derived from, one change at a time.
BASE = f"""
[group]
name = "Contoso"
signing_thumbprint = "{SIGNING_TP}"

[pipelines.Sign]
encode = [ {{ component = "mime_smime_encoder", signature_type = "ClearSign" }} ]

[pipelines.Encrypt]
encode = [ {{ component = "mime_smime_encoder", enable_encryption = true }} ]

[send_ports.Plain]
host = "SendHost"
pipeline = "Sign"
delivery_key = "plain"

[send_ports.Secret]
host = "SendHost"
pipeline = "Encrypt"
encryption_thumbprint = "{PARTNER_TP}"
delivery_key = "secret"
retry_count = 3
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sendpipe.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _refused(tmp_path: Path, text: str) -> ConfigError:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(path) in str(exc.value), "the error must name the file"
    return exc.value


def test_spec_example_loads(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, SPEC_EXAMPLE))
    assert isinstance(config, Config)
    assert config.group.name == "Contoso"
    assert config.group.signing_thumbprint == SIGNING_TP
    pipeline = config.pipelines["SignAndEncrypt"]
    assert pipeline.pre_assemble == () and pipeline.assemble == ()
    (component,) = pipeline.encode
    assert component.component == "mime_smime_encoder"
    props = component.properties
    assert isinstance(props, EncoderProperties)
    assert props.signature_type == "BlobSign"
    assert props.enable_encryption is True
    assert props.encryption_algorithm == "AES256"
    # Unset properties keep BizTalk's defaults (SPEC).
    assert props.add_signing_cert_to_message is True
    assert props.signing_algorithm == "SHA256"
    assert props.content_transfer_encoding == "base64"
    assert props.check_revocation_list is False
    assert props.send_body_part_as_attachment is False
    assert pipeline.encrypts is True
    port = config.send_ports["FabrikamOrders"]
    assert port.host == "SendHost"
    assert port.pipeline == "SignAndEncrypt"
    assert port.encryption_thumbprint == PARTNER_TP
    assert port.delivery_key == "fabrikam.orders"
    assert port.retry_count == 3
    assert port.retry_interval_s == 300
    assert config.hosts == {"SendHost"}
    assert set(config.ports_of("SendHost")) == {"FabrikamOrders"}
    assert config.ports_of("OtherHost") == {}


def test_base_config_loads(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, BASE))
    assert config.pipelines["Sign"].encrypts is False
    assert config.pipelines["Encrypt"].encrypts is True
    assert config.send_ports["Plain"].encryption_thumbprint is None
    assert config.send_ports["Plain"].retry_count == 3  # default


def test_unknown_component(tmp_path: Path) -> None:
    err = _refused(
        tmp_path, BASE.replace('component = "mime_smime_encoder", signature_type', 'component = "zip", signature_type')
    )
    assert type(err) is ConfigError
    assert err.code == "config-invalid"
    assert "pipelines.Sign.encode[0]" in str(err)
    assert "'zip'" in str(err)
    assert "allowed: mime_smime_encoder" in str(err)


def test_component_in_the_wrong_stage(tmp_path: Path) -> None:
    err = _refused(tmp_path, BASE.replace("[pipelines.Sign]\nencode =", "[pipelines.Sign]\nassemble ="))
    assert err.code == "config-invalid"
    assert "pipelines.Sign" in str(err)
    assert "'encode' stage" in str(err)
    assert "'assemble'" in str(err)


def test_unknown_property(tmp_path: Path) -> None:
    err = _refused(tmp_path, BASE.replace('signature_type = "ClearSign"', 'signature_type = "ClearSign", signer = "x"'))
    assert err.code == "config-invalid"
    assert "pipelines.Sign.encode[0]" in str(err)
    assert "signer: unknown property" in str(err)
    # ...and what is allowed instead: the component's property names.
    for allowed in ("signature_type", "enable_encryption", "encryption_algorithm", "signing_algorithm"):
        assert allowed in str(err).split("signer: unknown property", 1)[1], allowed


def test_bad_signature_type(tmp_path: Path) -> None:
    err = _refused(tmp_path, BASE.replace('signature_type = "ClearSign"', 'signature_type = "Detached"'))
    assert err.code == "config-invalid"
    assert "pipelines.Sign.encode[0]" in str(err)
    assert "signature_type" in str(err)
    for allowed in ("NoSign", "ClearSign", "BlobSign"):
        assert allowed in str(err)


@pytest.mark.parametrize("cipher", ["DES", "DES3", "3DES", "RC2", "des3", "rc2-40", "TripleDES"])
def test_legacy_cipher_refused(cipher: str, tmp_path: Path) -> None:
    err = _refused(
        tmp_path,
        BASE.replace("enable_encryption = true", f'enable_encryption = true, encryption_algorithm = "{cipher}"'),
    )
    assert isinstance(err, AlgorithmNotSupported)
    assert err.code == "algorithm-not-supported"
    text = str(err)
    assert "pipelines.Encrypt.encode[0]" in text
    assert "encryption_algorithm" in text
    assert f"{cipher} is refused" in text
    assert "broken or deprecated" in text  # why
    assert "use AES256" in text  # what to use instead


@pytest.mark.parametrize("digest", ["SHA1", "SHA-1", "MD5", "md5", "sha1"])
def test_legacy_digest_refused(digest: str, tmp_path: Path) -> None:
    err = _refused(
        tmp_path,
        BASE.replace('signature_type = "ClearSign"', f'signature_type = "ClearSign", signing_algorithm = "{digest}"'),
    )
    assert isinstance(err, AlgorithmNotSupported)
    assert err.code == "algorithm-not-supported"
    text = str(err)
    assert "pipelines.Sign.encode[0]" in text
    assert "signing_algorithm" in text
    assert f"{digest} is refused" in text
    assert "forgeable" in text
    assert "use SHA256" in text


@pytest.mark.parametrize(
    ("written", "loaded"), [("aes-256", "AES256"), ("aes_128", "AES128"), ("AES256", "AES256"), ("aes-192", "AES192")]
)
def test_cipher_names_are_normalised(written: str, loaded: str, tmp_path: Path) -> None:
    config = load_config(
        _write(
            tmp_path,
            BASE.replace("enable_encryption = true", f'enable_encryption = true, encryption_algorithm = "{written}"'),
        )
    )
    props = config.pipelines["Encrypt"].encode[0].properties
    assert isinstance(props, EncoderProperties)
    assert props.encryption_algorithm == loaded


def test_send_port_naming_undefined_pipeline(tmp_path: Path) -> None:
    err = _refused(tmp_path, BASE.replace('pipeline = "Sign"', 'pipeline = "Sgin"'))
    assert err.code == "config-invalid"
    assert "send_ports.Plain.pipeline" in str(err)
    assert "'Sgin' is not defined" in str(err)
    assert "Encrypt, Sign" in str(err)  # the pipelines that are defined


def test_encrypting_pipeline_without_encryption_thumbprint(tmp_path: Path) -> None:
    err = _refused(tmp_path, BASE.replace(f'encryption_thumbprint = "{PARTNER_TP}"\n', ""))
    assert err.code == "config-invalid"
    assert "send_ports.Secret.encryption_thumbprint" in str(err)
    assert "required" in str(err)
    assert "'Encrypt' encrypts" in str(err)


@pytest.mark.parametrize("bad", ["0B 2C ...", "../etc/passwd", SIGNING_TP[:-1], SIGNING_TP + "00", "G" * 40])
def test_malformed_thumbprint(bad: str, tmp_path: Path) -> None:
    err = _refused(tmp_path, BASE.replace(f'signing_thumbprint = "{SIGNING_TP}"', f'signing_thumbprint = "{bad}"'))
    assert err.code == "config-invalid"
    assert "group.signing_thumbprint" in str(err)
    assert "40 hexadecimal digits" in str(err)


def test_malformed_encryption_thumbprint(tmp_path: Path) -> None:
    err = _refused(
        tmp_path, BASE.replace(f'encryption_thumbprint = "{PARTNER_TP}"', 'encryption_thumbprint = "9F 11 ..."')
    )
    assert "send_ports.Secret.encryption_thumbprint" in str(err)
    assert "40 hexadecimal digits" in str(err)


def test_negative_retry_count(tmp_path: Path) -> None:
    err = _refused(tmp_path, BASE.replace("retry_count = 3", "retry_count = -1"))
    assert err.code == "config-invalid"
    assert "send_ports.Secret.retry_count" in str(err)
    assert "greater than or equal to 0" in str(err)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.code == "config-not-found"
    assert str(path) in str(exc.value)
    assert "SENDPIPE_CONFIG" in str(exc.value)


def test_invalid_toml(tmp_path: Path) -> None:
    err = _refused(tmp_path, BASE.replace('name = "Contoso"', 'name = "Contoso'))
    assert err.code == "config-invalid"
    assert "not valid TOML" in str(err)
    assert "line 3" in str(err)


# -- settings -------------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.upper().startswith("SENDPIPE_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_service_account_is_required(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as exc:
        settings.load(StoreSettings)
    assert exc.value.code == "settings-invalid"
    assert "SENDPIPE_SERVICE_ACCOUNT" in str(exc.value)


def test_store_settings_from_environment(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("SENDPIPE_SERVICE_ACCOUNT", "svc-send")
    clean_env.setenv("SENDPIPE_STORE_ROOT", str(tmp_path))
    loaded = settings.load(StoreSettings)
    assert loaded.service_account == "svc-send"
    assert loaded.store_root == tmp_path
    assert loaded.store_password is None


def test_store_password_is_secret(clean_env: pytest.MonkeyPatch) -> None:
    secret = "pfx-Pa55word-that-must-not-leak"
    clean_env.setenv("SENDPIPE_SERVICE_ACCOUNT", "svc-send")
    clean_env.setenv("SENDPIPE_STORE_PASSWORD", secret)
    loaded = settings.load(StoreSettings)
    assert loaded.store_password is not None
    assert loaded.store_password.get_secret_value() == secret
    for shown in (repr(loaded), str(loaded), repr(loaded.store_password), str(loaded.store_password)):
        assert secret not in shown
    assert secret not in loaded.model_dump_json()


def test_store_password_not_in_error_of_invalid_settings(clean_env: pytest.MonkeyPatch) -> None:
    secret = "pfx-Pa55word-that-must-not-leak"
    clean_env.setenv("SENDPIPE_STORE_PASSWORD", secret)
    with pytest.raises(ConfigError) as exc:
        settings.load(StoreSettings)  # invalid: no service account
    assert exc.value.code == "settings-invalid"
    assert secret not in str(exc.value)
    assert secret not in repr(exc.value)


def test_invalid_setting_value_is_not_echoed(clean_env: pytest.MonkeyPatch) -> None:
    # hide_input_in_errors: a value put in the wrong variable (e.g. a password) is never echoed back.
    secret = "pfx-Pa55word-that-must-not-leak"
    clean_env.setenv("SENDPIPE_LOG_FORMAT", secret)
    with pytest.raises(ConfigError) as exc:
        settings.load(settings.InstanceSettings)
    assert exc.value.code == "settings-invalid"
    assert "SENDPIPE_LOG_FORMAT" in str(exc.value)
    assert secret not in str(exc.value)


# -- additional_recipient_thumbprints (SPEC "Config file") ----------------------------------------

ARCHIVE_TP = "5E7700112233445566778899AABBCCDDEEFF0011"
OTHER_TP = "44D0112233445566778899AABBCCDDEEFF001122"
_SECRET_DELIVERY = 'delivery_key = "secret"\n'


def _with_extra(extra: str, text: str = BASE) -> str:
    return text.replace(_SECRET_DELIVERY, _SECRET_DELIVERY + f"additional_recipient_thumbprints = {extra}\n")


def test_additional_recipients_load_normalised_in_order(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, _with_extra(f'["{_spaced(ARCHIVE_TP).lower()}", "{OTHER_TP}"]')))
    assert config.send_ports["Secret"].additional_recipient_thumbprints == (ARCHIVE_TP, OTHER_TP)
    assert config.send_ports["Plain"].additional_recipient_thumbprints == ()  # the default: the partner alone


def test_the_spec_example_with_an_additional_recipient_loads(tmp_path: Path) -> None:
    text = SPEC_EXAMPLE.replace(
        'delivery_key = "fabrikam.orders"\n',
        'delivery_key = "fabrikam.orders"\nadditional_recipient_thumbprints = ["5E 77 00 11 22 33 44 55 66 77 88 99 '
        'AA BB CC DD EE FF 00 11"]       # e.g. our archive key\n',
    )
    assert load_config(_write(tmp_path, text)).send_ports["FabrikamOrders"].additional_recipient_thumbprints == (
        ARCHIVE_TP,
    )


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (f'["{ARCHIVE_TP}", "{_spaced(ARCHIVE_TP)}"]', f"{ARCHIVE_TP} is listed more than once"),
        (f'["{_spaced(PARTNER_TP)}"]', f"{PARTNER_TP} is the partner's own encryption certificate"),
        ('["5E 77 ..."]', "thumbprint"),
    ],
    ids=["duplicate", "partner-repeated", "malformed"],
)
def test_additional_recipients_refused_with_a_sentence(tmp_path: Path, extra: str, says: str) -> None:
    err = _refused(tmp_path, _with_extra(extra))
    assert err.code == "config-invalid"
    assert "send_ports.Secret" in str(err) and "additional_recipient_thumbprints" in str(err)
    assert says in str(err)


def test_a_scheduled_partner_certificate_is_not_an_additional_recipient(tmp_path: Path) -> None:
    schedule = (
        f'encryption_certificates = [{{ thumbprint = "{PARTNER_TP}", from = 2026-01-01T00:00:00Z }}, '
        f'{{ thumbprint = "{OTHER_TP}", from = 2027-01-01T00:00:00Z }}]\n'
    )
    text = _with_extra(f'["{OTHER_TP}"]').replace(f'encryption_thumbprint = "{PARTNER_TP}"\n', schedule)
    err = _refused(tmp_path, text)
    assert f"{OTHER_TP} is the partner's own encryption certificate" in str(err)


def test_additional_recipients_need_encryption(tmp_path: Path) -> None:
    text = BASE.replace(
        'delivery_key = "plain"\n', f'delivery_key = "plain"\nadditional_recipient_thumbprints = ["{ARCHIVE_TP}"]\n'
    )
    err = _refused(tmp_path, text)
    assert "send_ports.Plain" in str(err)
    assert "give encryption_thumbprint (or encryption_certificates) too" in str(err)
    # With a partner certificate but a pipeline that does not encrypt.
    text = text.replace('pipeline = "Sign"\n', f'pipeline = "Sign"\nencryption_thumbprint = "{PARTNER_TP}"\n', 1)
    err = _refused(tmp_path, text)
    assert "send_ports.Plain.additional_recipient_thumbprints: pipeline 'Sign' does not encrypt" in str(err)


# -- the example config shipped in config/ -----------------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "sendpipe.toml"


def test_the_shipped_example_config_loads() -> None:
    config = load_config(EXAMPLE)
    assert set(config.send_ports) == {"FabrikamOrders", "NorthwindInvoices", "AuditCopy"}
    assert config.send_ports["NorthwindInvoices"].additional_recipient_thumbprints == ()


def test_the_example_configs_commented_settings_are_valid(tmp_path: Path) -> None:
    # The commented lines are documentation a reader uncomments: each must load as written.
    text = EXAMPLE.read_text(encoding="utf-8")
    uncommented = text.replace("# additional_recipient_thumbprints", "additional_recipient_thumbprints")
    assert uncommented != text
    edited = tmp_path / "sendpipe.toml"
    edited.write_text(uncommented, encoding="utf-8")
    port = load_config(edited).send_ports["NorthwindInvoices"]
    assert port.additional_recipient_thumbprints == ("5E77102132435465768798A9BACBDCEDFE0F1E2D",)
