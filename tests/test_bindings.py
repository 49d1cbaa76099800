"""`sendpipe import-bindings`: binding-file reading, every mapping rule, the written config, the report, exit codes."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bindings_samples import (
    ASSEMBLE,
    ENCODE,
    ENCODER,
    PASSTHRU,
    PRE_ASSEMBLE,
    SAMPLES,
    bindings,
    component,
    encoder_data,
    pipeline_data,
    send_port,
    smime,
)
from pki import Issued, TestPKI, build_store
from pydantic import ValidationError
from smime_check import unwrap

from worker.cli import main as cli
from worker.config.model import Component, Config
from worker.demo.partner import OpenSSLFailed
from worker.pipeline.catalogue import CATALOGUE, load_config

TP = "9F112233445566778899AABBCCDDEEFF00112233"


@dataclass
class Run:
    code: int
    text: str
    report: dict[str, Any]
    err: str
    path: Path

    def port(self, biztalk: str) -> dict[str, Any]:
        found: dict[str, Any] = next(p for p in self.report["ports"] if p["biztalk_port"] == biztalk)
        return found

    @property
    def config(self) -> Config:
        return load_config(self.path)

    def encoder(self, sendpipe_port: str) -> dict[str, Any] | None:
        cfg = self.config
        stage = cfg.pipelines[cfg.send_ports[sendpipe_port].pipeline].encode
        return stage[0].properties.model_dump() if stage else None

    def properties(self, sendpipe_port: str) -> dict[str, Any]:
        """The port's encoder properties, which the case expects to exist."""
        enc = self.encoder(sendpipe_port)
        assert enc is not None, f"{sendpipe_port} has no encoder"
        return enc


@pytest.fixture
def imp(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    def run(data: bytes, *extra: str) -> Run:
        src = tmp_path / "bindings.xml"
        src.write_bytes(data)
        out = tmp_path / "out.toml"
        out.unlink(missing_ok=True)
        code = cli.main(["import-bindings", str(src), "-o", str(out), "--json", *extra])
        cap = capsys.readouterr()
        report = json.loads(cap.out) if cap.out.strip() else {}
        return Run(code, out.read_text() if out.exists() else "", report, cap.err, out)

    return run


def one(imp: Any, props: list[tuple[str, str, str]] | None, **kw: Any) -> Run:
    run: Run = imp(bindings(send_port("P", data=encoder_data(props), **kw)))
    return run


def aes192_accepted() -> bool:
    try:
        Component.model_validate(
            {"component": "mime_smime_encoder", "enable_encryption": True, "encryption_algorithm": "AES192"},
            context={"catalogue": CATALOGUE},
        )
    except ValidationError:
        return False
    return True


# -- every property and value of the MIME/SMIME encoder -------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [(0, "NoSign"), (1, "ClearSign"), (2, "BlobSign")])
def test_signature_type(imp: Any, value: int, expected: str) -> None:
    run = one(imp, smime(signature=value))
    assert run.code == 0, run.report
    enc = run.encoder("P")
    assert enc is not None and enc["signature_type"] == expected


def test_signature_type_by_name_and_unknown(imp: Any) -> None:
    props = [p if p[0] != "SignatureType" else ("SignatureType", "8", "ClearSign") for p in smime()]
    assert one(imp, props).properties("P")["signature_type"] == "ClearSign"
    run = one(imp, smime(signature=7))
    assert run.code == 1 and "SignatureType 7" in run.port("P")["reasons"][0]


@pytest.mark.parametrize(("alg", "name"), [(3, "AES128"), (5, "AES256")])
def test_aes_algorithms(imp: Any, alg: int, name: str) -> None:
    run = one(imp, smime(alg=alg))
    enc = run.encoder("P")
    assert run.code == 0 and enc is not None and enc["enable_encryption"] and enc["encryption_algorithm"] == name


def test_aes192_follows_what_the_config_models_accept(imp: Any) -> None:
    run = one(imp, smime(alg=4))
    if aes192_accepted():
        assert run.code == 0 and run.properties("P")["encryption_algorithm"] == "AES192"
    else:
        assert run.code == 1
        (reason,) = run.port("P")["reasons"]
        assert "AES192" in reason and "AES256 suggested" in reason
        assert "# [send_ports.P]" in run.text and 'encryption_algorithm = "AES256"' in run.text


@pytest.mark.parametrize(("alg", "name"), [(0, "DES3"), (1, "DES"), (2, "RC2")])
def test_legacy_ciphers_are_refused_with_aes256_suggested(imp: Any, alg: int, name: str) -> None:
    run = one(imp, smime(alg=alg))
    assert run.code == 1 and "bindings-nothing-mapped" in run.err
    (reason,) = run.port("P")["reasons"]
    assert f"EncryptionAlgorithm {name} is refused" in reason and "AES256" in reason
    assert "--upgrade-ciphers" in reason
    # Written commented out: a draft that loads once uncommented.
    assert "\n[send_ports.P]" not in run.text and "# [send_ports.P]" in run.text
    uncommented = re.sub(r"^# (\[|\w+ = )", r"\1", run.text, flags=re.M)
    run.path.write_text(uncommented)
    cfg = load_config(run.path)
    assert cfg.pipelines[cfg.send_ports["P"].pipeline].encode[0].properties.model_dump()["encryption_algorithm"] == (
        "AES256"
    )


@pytest.mark.parametrize("alg", [0, 1, 2])
def test_upgrade_ciphers_maps_legacy_to_aes256_with_a_warning(imp: Any, alg: int) -> None:
    run = imp(bindings(send_port("P", data=encoder_data(smime(alg=alg)))), "--upgrade-ciphers")
    assert run.code == 0
    assert run.encoder("P")["encryption_algorithm"] == "AES256"
    assert any(n.startswith("WARNING") and "AES256" in n for n in run.port("P")["notes"])


def test_unknown_algorithm_id(imp: Any) -> None:
    run = one(imp, smime(alg=9))
    assert run.code == 1 and "EncryptionAlgorithm 9" in run.port("P")["reasons"][0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("base64", "base64"), ("Base64", "base64"), ("binary", "binary"), ("Binary", "binary"),
     ("QuotedPrintable", "quoted-printable"), ("quoted-printable", "quoted-printable")],
)  # fmt: skip
def test_content_transfer_encoding(imp: Any, text: str, expected: str) -> None:
    run = one(imp, smime(cte=text))
    assert run.code == 0 and run.properties("P")["content_transfer_encoding"] == expected


@pytest.mark.parametrize("text", ["SevenBit", "EightBit", "UUEncode", "7bit"])
def test_content_transfer_encodings_sendpipe_does_not_write(imp: Any, text: str) -> None:
    run = one(imp, smime(cte=text))
    assert run.code == 1 and f"ContentTransferEncoding {text!r}" in run.port("P")["reasons"][0]


def test_numeric_content_transfer_encoding_is_not_guessed(imp: Any) -> None:
    props = [p if p[0] != "ContentTransferEncoding" else ("ContentTransferEncoding", "3", "0") for p in smime()]
    run = one(imp, props)
    assert run.code == 1 and "numeric" in run.port("P")["reasons"][0]


@pytest.mark.parametrize("flag", [True, False])
def test_boolean_properties(imp: Any, flag: bool) -> None:
    run = one(imp, smime(add_cert=flag, crl=flag, attach=flag))
    enc = run.encoder("P")
    assert enc is not None and run.code == 0
    assert enc["add_signing_cert_to_message"] is flag
    assert enc["check_revocation_list"] is flag
    assert enc["send_body_part_as_attachment"] is flag
    enc = one(imp, smime(encrypt=flag)).encoder("P")
    assert enc is not None and enc["enable_encryption"] is flag


def test_check_revocation_list_alias(imp: Any) -> None:
    props = [("SignatureType", "3", "1"), ("CheckRevocationList", "11", "0")]
    assert one(imp, props).properties("P")["check_revocation_list"] is False


@pytest.mark.parametrize(
    ("prop", "needle"),
    [(("EnableEncryption", "11", "2"), "not -1 (true) or 0"), (("SignatureType", "3", "two"), "not an integer"),
     (("SignatureType", "", "2"), "vt=missing"), (("SignatureType", "5", "2.0"), "variant type"),
     (("EnableEncryption", "8", "True"), "not a boolean"), (("Compression", "11", "-1"), "property Compression")],
)  # fmt: skip
def test_bad_properties_are_refused_naming_them(imp: Any, prop: tuple[str, str, str], needle: str) -> None:
    run = imp(bindings(send_port("P", data=encoder_data([prop])), send_port("Q")))
    assert run.code == 2
    assert needle in " ".join(run.port("P")["reasons"]) and run.port("Q")["status"] == "mapped"


# -- BizTalk's defaults where per-instance data leaves a property out ------------------------------------------


def test_defaults_of_an_empty_encoder(imp: Any) -> None:
    run = one(imp, [])
    assert run.code == 0
    enc = run.encoder("P")
    assert enc is not None and enc["signature_type"] == "NoSign" and enc["enable_encryption"] is False
    assert enc["content_transfer_encoding"] == "base64" and enc["send_body_part_as_attachment"] is False
    assert run.config.send_ports["P"].encryption_thumbprint is None  # EncryptionCert dropped: nothing encrypts
    assert any("EncryptionCert dropped" in n for n in run.port("P")["notes"])


def test_defaults_when_signing_validate_crl_true_and_sha256(imp: Any) -> None:
    run = one(imp, [("SignatureType", "3", "2")])
    enc = run.encoder("P")
    assert enc is not None
    assert enc["add_signing_cert_to_message"] is True and enc["check_revocation_list"] is True
    assert enc["signing_algorithm"] == "SHA256"
    notes = " ".join(run.port("P")["notes"])
    assert "unlike sendpipe's (false)" in notes and "SHA-1" in notes and "ValidateCRL" in notes


def test_default_algorithm_when_encrypting_is_aes128_noted(imp: Any) -> None:
    run = one(imp, [("SignatureType", "3", "2"), ("EnableEncryption", "11", "-1")])
    assert run.properties("P")["encryption_algorithm"] == "AES128"
    assert any("AES128 assumed" in n and "DES3 before" in n for n in run.port("P")["notes"])


def test_algorithm_is_dropped_not_refused_when_encryption_is_off(imp: Any) -> None:
    run = one(imp, smime(signature=1, encrypt=False, alg=0))
    assert run.code == 0
    enc = run.encoder("P")
    assert enc is not None and not enc["enable_encryption"]
    assert "encryption_algorithm" not in run.text
    assert any("DES3 (AlgID 0) dropped" in n for n in run.port("P")["notes"])


# -- pipelines -------------------------------------------------------------------------------------------------


def test_pass_through_is_a_pipeline_without_components(imp: Any) -> None:
    run = imp(bindings(send_port("A", pipeline=PASSTHRU, data=None, thumbprint=None)))
    assert run.code == 0 and run.encoder("A") is None
    pipe = run.config.pipelines[run.config.send_ports["A"].pipeline]
    assert pipe.pre_assemble == pipe.assemble == pipe.encode == ()


def test_identical_settings_share_one_pipeline(imp: Any) -> None:
    run = imp(bindings(send_port("A"), send_port("B"), send_port("C", data=encoder_data(smime(alg=3)))))
    ports = run.config.send_ports
    assert ports["A"].pipeline == ports["B"].pipeline != ports["C"].pipeline
    assert set(run.config.pipelines) == {ports["A"].pipeline, ports["C"].pipeline}


@pytest.mark.parametrize(
    ("comp", "needle"),
    [("Contoso.Custom.Zipper", "custom component"), ("Microsoft.BizTalk.Component.FFAsmComp", "flat-file"),
     ("Microsoft.BizTalk.EdiInt.PipelineComponents.AS2Encoder", "AS2 encoder"),
     ("Microsoft.BizTalk.Component.XmlAsmComp", "XML assembler")],
)  # fmt: skip
def test_components_without_equivalent(imp: Any, comp: str, needle: str) -> None:
    data = pipeline_data((ASSEMBLE, [component(comp, [("X", "8", "y")])]), (ENCODE, [component(ENCODER, smime())]))
    run = imp(bindings(send_port("P", data=data), send_port("Q")))
    assert run.code == 2 and needle in run.port("P")["reasons"][0] and comp in run.port("P")["reasons"][0]
    assert '# BizTalk send port "P"' in run.text and "\n[send_ports.P]" not in run.text


def test_encoder_in_the_wrong_stage_or_twice(imp: Any) -> None:
    wrong = pipeline_data((PRE_ASSEMBLE, [component(ENCODER, smime())]))
    twice = pipeline_data((ENCODE, [component(ENCODER, smime()), component(ENCODER, smime())]))
    run = imp(bindings(send_port("W", data=wrong), send_port("T", data=twice)))
    assert run.code == 1
    assert "stage pre_assemble" in run.port("W")["reasons"][0]
    assert "more than one" in run.port("T")["reasons"][0]


@pytest.mark.parametrize(
    ("pipeline", "needle"),
    [("Microsoft.BizTalk.DefaultPipelines.XMLTransmit", "XML assembler"), ("Contoso.Custom.Send", "no per-instance")],
)
def test_pipelines_known_only_by_name(imp: Any, pipeline: str, needle: str) -> None:
    run = imp(bindings(send_port("P", pipeline=pipeline, data=None)))
    assert run.code == 1 and needle in run.port("P")["reasons"][0]


# -- ports: kinds, names, hosts, retries, certificates ---------------------------------------------------------


def test_dynamic_and_solicit_response_ports_are_reported(imp: Any) -> None:
    run = imp(bindings(send_port("D", static=False, handler=None), send_port("S", two_way=True), send_port("OK")))
    assert run.code == 2
    assert "dynamic send port" in run.port("D")["reasons"][0]
    assert "solicit-response" in run.port("S")["reasons"][0]
    assert set(run.config.send_ports) == {"OK"}


def test_names_are_made_valid_deterministically_and_the_original_kept(imp: Any) -> None:
    run = imp(bindings(send_port("SP Fabrikam/Orders (EU)"), send_port("SP_Fabrikam_Orders_EU_"), send_port("_x")))
    names = {p["biztalk_port"]: p["sendpipe_port"] for p in run.report["ports"]}
    assert names == {
        "SP Fabrikam/Orders (EU)": "SP_Fabrikam_Orders_EU_",
        "SP_Fabrikam_Orders_EU_": "SP_Fabrikam_Orders_EU__2",
        "_x": "x",
    }
    assert set(run.config.send_ports) == set(names.values())
    assert 'BizTalk send port "SP Fabrikam/Orders (EU)"' in run.text
    keys = {n: p.delivery_key for n, p in run.config.send_ports.items()}
    assert keys == {
        "SP_Fabrikam_Orders_EU_": "sp.fabrikam.orders.eu",
        "SP_Fabrikam_Orders_EU__2": "sp.fabrikam.orders.eu.2",
        "x": "x",
    }


def test_a_name_with_dots_is_a_quoted_toml_key(imp: Any) -> None:
    run = imp(bindings(send_port("SP.Orders.EU")))
    assert '[send_ports."SP.Orders.EU"]' in run.text and set(run.config.send_ports) == {"SP.Orders.EU"}
    assert run.config.send_ports["SP.Orders.EU"].delivery_key == "sp.orders.eu"


def test_clear_sign_with_encryption_is_the_as2_layout(imp: Any) -> None:
    run = one(imp, smime(signature=1, encrypt=True, alg=5))
    enc = run.encoder("P")
    assert run.code == 0 and enc is not None and enc["signature_type"] == "ClearSign" and enc["enable_encryption"]
    assert any("AS2 layout" in n for n in run.port("P")["notes"])


def test_unwritable_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "b.xml"
    src.write_bytes(bindings(send_port("A")))
    assert cli.main(["import-bindings", str(src), "-o", str(tmp_path / "missing" / "out.toml")]) == 1
    assert "[output-unwritable]" in capsys.readouterr().err


def test_host_map_renames_and_warns_when_unused(imp: Any) -> None:
    data = bindings(send_port("A", handler="BizTalkSendHost"), send_port("B", handler="Other_Host"))
    run = imp(data, "--host-map", "BizTalkSendHost=SendHost", "--host-map", "Nope=X")
    assert run.config.send_ports["A"].host == "SendHost" and run.config.send_ports["B"].host == "Other_Host"
    assert any("Nope=X" in w for w in run.report["warnings"])
    assert any("renamed" in n for n in run.port("A")["notes"])


def test_invalid_host_name_is_refused_by_the_models(imp: Any) -> None:
    run = imp(bindings(send_port("A", handler="Send Host"), send_port("B")))
    assert run.code == 2 and "config refuses" in run.port("A")["reasons"][0]
    assert imp(bindings(send_port("A", handler="Send Host")), "--host-map", "Send Host=SendHost").code == 0


def test_bad_host_map_argument(imp: Any) -> None:
    run = imp(bindings(send_port("A")), "--host-map", "NoEquals")
    assert run.code == 1 and "[usage]" in run.err and run.text == ""


@pytest.mark.parametrize(
    ("retry", "expected"), [(("5", "10"), (5, 600.0)), (None, (3, 300.0)), (("0", "1"), (0, 60.0))]
)
def test_retries_minutes_to_seconds(imp: Any, retry: tuple[str, str] | None, expected: tuple[int, float]) -> None:
    port = imp(bindings(send_port("A", retry=retry))).config.send_ports["A"]
    assert (port.retry_count, port.retry_interval_s) == expected


@pytest.mark.parametrize("retry", [("101", "5"), ("3", "0"), ("3", "x")])
def test_retries_sendpipe_refuses(imp: Any, retry: tuple[str, str]) -> None:
    run = imp(bindings(send_port("A", retry=retry), send_port("B")))
    assert run.code == 2 and run.port("A")["status"] == "not-mapped"


@pytest.mark.parametrize(
    "shown",
    [
        "\u200e9f 11 22 33 44 55 66 77 88 99 aa bb cc dd ee ff 00 11 22 33",
        "9F11 2233 4455 6677 8899 AABB CCDD EEFF 0011 2233",
        "9f:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33\u200f",
        TP.lower(),
    ],
)
def test_thumbprints_as_windows_shows_them(imp: Any, shown: str) -> None:
    run = imp(bindings(send_port("A", thumbprint=shown)))
    assert run.config.send_ports["A"].encryption_thumbprint == TP
    assert f'encryption_thumbprint = "{TP}"' in run.text and "\u200e" not in run.text


def test_encryption_needs_a_valid_certificate(imp: Any) -> None:
    run = imp(bindings(send_port("None", thumbprint=None), send_port("Bad", thumbprint="12 34"), send_port("Ok")))
    assert run.code == 2
    assert "no EncryptionCert" in run.port("None")["reasons"][0]
    assert "not 40 hexadecimal digits" in run.port("Bad")["reasons"][0]


def test_backup_transport_and_ordered_delivery_are_warned(imp: Any) -> None:
    run = imp(bindings(send_port("A", backup="\\\\share\\out", ordered=True)))
    notes = " ".join(run.port("A")["notes"])
    assert run.code == 0 and "backup transport FILE" in notes and "ordered delivery" in notes


# -- the file: escaping, BOM, line ends, hostile and broken input ----------------------------------------------


def test_escaped_unescaped_bom_and_crlf_give_the_same_config(imp: Any) -> None:
    ports = [("A", smime()), ("B", smime(signature=1, encrypt=False, crl=True)), ("C", smime(cte="binary"))]
    plain = imp(bindings(*(send_port(n, data=encoder_data(p)) for n, p in ports))).text
    unescaped = imp(bindings(*(send_port(n, data=encoder_data(p), escaped=False) for n, p in ports))).text
    windows = imp(bindings(*(send_port(n, data=encoder_data(p)) for n, p in ports), bom=True, crlf=True)).text
    assert plain == unescaped == windows and "[send_ports.C]" in plain


def test_utf16_export_with_bom(imp: Any) -> None:
    text = bindings(send_port("A")).decode("utf-8").replace('encoding="utf-8"', 'encoding="utf-16"')
    run = imp(b"\xff\xfe" + text.encode("utf-16-le"))
    assert run.code == 0 and set(run.config.send_ports) == {"A"}


def test_file_order_does_not_change_the_output(imp: Any) -> None:
    ports = [send_port(f"P{i}", data=encoder_data(smime(alg=3 + 2 * (i % 2)))) for i in range(6)]
    first = imp(bindings(*ports)).text
    random.Random(7).shuffle(ports)
    assert imp(bindings(*ports)).text == first


def test_malformed_file_names_the_element_and_line(imp: Any) -> None:
    data = bindings(send_port("Broken")).replace(b"</PrimaryTransport>", b"", 1)
    run = imp(data)
    assert run.code == 1 and run.text == ""
    assert "[bindings-malformed]" in run.err and "mismatched tag" in run.err and "line" in run.err
    assert "<SendPort Name='Broken'> / <PrimaryTransport>" in run.err


def test_malformed_pipeline_data_fails_that_port_only(imp: Any) -> None:
    run = imp(bindings(send_port("Bad", data="<Root><Stages>"), send_port("Good")))
    assert run.code == 2 and "SendPipelineData is not well-formed" in run.port("Bad")["reasons"][0]


BOMB = '<!DOCTYPE BindingInfo [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>\n'  # noqa: E501 - the attack is one line, as an attacker sends it


def test_entity_expansion_bomb_is_refused(imp: Any) -> None:
    run = imp(bindings(send_port("A", app="&c;"), prolog=BOMB))
    assert run.code == 1 and "[bindings-unsafe-xml]" in run.err and "DTD" in run.err and run.text == ""


def test_external_entity_is_refused(imp: Any) -> None:
    prolog = '<!DOCTYPE BindingInfo [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
    run = imp(bindings(send_port("A", app="&x;"), prolog=prolog))
    assert run.code == 1 and "[bindings-unsafe-xml]" in run.err


def test_bomb_inside_escaped_pipeline_data_is_refused(imp: Any) -> None:
    data = BOMB.replace("BindingInfo", "Root") + "<Root>&c;</Root>"
    run = imp(bindings(send_port("A", data=data), send_port("B")))
    assert run.code == 2 and "DTD" in run.port("A")["reasons"][0]


def test_not_a_binding_file_and_missing_file(imp: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = imp(b"<Config/>")
    assert run.code == 1 and "not <BindingInfo>" in run.err
    assert cli.main(["import-bindings", str(tmp_path / "nope.xml")]) == 1
    assert "[bindings-not-found]" in capsys.readouterr().err


def test_no_send_ports_at_all(imp: Any) -> None:
    run = imp(bindings())
    assert run.code == 1 and run.report["send_ports"] == 0 and load_config(run.path).send_ports == {}


# -- the report and the command line ---------------------------------------------------------------------------


def test_without_output_the_config_goes_to_stdout_and_the_table_to_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "b.xml"
    src.write_bytes(bindings(send_port("A"), send_port("Legacy", data=encoder_data(smime(alg=0)))))
    assert cli.main(["import-bindings", str(src)]) == 2
    cap = capsys.readouterr()
    assert cap.out.startswith("# sendpipe config imported") and "[send_ports.A]" in cap.out
    lines = cap.err.splitlines()
    assert "2 send ports, 1 mapped, 1 not mapped -> stdout" in lines[0]
    assert lines[1].split() == ["result", "BizTalk", "send", "port", "sendpipe", "port", "host", "pipeline"]
    assert any(line.startswith("NOT MAPPED  Legacy") for line in lines)
    assert any(line.startswith("Legacy: NOT MAPPED: EncryptionAlgorithm DES3") for line in lines)
    assert any(line.startswith("warning: group signing thumbprint") for line in lines)


def test_json_report_fields(imp: Any) -> None:
    run = imp(bindings(send_port("A"), send_port("B", two_way=True)), "--signing-thumbprint", f"\u200e{TP.lower()}")
    rep = run.report
    assert (rep["exit_code"], rep["send_ports"], rep["mapped"], rep["not_mapped"]) == (2, 2, 1, 1)
    assert rep["group"] == {"name": "Contoso.Partners", "signing_thumbprint": TP, "placeholder": False}
    assert rep["warnings"] == [] and "PLACEHOLDER" not in run.text
    a = run.port("A")
    assert a["status"] == "mapped" and a["host"] == "SendHost" and a["pipeline"] == "BlobSign_AES256"
    assert a["delivery_key"] == "a" and a["encryption_thumbprint"] == TP
    assert run.port("B")["status"] == "not-mapped" and run.port("B")["reasons"]


def test_invalid_signing_thumbprint(imp: Any) -> None:
    run = imp(bindings(send_port("A")), "--signing-thumbprint", "abc")
    assert run.code == 1 and "[invalid-thumbprint]" in run.err


def test_each_port_comment_names_its_biztalk_origin(imp: Any) -> None:
    run = imp(bindings(send_port("A", app="App One"), send_port("B", pipeline=PASSTHRU, data=None)))
    text = run.text
    a = text.index('# BizTalk send port "A" (application App One, pipeline Contoso.Pipelines.SMIMESend)')
    b = text.index('# BizTalk send port "B" (application Contoso.Partners, pipeline ' + PASSTHRU)
    assert a < text.index("[send_ports.A]") < b < text.index("[send_ports.B]")
    assert run.config.group.name == "BizTalk"  # two applications: no one name for the group


# -- the shared sample ----------------------------------------------------------------------------------------


def sample() -> bytes:
    return (SAMPLES / "biztalk-bindings.xml").read_bytes()


def test_sample_is_mapped_as_its_readme_says(imp: Any) -> None:
    run = imp(sample())
    assert run.code == 2
    status = {p["biztalk_port"]: p["status"] for p in run.report["ports"]}
    assert status == {
        "SP_Fabrikam_Orders": "mapped",
        "SP_Northwind_Invoices_ClearSign": "mapped",
        "SP_Litware_Legacy": "not-mapped",
        "SP_Archive_Copy": "mapped",
        "SP_Tailspin_Reports": "mapped",
    }
    cfg = run.config
    fab, tail = cfg.send_ports["SP_Fabrikam_Orders"], cfg.send_ports["SP_Tailspin_Reports"]
    assert (fab.host, fab.retry_count, fab.retry_interval_s) == ("SecureSendHost", 5, 600)
    assert fab.encryption_thumbprint == "760CEF077D02461CEFF89D9D5A3247C0F43F5C8D"
    assert run.encoder("SP_Fabrikam_Orders") == {
        "signature_type": "BlobSign", "add_signing_cert_to_message": True, "enable_encryption": True,
        "encryption_algorithm": "AES256", "signing_algorithm": "SHA256", "content_transfer_encoding": "base64",
        "check_revocation_list": False, "send_body_part_as_attachment": False,
        # S/MIME 4.0 / AS2 properties BizTalk does not have: their defaults (today's output).
        "key_encryption_algorithm": "RSA-PKCS1v15", "rsa_signature_scheme": "PKCS1v15", "add_signing_chain": False,
        "micalg_format": "rfc5751", "legacy_media_types": False, "compression": "none",
    }  # fmt: skip
    north = run.encoder("SP_Northwind_Invoices_ClearSign")
    assert north is not None and north["signature_type"] == "ClearSign" and north["check_revocation_list"]
    assert (
        not north["enable_encryption"]
        and cfg.send_ports["SP_Northwind_Invoices_ClearSign"].encryption_thumbprint is None
    )
    assert (
        run.encoder("SP_Archive_Copy") is None and cfg.send_ports["SP_Archive_Copy"].host == "BizTalkServerApplication"
    )
    t = run.encoder("SP_Tailspin_Reports")
    assert t is not None and t["encryption_algorithm"] == "AES128" and t["content_transfer_encoding"] == "binary"
    assert t["add_signing_cert_to_message"] is False and t["signature_type"] == "BlobSign"
    assert (tail.host, tail.retry_count, tail.retry_interval_s) == ("ReportsSendHost_32", 10, 900)
    assert any("backup transport FILE" in n for n in run.port("SP_Tailspin_Reports")["notes"])
    (reason,) = run.port("SP_Litware_Legacy")["reasons"]
    assert "DES3" in reason and "AES256" in reason
    assert '# encryption_thumbprint = "5CA8E92305410A17D2F91F0E435E339EF5A0973B"' in run.text
    assert run.report["group"]["placeholder"] and "PLACEHOLDER" in run.text


def test_sample_with_upgraded_ciphers_maps_every_port(imp: Any) -> None:
    run = imp(sample(), "--upgrade-ciphers", "--host-map", "SecureSendHost=SendHost")
    assert run.code == 0 and run.report["not_mapped"] == 0
    assert run.config.send_ports["SP_Litware_Legacy"].host == "SendHost"
    assert run.encoder("SP_Litware_Legacy")["encryption_algorithm"] == "AES256"


# -- the sample with real test certificates: `sendpipe check` accepts it, `sendpipe encode` output opens -------

SENDPIPE = str(Path(sys.executable).with_name("sendpipe"))
ACCOUNT = "svc-biztalk"


@dataclass(frozen=True)
class Migrated:
    bindings: Path
    config: Path
    stores: Path
    signer: Issued
    partners: dict[str, Issued]  # by BizTalk port
    ca_pem: Path

    def env(self, host: str | None = None, config: Path | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SENDPIPE_")}
        env.update(
            SENDPIPE_CONFIG=str(config or self.config),
            SENDPIPE_STORE_ROOT=str(self.stores),
            SENDPIPE_SERVICE_ACCOUNT=ACCOUNT,
            SENDPIPE_LOG_FORMAT="console",
        )
        if host:
            env["SENDPIPE_HOST"] = host
        return env


def _with_thumbprints(data: bytes, thumbprints: dict[str, str]) -> bytes:
    """The sample with each port's made-up ThumbPrint replaced by a real one, in the same Windows form."""
    text = data.decode("utf-8")
    for port, tp in thumbprints.items():
        start = text.index(f'<SendPort Name="{port}"')
        end = text.index("</SendPort>", start)
        block = re.sub(r'ThumbPrint="[^"]*"', f'ThumbPrint="{tp}"', text[start:end])
        text = text[:start] + block + text[end:]
    return text.encode("utf-8")


@pytest.fixture(scope="module")
def migrated(
    tmp_path_factory: pytest.TempPathFactory, pki: TestPKI, signer_rsa2048: Issued, partner: Issued
) -> Migrated:
    root = tmp_path_factory.mktemp("migrated")
    partners = {
        "SP_Fabrikam_Orders": partner,
        "SP_Tailspin_Reports": pki.issue("Tailspin partner", usage="encrypt", key_slot="partner-b"),
        "SP_Litware_Legacy": pki.issue("Litware partner", usage="encrypt", key_slot="partner-c"),
    }
    tp = {port: p.thumbprint for port, p in partners.items()}
    forms = {
        "SP_Fabrikam_Orders": "\u200e" + " ".join(re.findall("..", tp["SP_Fabrikam_Orders"])).lower(),
        "SP_Litware_Legacy": " ".join(re.findall("....", tp["SP_Litware_Legacy"])),
        "SP_Tailspin_Reports": tp["SP_Tailspin_Reports"],
    }
    src = root / "bindings.xml"
    src.write_bytes(_with_thumbprints(sample(), forms))
    config = root / "sendpipe.toml"
    signing = " ".join(re.findall("..", signer_rsa2048.thumbprint))
    done = subprocess.run(
        [SENDPIPE, "import-bindings", str(src), "-o", str(config), "--signing-thumbprint", signing],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr  # Litware stays refused (DES3)
    stores = root / "stores"
    # As the README says: the group signing certificate with its key in personal/, partners in other-people/,
    # and (ValidateCRL on Northwind's port) the issuer's CRL in crls/.
    build_store(stores, ACCOUNT, personal=[signer_rsa2048], other_people=list(partners.values()), crls=[pki.crl()])
    return Migrated(src, config, stores, signer_rsa2048, partners, pki.ca_pem)


@pytest.mark.parametrize("host", ["SecureSendHost", "ReportsSendHost_32", "BizTalkServerApplication"])
def test_check_accepts_the_imported_sample(migrated: Migrated, host: str) -> None:
    done = subprocess.run(
        [SENDPIPE, "check"], env=migrated.env(host), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.rstrip().endswith("OK")


def test_check_rejects_the_signing_placeholder(migrated: Migrated, tmp_path: Path) -> None:
    config = tmp_path / "placeholder.toml"
    done = subprocess.run(
        [SENDPIPE, "import-bindings", str(migrated.bindings), "-o", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "placeholder" in done.stdout
    check = subprocess.run(
        [SENDPIPE, "check", "--json"], env=migrated.env("SecureSendHost", config), capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    assert check.returncode == 1, check.stdout
    errors = [f for f in json.loads(check.stdout)["findings"] if f["level"] == "error"]
    assert [(f["role"], f["code"], f["thumbprint"]) for f in errors] == [
        ("signing", "signing-cert-not-found", "0" * 40)
    ]


@pytest.mark.parametrize(
    ("port", "layers"),
    [("SP_Fabrikam_Orders", ("enveloped-data", "signed-data")),
     ("SP_Tailspin_Reports", ("enveloped-data", "signed-data")),
     ("SP_Northwind_Invoices_ClearSign", ("multipart/signed",))],
)  # fmt: skip
def test_imported_port_encodes_and_openssl_opens_it(
    migrated: Migrated, tmp_path: Path, port: str, layers: tuple[str, ...]
) -> None:
    payload = b"<Order id='1'>\r\n  caf\xc3\xa9\x00\xff binary tail\n</Order>"
    src, out = tmp_path / "order.xml", tmp_path / "order.eml"
    src.write_bytes(payload)
    done = subprocess.run(
        [SENDPIPE, "encode", "--port", port, "--content-type", "application/xml", "-o", str(out), str(src)],
        env=migrated.env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    recipient = migrated.partners.get(port)
    keys: dict[str, Path] = {}
    if recipient is not None:
        keys = {
            "recip_cert": recipient.write_cert_pem(tmp_path / "partner.pem"),
            "recip_key": recipient.write_key_pem(tmp_path / "partner.key"),
        }
    # Tailspin's port leaves the signer certificate out of the message: the partner has it already.
    certfile = migrated.signer.write_cert_pem(tmp_path / "signer.pem") if port == "SP_Tailspin_Reports" else None
    opened = unwrap(out.read_bytes(), tmp_path / "work", ca_pem=migrated.ca_pem, certfile=certfile, **keys)
    assert opened.payload == payload
    assert opened.layers == layers
    assert opened.signer_thumbprint == migrated.signer.thumbprint
    if port == "SP_Tailspin_Reports":
        with pytest.raises(OpenSSLFailed):  # really without the certificate: openssl cannot verify alone
            unwrap(out.read_bytes(), tmp_path / "work2", ca_pem=migrated.ca_pem, **keys)


def test_imported_pass_through_port_delivers_the_payload_as_is(migrated: Migrated, tmp_path: Path) -> None:
    src, out = tmp_path / "a.bin", tmp_path / "a.out"
    src.write_bytes(b"\x00archive\r\ncopy\xff")
    done = subprocess.run(
        [SENDPIPE, "encode", "--port", "SP_Archive_Copy", "-o", str(out), str(src)],
        env=migrated.env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == src.read_bytes()
