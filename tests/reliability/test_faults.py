"""The fault harness in its short form (CI): every scenario, 0 lost, 0 unexpected, duplicates bounded.

``SENDPIPE_RELIABILITY=long`` runs the long form instead (or use ``python -m tests.reliability.harness --long``).
"""

from __future__ import annotations

import os
from typing import Any, cast

import aiormq.exceptions
import pytest
from brokers import Broker

from worker.broker import session as broker
from worker.broker import topology
from worker.broker.inbound import Inbound
from worker.errors import BrokerUnavailable
from worker.host.instance import HostInstance
from worker.identity.store import CertificateStore
from worker.pipeline.catalogue import load_config
from worker.pipeline.runtime import Runtime
from worker.settings import BrokerSettings, InstanceSettings

from . import harness
from .lab import Lab

PROFILE = harness.LONG if os.environ.get("SENDPIPE_RELIABILITY") == "long" else harness.SHORT


@pytest.mark.timeout(PROFILE.scenario_timeout_s + PROFILE.settle_timeout_s + 120)
@pytest.mark.parametrize(("name", "target"), [pytest.param(n, b, id=f"{n}-{b.name}") for n, b in harness.cases()])
async def test_fault_scenario(name: str, target: Broker, reliability_lab: Lab) -> None:
    """Every scenario on every broker. broker-restart stops the broker, so it runs on a node of ours of that
    version: the 4.3 node itself, for 3.10 a private node (the machine's shared one is never stopped)."""
    target.require()
    figures = await harness.run_scenario(reliability_lab, name, target, PROFILE)
    report = harness.table([figures]) + "\n" + harness.details([figures])
    print("\n" + report)
    # A busy broker (another run's connections) is a failure here, not a skip: in CI nothing else is
    # connected, and a scenario that did not run proves nothing.
    assert not figures.skipped, figures.skipped
    assert figures.published > 0, report
    assert figures.lost == 0, report
    assert figures.unexpected == 0, report
    assert figures.duplicated <= figures.dup_limit, report
    if figures.recovery_s is not None:
        assert figures.recovery_s <= harness.RECOVERY_LIMIT_S, report
    assert figures.ok, report


async def test_a_publish_on_a_channel_closed_by_the_broker_is_a_connection_failure(deployment: Any) -> None:
    """In process, deterministic: the race the broker-restart scenario hits now and then (a delivery
    published at the moment the broker closes the channel) is not an outcome of the message: the seam
    maps aiormq's error to BrokerUnavailable and the handler leaves the message to the broker."""

    class ClosedExchange:
        async def publish(self, *_: object, **__: object) -> None:
            raise aiormq.exceptions.ChannelInvalidStateError('<Channel: "1"> closed')

    class Channel:
        is_closed = False

        async def get_exchange(self, *_: object, **__: object) -> ClosedExchange:
            return ClosedExchange()

    class Conn:
        is_closed = False

        def __init__(self) -> None:
            self.close_callbacks: set[Any] = set()

    session = broker.Session(BrokerSettings(), cast(Any, Conn()))
    session._publish = cast(Any, Channel())
    store = CertificateStore.open(deployment.store_root, "svc-b")  # the PEM account: no password
    runtime = Runtime.build(load_config(deployment.config), store, "SendHost")
    settings = InstanceSettings(host="SendHost", host_instance="unit", config=deployment.config)
    instance = HostInstance(settings, BrokerSettings(), runtime, "SendHost")
    inbound = Inbound(b"payload", topology.OUTBOUND, "Orders", "m-1", None, None, {}, False, _raw=cast(Any, None))
    try:
        with pytest.raises(BrokerUnavailable, match="ChannelInvalidStateError"):  # redelivered, not failed
            await instance._process(session, inbound, "m-1", "Orders")
    finally:
        instance._pool.shutdown()
