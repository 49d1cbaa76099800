"""`sendpipe-mic` on real deliveries (SPEC "Messages"): RFC 4130 §7.3.1's MIC over the exact bytes openssl
verified as signed, for the BlobSign and the AS2 (ClearSign inside enveloped-data) layouts."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

from brokerkit import Client, Deployment
from smime_check import unwrap


async def test_every_delivery_carries_the_mic_of_its_signed_bytes(
    vhost: str, deployment: Deployment, workers: Any, client: Client, tmp_path: Path
) -> None:
    worker = workers(deployment.env(vhost, "svc-a"))
    worker.wait_for("consumer.started")
    capture = await client.capture()
    payloads = {
        "orders": (b"order\n" + os.urandom(2000), "Orders"),
        "as2": (b"\x00\r\n" + os.urandom(5000), "Invoices"),
        "big": (os.urandom(300_000), "Orders"),  # encoded in the thread pool, signed-data streamed
    }
    for mid, (body, port) in payloads.items():
        await client.publish(port, body, message_id=mid, headers={"sendpipe-mic": "forged, sha-256"})
    got = {m.message_id: m for m in await client.drain(capture.name, len(payloads))}
    assert set(got) == set(payloads)
    for mid, (body, _) in payloads.items():
        work = tmp_path / mid
        found = unwrap(
            got[mid].body,
            work,
            ca_pem=deployment.pki.ca_pem,
            recip_cert=deployment.partner_cert,
            recip_key=deployment.partner_key,
        )
        assert found.payload == body
        # What openssl verified: the first part of multipart/signed, or the content of signed-data.
        clear_signed = mid == "as2"
        assert found.layers == ("enveloped-data", "multipart/signed" if clear_signed else "signed-data")
        signed = (work / ("content1" if clear_signed else "layer1.out")).read_bytes()
        expected = base64.b64encode(hashlib.sha256(signed).digest()).decode() + ", sha-256"
        assert got[mid].headers["sendpipe-mic"] == expected
        # ... and the outcome line carries it too, for matching the partner's MDN against our logs.
        (line,) = [e for e in worker.wait_for("message.delivered", len(payloads)) if e["message_id"] == mid]
        assert line["mic"] == expected
