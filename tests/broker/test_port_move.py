"""A send port moved to another host: its messages reach the new host only (issue 12, bindings reconciled).

Bindings used to be only ever added: the old host queue stayed bound, every message was copied into both
queues, delivered by the new host and suspended `unknown-send-port` by the old one — restarts did not help.
"""

from __future__ import annotations

from typing import Any

from brokerkit import Client, Deployment


async def test_a_port_moved_to_another_host_is_delivered_once_and_never_suspended(
    vhost: str, deployment: Deployment, workers: Any, client: Client
) -> None:
    old = workers(deployment.env(vhost, "svc-a", SENDPIPE_RELOAD_INTERVAL_S="0.3"))
    old.wait_for("consumer.started")
    capture = await client.capture()
    await client.publish("Orders", b"before the move", message_id="before")
    old.wait_for("message.delivered")
    # The operator moves Orders to OtherHost: the new host's instance starts, the old one reloads.
    text = deployment.config.read_text()
    moved = text.replace('[send_ports.Orders]\nhost = "SendHost"', '[send_ports.Orders]\nhost = "OtherHost"')
    assert moved != text
    deployment.config.write_text(moved)
    new = workers(deployment.env(vhost, "svc-b", host="OtherHost"))
    new.wait_for("consumer.started")
    (reloaded,) = old.wait_for("config.reloaded")
    assert "Orders" not in reloaded["send_ports"]
    for i in range(5):
        await client.publish("Orders", b"after the move %d" % i, message_id=f"after-{i}")
    new.wait_for("message.delivered", 5)
    got = await client.drain(capture.name, 6)
    assert sorted(str(m.message_id) for m in got) == ["after-0", "after-1", "after-2", "after-3", "after-4", "before"]
    assert {m.headers["sendpipe-host"] for m in got if m.message_id != "before"} == {"OtherHost"}
    assert await client.count("sendpipe.suspended.SendHost") == 0
    assert await client.count("sendpipe.host.SendHost") == 0
    assert not old.events("message.suspended")
    assert len(old.events("message.delivered")) == 1  # only the message from before the move
