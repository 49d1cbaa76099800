"""auto_resume's queue work (ops/autoresume): the chosen ports' messages with the chosen codes are resumed,
at most a batch per fix, the others moved untouched, and one audit line names who and what."""

from __future__ import annotations

from typing import Any

import pytest
import structlog
from fakes import RawDelivery

from worker.broker import session as broker_session
from worker.message import Outbound
from worker.ops import autoresume
from worker.settings import BrokerSettings

QUEUE = "sendpipe.suspended.SendHost"
# The broker layer's Inbound, wherever that module keeps it (it is re-exported by the session module).
Inbound: Any = vars(broker_session)["Inbound"]


class QueueSession:
    """Just what ``scan`` uses: count, get, publish (confirmed at once), close."""

    def __init__(self, messages: list[tuple[str, str, str]]) -> None:
        self.queue = [self._inbound(*m) for m in messages]
        self.published: list[tuple[str, Outbound]] = []
        self.closed = False

    @staticmethod
    def _inbound(message_id: str, port: str, code: str) -> Any:
        headers = {"sendpipe-send-port": port, "sendpipe-error-code": code, "sendpipe-attempts": 1}
        raw: Any = RawDelivery(1)
        return Inbound(b"body " + message_id.encode(), "sendpipe.suspended", "SendHost", message_id, None, None,
                       headers, False, raw)  # fmt: skip

    async def count(self, queue_name: str) -> int:
        assert queue_name == QUEUE
        return len(self.queue)

    async def get(self, queue_name: str) -> Any:
        return self.queue.pop(0) if self.queue else None

    async def publish(self, exchange: str, message: Outbound, **_: Any) -> None:
        self.published.append((exchange, message))
        if exchange == "" and message.routing_key == QUEUE:  # kept: back at the tail
            raw: Any = RawDelivery(2)
            mid = message.body.decode()[5:]
            self.queue.append(Inbound(message.body, "", QUEUE, mid, None, None, dict(message.headers), False, raw))

    async def close(self) -> None:
        self.closed = True


async def test_resumes_only_the_chosen_ports_and_codes_in_a_bounded_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    messages = [(f"o{i}", "Orders", "encryption-cert-not-found") for i in range(5)]
    messages += [("o-other", "Orders", "message-too-large"), ("inv", "Invoices", "encryption-cert-not-found")]
    fake = QueueSession(messages)

    async def connect(*_: Any, **__: Any) -> QueueSession:
        return fake

    monkeypatch.setattr(broker_session, "connect", connect)
    ports = {"Orders": frozenset({"encryption-cert-not-found"})}
    with structlog.testing.capture_logs() as logs:
        ids = await autoresume.resume_fixed(
            BrokerSettings(), "SendHost", "unit", ports, structlog.get_logger("t"), batch=3
        )
    assert ids == ["o0", "o1", "o2"] and fake.closed
    resumed = [m for ex, m in fake.published if ex == "sendpipe.outbound"]
    assert [m.routing_key for m in resumed] == ["Orders"] * 3
    assert all("sendpipe-error-code" not in m.headers for m in resumed)  # starts afresh
    left = sorted(str(i.message_id) for i in fake.queue)
    assert left == ["inv", "o-other", "o3", "o4"]  # untouched, still suspended (the batch ended the scan)
    (line,) = [e for e in logs if e["event"] == "suspended.resumed"]
    assert line["by"] == "auto-resume" and line["count"] == 3 and line["ids"] == ids
    assert line["send_ports"] == ["Orders"] and line["error_codes"] == ["encryption-cert-not-found"]


async def test_nothing_to_resume_opens_no_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    async def connect(*_: Any, **__: Any) -> None:
        raise AssertionError("no port was fixed: the broker must not be asked")

    monkeypatch.setattr(broker_session, "connect", connect)
    assert await autoresume.resume_fixed(BrokerSettings(), "SendHost", "unit", {}, structlog.get_logger("t")) == []
