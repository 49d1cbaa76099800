"""The size ceiling per send port (worker/limits.py): measured with the port's pipeline, checked by encoding."""

from __future__ import annotations

from pathlib import Path

import pytest
from pki import Issued, StoreFactory

from worker.message import Message
from worker.pipeline.catalogue import build_pipeline, load_config
from worker.pipeline.limits import largest_payload

LIMIT = 2 << 20


@pytest.mark.parametrize(
    ("signature", "encrypt", "cte"),
    [("BlobSign", True, "base64"), ("ClearSign", True, "binary"), ("NoSign", False, "quoted-printable")],
)
def test_the_ceiling_fits_and_a_little_more_does_not(
    tmp_path: Path, make_store: StoreFactory, signer_rsa2048: Issued, partner: Issued, signature: str, encrypt: bool,
    cte: str,
) -> None:  # fmt: skip
    config = tmp_path / "c.toml"
    config.write_text(f"""
[group]
name = "C"
signing_thumbprint = "{signer_rsa2048.thumbprint}"
[pipelines.P]
encode = [ {{ component = "mime_smime_encoder", signature_type = "{signature}",
             enable_encryption = {str(encrypt).lower()}, encryption_algorithm = "AES256",
             content_transfer_encoding = "{cte}" }} ]
[send_ports.S]
host = "H"
pipeline = "P"
encryption_thumbprint = "{partner.thumbprint}"
delivery_key = "k"
""")
    store = make_store(personal=[signer_rsa2048], other_people=[partner])
    pipeline = build_pipeline(load_config(config), "S", store)
    ceiling = largest_payload(pipeline, "S", LIMIT)
    assert ceiling is not None and LIMIT // 7 < ceiling < LIMIT

    def entity(n: int) -> int:
        return len(pipeline.run(Message(body=b"\xff" * n, message_id="m", send_port="S")).body)

    assert entity(ceiling) <= LIMIT
    assert entity(ceiling + 8192) > LIMIT
