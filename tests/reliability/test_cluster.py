"""The cluster scenario in its short form (issue 10, item 4): a 3-node RabbitMQ 3.10 cluster started by the
test itself (``tests/reliability/cluster.py``), two instances listing the nodes in different orders, the host
queue leader's node stopped (``stop_app``) or killed (``kill -9`` of its beam.smp) under load, then brought back.

0 lost, 0 unexpected, 0 suspended, duplicates <= prefetch per instance, every instance consuming again within
30 s of the fault. ``SENDPIPE_RELIABILITY=long`` runs the long form.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from . import cluster, harness
from .lab import Lab

PROFILE = cluster.LONG if os.environ.get("SENDPIPE_RELIABILITY") == "long" else cluster.SHORT


@pytest.fixture(scope="module")
def rabbit_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cluster.Cluster]:
    """Started once for both runs (about 30 s), always stopped and deleted afterwards."""
    with cluster.Cluster(tmp_path_factory.mktemp("cluster")) as started:
        yield started


@pytest.mark.timeout(PROFILE.scenario_timeout_s + PROFILE.settle_timeout_s + 150)
@pytest.mark.parametrize("fault", cluster.FAULTS)
async def test_cluster_node_loss(fault: str, rabbit_cluster: cluster.Cluster, reliability_lab: Lab) -> None:
    figures = await cluster.run_cluster_scenario(reliability_lab, rabbit_cluster, fault, PROFILE)
    report = harness.table([figures]) + "\n" + harness.details([figures])
    print("\n" + report)
    assert figures.published > 0, report
    assert figures.delivered == figures.published, report
    assert figures.lost == 0, report
    assert figures.unexpected == 0, report
    assert figures.suspended == 0, report
    assert figures.duplicated <= PROFILE.prefetch * len(cluster.INSTANCE_ORDERS), report
    assert figures.recovery_s is not None, report
    assert figures.recovery_s <= harness.RECOVERY_LIMIT_S, report
    assert figures.ok, report
