"""Build BizTalk binding files (BindingInfo XML) for the import-bindings tests, in the layout BizTalk exports."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
ENCODER = "Microsoft.BizTalk.Component.MIME_SMIME_Encoder"
SMIME_PIPELINE = "Contoso.Pipelines.SMIMESend"
PASSTHRU = "Microsoft.BizTalk.DefaultPipelines.PassThruTransmit"
PRE_ASSEMBLE = "9d0e4101-4cce-4536-83fa-4a5040674ad6"
ASSEMBLE = "9d0e4107-4cce-4536-83fa-4a5040674ad6"
ENCODE = "9d0e4108-4cce-4536-83fa-4a5040674ad6"

Props = Sequence[tuple[str, str, str]]  # (property, vt, text)


def smime(
    signature: int = 2,
    encrypt: bool = True,
    alg: int = 5,
    *,
    cte: str = "base64",
    add_cert: bool = True,
    crl: bool = False,
    attach: bool = False,
) -> list[tuple[str, str, str]]:
    """The encoder's properties as BizTalk writes them (same order as an Administration-console export)."""
    b = {True: "-1", False: "0"}
    return [
        ("SendBodyPartAsAttachment", "11", b[attach]),
        ("ContentTransferEncoding", "8", cte),
        ("SignatureType", "3", str(signature)),
        ("EnableEncryption", "11", b[encrypt]),
        ("EncryptionAlgorithm", "3", str(alg)),
        ("AddSigningCertToMessage", "11", b[add_cert]),
        ("ValidateCRL", "11", b[crl]),
    ]


def component(name: str, props: Props) -> str:
    inner = "".join(f'<{p} vt="{vt}">{escape(text)}</{p}>' for p, vt, text in props)
    return f"<Component Name={quoteattr(name)}><Properties>{inner}</Properties></Component>"


def pipeline_data(*stages: tuple[str, Sequence[str]]) -> str:
    """The per-instance pipeline document (unescaped): ``stages`` are (CategoryId, [component XML, ...])."""
    body = "".join(
        f'<Stage CategoryId="{cat}"><Components>{"".join(comps)}</Components></Stage>' for cat, comps in stages
    )
    return (
        '<Root xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f"<Stages>{body}</Stages></Root>"
    )


def encoder_data(props: Props | None = None) -> str:
    return pipeline_data((ENCODE, [component(ENCODER, smime() if props is None else props)]))


def send_port(
    name: str,
    *,
    data: str | None = "",
    escaped: bool = True,
    pipeline: str = SMIME_PIPELINE,
    handler: str | None = "SendHost",
    retry: tuple[str, str] | None = ("3", "5"),
    thumbprint: str | None = "9F 11 22 33 44 55 66 77 88 99 AA BB CC DD EE FF 00 11 22 33",
    static: bool = True,
    two_way: bool = False,
    app: str = "Contoso.Partners",
    backup: str = "",
    ordered: bool = False,
) -> str:
    """One ``SendPort``; ``data=""`` means the default encoder data, ``None`` no per-instance data."""
    doc = encoder_data() if data == "" else data
    if doc is None:
        pdata = '<SendPipelineData xsi:nil="true" />' if pipeline != PASSTHRU else ""
    elif escaped:
        pdata = f"<SendPipelineData>{escape(doc)}</SendPipelineData>"
    else:
        pdata = f"<SendPipelineData>{doc}</SendPipelineData>"
    hand = f'<SendHandler Name="{handler}" HostTrusted="false" />' if handler else '<SendHandler xsi:nil="true" />'
    retries = f"<RetryCount>{retry[0]}</RetryCount><RetryInterval>{retry[1]}</RetryInterval>" if retry else ""
    cert = f'<EncryptionCert UsageType="Encryption" ThumbPrint={quoteattr(thumbprint)} />' if thumbprint else ""
    second = (
        f'<SecondaryTransport><Address>{escape(backup)}</Address><TransportType Name="FILE" />'
        "<RetryCount>3</RetryCount><RetryInterval>5</RetryInterval><Primary>false</Primary>"
        '<SendHandler Name="SendHost" /></SecondaryTransport>'
        if backup
        else '<SecondaryTransport><Address /><SendHandler xsi:nil="true" /></SecondaryTransport>'
    )
    flag = {True: "true", False: "false"}
    return f"""
    <SendPort Name={quoteattr(name)} IsStatic="{flag[static]}" IsTwoWay="{flag[two_way]}" BindingOption="0">
      <Description>test port</Description>
      <TransmitPipeline Name={quoteattr(pipeline)} FullyQualifiedName={quoteattr(pipeline + ", Contoso")} Type="2" />
      {pdata}
      <PrimaryTransport>
        <Address>https://partner.example/{escape(name)}</Address>
        <TransportType Name="HTTP" Capabilities="387" />
        {retries}
        <ServiceWindowEnabled>false</ServiceWindowEnabled>
        <Primary>true</Primary>
        <OrderedDelivery>{flag[ordered]}</OrderedDelivery>
        {hand}
      </PrimaryTransport>
      {second}
      {cert}
      <ReceivePipelineData xsi:nil="true" />
      <ApplicationName>{escape(app)}</ApplicationName>
    </SendPort>"""


def bindings(*ports: str, bom: bool = False, crlf: bool = False, prolog: str = "") -> bytes:
    text = f"""<?xml version="1.0" encoding="utf-8"?>
{prolog}<BindingInfo xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema"
  Version="3.5.1.0">
  <Timestamp>2026-02-17T10:42:13</Timestamp>
  <SendPortCollection>{"".join(ports)}
  </SendPortCollection>
  <ReceivePortCollection>
    <ReceivePort Name="RP_Ignored" IsTwoWay="false"><ApplicationName>Contoso.Partners</ApplicationName></ReceivePort>
  </ReceivePortCollection>
</BindingInfo>
"""
    if crlf:
        text = text.replace("\n", "\r\n")
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")
