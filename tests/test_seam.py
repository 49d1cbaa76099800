"""Failure paths at the broker seam, driven by the fake of tests/fakes.py and by faults injected under
``worker.broker`` itself (the library raising what it raises when a broker restarts or refuses)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import aiormq.exceptions
import pamqp.commands
import pytest
import structlog
from fakes import Behaviour, FakeBroker, unavailable
from pki import Issued, StoreFactory

from worker.broker import session as broker
from worker.broker.acks import AckCoalescer
from worker.errors import BrokerUnavailable, DeliveryFailed
from worker.host import instance as app
from worker.host.instance import HostInstance, derived_prefetch
from worker.message import Outbound
from worker.pipeline.catalogue import load_config
from worker.pipeline.runtime import Runtime
from worker.settings import BrokerSettings, InstanceSettings

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
delivery_key = "fabrikam.orders"
retry_count = 1
retry_interval_s = 1
"""


@pytest.fixture
def instance_factory(
    tmp_path: Path, make_store: StoreFactory, signer_rsa2048: Issued, partner: Issued
) -> Iterator[Callable[..., HostInstance]]:
    config_path = tmp_path / "sendpipe.toml"
    config_path.write_text(CONFIG.format(signer=signer_rsa2048.thumbprint, partner=partner.thumbprint))
    store = make_store("svc-a", personal=[signer_rsa2048], other_people=[partner])
    made: list[HostInstance] = []

    def make(**broker_settings: Any) -> HostInstance:
        runtime = Runtime.build(load_config(config_path), store, "SendHost")
        inst = InstanceSettings(host="SendHost", host_instance="unit", config=config_path, worker_threads=1)
        brk = BrokerSettings(reconnect_initial_s=0.01, reconnect_max_s=0.08, **broker_settings)
        instance = HostInstance(inst, brk, runtime, "SendHost")
        made.append(instance)
        return instance

    yield make
    for instance in made:
        instance._pool.shutdown()


@pytest.fixture
def no_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(random, "uniform", lambda _lo, hi: hi)


async def _run_for(instance: HostInstance, seconds: float) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(instance.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.wait_for(task, 5)  # it must still be running, and end cleanly


@pytest.fixture
async def running(instance_factory: Callable[..., HostInstance]) -> AsyncIterator[Callable[..., Any]]:
    """``start(fake) -> (instance, stop)``: run an instance against a fake broker until the test ends."""
    tasks: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    def start(fake: FakeBroker, **settings: Any) -> HostInstance:
        instance = instance_factory(**settings)
        stop = asyncio.Event()
        tasks.append((stop, asyncio.create_task(instance.run(stop))))
        return instance

    yield start
    for stop, task in tasks:
        stop.set()
        await asyncio.wait_for(task, 5)


# -- finding 7: a failure while opening channels right after connecting ---------------------------------


class _ForcedClose:
    """An aio-pika connection whose broker closes it while channels are opened (a restarting node)."""

    is_closed = False

    def __init__(self) -> None:
        self.close_callbacks: set[Any] = set()

    async def channel(self, **_: Any) -> Any:
        raise aiormq.exceptions.ConnectionClosed(320, "CONNECTION_FORCED - broker forced connection closure")

    async def close(self) -> None:
        self.is_closed = True


async def test_a_broker_closing_the_connection_while_channels_open_is_ours_and_retried(
    monkeypatch: pytest.MonkeyPatch, instance_factory: Callable[..., HostInstance], no_jitter: None
) -> None:
    attempts: list[str] = []

    async def fake_connect(url: str, **_: Any) -> _ForcedClose:
        attempts.append(url)
        return _ForcedClose()

    monkeypatch.setattr(aio_pika, "connect", fake_connect)
    with pytest.raises(BrokerUnavailable, match="CONNECTION_FORCED"):
        await broker.connect(BrokerSettings(), name="unit")
    instance = instance_factory()
    with structlog.testing.capture_logs() as logs:
        await _run_for(instance, 0.3)  # raised out of run() before: the process died after one attempt
    assert len(attempts) >= 4
    assert {e["event"] for e in logs} >= {"broker.unavailable"}


# -- finding 8: a session that fails right after connecting is retried with backoff ---------------------


async def test_a_session_refused_after_connect_backs_off(
    monkeypatch: pytest.MonkeyPatch, running: Callable[..., HostInstance], no_jitter: None
) -> None:
    fake = FakeBroker(Behaviour(declare_error=unavailable("PRECONDITION_FAILED - inequivalent arg")))
    monkeypatch.setattr(broker, "connect", fake.connect)
    with structlog.testing.capture_logs() as logs:
        running(fake)
        await asyncio.sleep(0.5)
    delays = [e["retry_in_s"] for e in logs if e["event"] == "broker.session_failed"]
    # 0.02, 0.04, 0.08, 0.08 …: it was 788 connects a second with the counter reset on every connect
    assert delays[:3] == [0.02, 0.04, 0.08] and set(delays[3:]) <= {0.08}
    assert len(fake.connects) <= 0.5 / 0.08 + 4
    assert all(e["error_code"] == "broker-unavailable" for e in logs if e["event"] == "broker.session_failed")


async def test_after_a_lost_session_the_next_node_is_tried_first(
    monkeypatch: pytest.MonkeyPatch, running: Callable[..., HostInstance]
) -> None:
    fake = FakeBroker(Behaviour())
    monkeypatch.setattr(broker, "connect", fake.connect)
    urls = "amqp://u:p@127.0.0.1:1/,amqp://u:p@127.0.0.1:2/,amqp://u:p@127.0.0.1:3/"
    running(fake, amqp_url=urls)
    first = await fake.wait_sessions(1)
    first.lose(unavailable("node down"))
    second = await fake.wait_sessions(2)
    second.lose(unavailable("node down"))
    await fake.wait_sessions(3)
    assert fake.connects[:3] == [0, 1, 2]


# -- finding 9: a consumer the broker cancelled ends the session -----------------------------------------


async def test_a_consumer_cancelled_by_the_broker_closes_the_session() -> None:
    class Conn:
        def __init__(self) -> None:
            self.close_callbacks: set[Any] = set()
            self.is_closed = False

    session = broker.Session(BrokerSettings(), Conn())  # type: ignore[arg-type]
    session._tag = "ctag-1"
    session._on_consumer_cancel(type("Cancel", (), {"consumer_tag": "ctag-other"})())
    assert session.alive  # another consumer's cancel is not ours
    session._on_consumer_cancel(type("Cancel", (), {"consumer_tag": "ctag-1"})())
    assert not session.alive
    reason = session.closed.result()
    assert isinstance(reason, BrokerUnavailable) and "cancelled our consumer" in reason.message


# -- finding 12: a handler cancelled while its coalesced ack is pending -----------------------------------


async def test_a_cancelled_handler_whose_ack_is_pending_is_not_nacked() -> None:
    fake = FakeBroker(Behaviour())
    session = await fake.connect(BrokerSettings(), name="unit")
    inbound, raw = session.inbound(b"x")
    acking = asyncio.create_task(inbound.ack())
    await asyncio.sleep(0)  # the ack is queued in the coalescer; its frame goes out this tick
    acking.cancel()
    await inbound.release()  # what the cancelled handler does; before: a nack of the same tag (406)
    await asyncio.sleep(0.01)
    assert raw.settled == ["ack"]


async def test_a_cancelled_handler_still_in_progress_is_released_not_rejected() -> None:
    acks = AckCoalescer()
    fake = FakeBroker(Behaviour())
    session = await fake.connect(BrokerSettings(), name="unit")
    session.acks = acks
    inbound, raw = session.inbound(b"x")
    await inbound.release()
    assert raw.settled == ["nack-requeue"]  # RabbitMQ 4.3 does not count it toward the delivery limit


# -- finding 3: what cannot be settled is returned with reject (counted on every version) ---------------


async def test_a_message_that_cannot_be_settled_is_rejected_so_the_limit_ends_it(
    monkeypatch: pytest.MonkeyPatch, running: Callable[..., HostInstance]
) -> None:
    def refuse(exchange: str, _: Any) -> DeliveryFailed | None:
        return DeliveryFailed(f"{exchange or 'retry'} nacked", stage="x")

    fake = FakeBroker(Behaviour(publish=refuse))
    monkeypatch.setattr(broker, "connect", fake.connect)
    monkeypatch.setattr(app, "UNSETTLED_PAUSE_S", 0.0)
    running(fake)
    session = await fake.wait_sessions(1)
    raw = await session.deliver(b"payload")
    await _until(lambda: raw.settled)
    assert raw.settled == ["reject-requeue"]


async def test_the_last_delivery_before_the_broker_limit_is_suspended_with_a_reason(
    monkeypatch: pytest.MonkeyPatch, running: Callable[..., HostInstance]
) -> None:
    fake = FakeBroker(Behaviour())
    monkeypatch.setattr(broker, "connect", fake.connect)
    running(fake)
    session = await fake.wait_sessions(1)
    raw = await session.deliver(b"payload", headers={"x-delivery-count": 19})
    await _until(lambda: raw.settled)
    ((exchange, out),) = session.published
    assert exchange == "sendpipe.suspended" and out.headers["sendpipe-error-code"] == "delivery-limit-reached"
    assert raw.settled == ["ack"]


# -- finding 11: an id-less message gets its id once, then keeps it ---------------------------------------


async def test_a_message_without_id_is_republished_with_one_before_processing(
    monkeypatch: pytest.MonkeyPatch, running: Callable[..., HostInstance]
) -> None:
    fake = FakeBroker(Behaviour())
    monkeypatch.setattr(broker, "connect", fake.connect)
    running(fake)
    session = await fake.wait_sessions(1)
    raw = await session.deliver(b"payload", message_id=None, headers={"sendpipe-attempts": 7, "x-delivery-count": 2})
    await _until(lambda: raw.settled)
    ((exchange, out),) = session.published
    assert exchange == "" and out.routing_key == "sendpipe.host.SendHost"
    assert out.message_id is not None and out.message_id.startswith("sendpipe-")
    assert out.headers == {"sendpipe-send-port": "Orders"}  # a producer cannot pre-spend retries
    assert raw.settled == ["ack"]


async def _until(condition: Callable[[], Any], timeout_s: float = 5) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


# -- RabbitMQ 3.10: a channel nacked during a leader election keeps nacking (tests/reliability/cluster.py) ----


class _Exchange:
    def __init__(self, channel: _Channel) -> None:
        self.channel = channel

    async def publish(self, *_: Any, **__: Any) -> None:
        self.channel.published += 1
        if self.channel.nacks:
            raise aiormq.exceptions.DeliveryError(None, pamqp.commands.Basic.Nack(delivery_tag=1))


class _Channel:
    def __init__(self, nacks: bool) -> None:
        self.nacks, self.published, self.is_closed = nacks, 0, False
        self.close_callbacks: set[Any] = set()

    async def get_exchange(self, *_: Any, **__: Any) -> _Exchange:
        return _Exchange(self)

    async def close(self) -> None:
        self.is_closed = True


class _Conn:
    is_closed = False

    def __init__(self) -> None:
        self.close_callbacks: set[Any] = set()
        self.opened: list[_Channel] = []

    async def channel(self, **_: Any) -> _Channel:
        self.opened.append(_Channel(nacks=False))
        return self.opened[-1]


async def test_after_a_nack_the_next_publish_goes_out_on_a_fresh_channel() -> None:
    conn = _Conn()
    session = broker.Session(BrokerSettings(publish_timeout_s=0.01), conn)  # type: ignore[arg-type]
    stuck = _Channel(nacks=True)
    stuck.close_callbacks.add(session._on_close)
    session._publish = stuck  # type: ignore[assignment]
    with pytest.raises(DeliveryFailed, match="nack"):
        await session.publish("sendpipe.delivery", Outbound(b"x", "k"))
    await session.publish("sendpipe.delivery", Outbound(b"y", "k"))  # no nack: a new channel took it
    assert stuck.published == 1 and len(conn.opened) == 1 and conn.opened[0].published == 1
    assert session.alive  # retiring the old channel does not end the session
    await asyncio.sleep(0.05)
    assert stuck.is_closed and session.alive


def test_the_derived_prefetch_keeps_the_largest_inputs_under_a_quarter_of_memory() -> None:
    mib = 1 << 20
    assert derived_prefetch(2, 24 << 30, 16 * mib) == 16  # 8 per thread, memory is no limit
    assert derived_prefetch(2, 600 * mib, 16 * mib) == 9  # a 600 MiB container: 9 x 16 MiB <= 150 MiB
    assert derived_prefetch(8, 100 * mib, 64 * mib) == 1  # never below one
