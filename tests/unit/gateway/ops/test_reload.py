"""Reload: bad files keep the running config; good ones restart only what changed."""

from __future__ import annotations

import socket
from pathlib import Path

from gateway.ops.notify import Notifier
from gateway.ops.reload import plan_reload, reload
from tests.support.waiting import until
from tests.unit.gateway.ops.conftest import CONFIG, MAPPING, Rig

NEW_DEVICE = """
  - id: dev-c
    protocol: modbus
    connection: {host: 127.0.0.1, port: 3}
    poll_interval: 0.05
    timeout: 0.2
    points:
      - {id: c.p, address: 1/holding/0, type: int16, unit: KiloW}
"""


def changed_mapping() -> str:
    """dev-a untouched, dev-b polls slower and loses b.bad, dev-c is new."""
    text = MAPPING.replace("port: 2}\n    poll_interval: 0.05", "port: 2}\n    poll_interval: 0.1")
    text = text.replace("      - {id: b.bad, address: 1/holding/1, type: int16, unit: KiloW}\n", "")
    return text + NEW_DEVICE


async def test_plan_names_what_changed(rig: Rig) -> None:
    rig.write(mapping=changed_mapping(), config=CONFIG.replace("state_dir: state", "state_dir: s2"))
    plan = plan_reload(rig.gw.config, rig.load())
    assert [d.id for d in plan.added] == ["dev-c"]
    assert [d.id for d in plan.changed] == ["dev-b"]
    assert plan.removed == ()
    assert plan.unchanged == ("dev-a",)
    assert plan.restart_needed == ("state_dir",)
    assert plan.live == ()  # the devices changed, no live config section


async def test_valid_reload_applies_without_touching_unchanged_links(rig: Rig) -> None:
    gw = rig.gw
    assert await gw.wait_connected(2.0)
    session_a = gw.sessions["dev-a"]
    connects_a = rig.fields["dev-a"].connects
    rig.write(mapping=changed_mapping())
    assert await reload(gw, rig.load, Notifier(None))
    assert gw.sessions["dev-a"] is session_a  # same session, same link
    assert rig.fields["dev-a"].connects == connects_a
    assert set(gw.sessions) == {"dev-a", "dev-b", "dev-c"}
    assert gw.sessions["dev-b"].device.poll_interval == 0.1
    assert "b.bad" not in gw.table and gw.table.latest("b.bad") is None
    rig.fields["dev-c"].values["c.p"] = 9.0
    await until(lambda: (r := gw.table.latest("c.p")) is not None and r.value == 9.0)
    assert gw.store is not None
    [event] = await gw.store.events("reload")
    assert event.detail["added"] == ["dev-c"] and event.detail["changed"] == ["dev-b"]
    assert gw.metrics.counter("mgms_reloads_total", "", ("result",)).value(result="applied") == 1


async def test_removed_device_is_disconnected(rig: Rig) -> None:
    gw = rig.gw
    assert await gw.wait_connected(2.0)
    rig.write(mapping=MAPPING.split("  - id: dev-b")[0])
    assert await reload(gw, rig.load, Notifier(None))
    assert set(gw.sessions) == {"dev-a"}
    assert "b.p" not in gw.table
    reads = rig.fields["dev-b"].reads
    polls_a = gw.sessions["dev-a"].polls
    await until(lambda: gw.sessions["dev-a"].polls > polls_a + 3)
    assert rig.fields["dev-b"].reads == reads  # nobody polls it any more


async def test_invalid_reload_keeps_the_old_config_and_says_why(rig: Rig, tmp_path: Path) -> None:
    gw = rig.gw
    assert await gw.wait_connected(2.0)
    before = gw.config
    sessions = dict(gw.sessions)
    rig.write(
        mapping=MAPPING.replace(
            "type: int16, unit: KiloW, der: pcc", "type: int99, unit: KiloW, der: pcc"
        )
    )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "n.sock"))
    sock.settimeout(2)
    notifier = Notifier(str(tmp_path / "n.sock"))
    try:
        assert not await reload(gw, rig.load, notifier)
        first, second = sock.recv(1024).decode(), sock.recv(1024).decode()
    finally:
        notifier.close()
        sock.close()
    assert first.startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert second.startswith("READY=1\nSTATUS=reload rejected (1 problems)")
    assert gw.config is before and gw.sessions == sessions
    assert gw.store is not None
    [event] = await gw.store.events("reload_rejected")
    [problem] = event.detail["problems"]
    assert "m.yaml" in problem and "b.p" in problem and "int99" in problem
    counter = gw.metrics.counter("mgms_reloads_total", "", ("result",))
    assert counter.value(result="rejected") == 1
    # still polling on the old files
    polls = gw.sessions["dev-b"].polls
    await until(lambda: gw.sessions["dev-b"].polls > polls)


async def test_unreadable_config_is_rejected(rig: Rig) -> None:
    (rig.dir / "gw.yaml").unlink()
    assert not await reload(rig.gw, rig.load, Notifier(None))
    assert set(rig.gw.sessions) == {"dev-a", "dev-b"}


async def test_a_device_no_driver_can_serve_leaves_everything_running(rig: Rig) -> None:
    gw = rig.gw
    assert await gw.wait_connected(2.0)

    def refuse(device):  # type: ignore[no-untyped-def]
        raise ValueError(f"device {device.id!r}: no driver for protocol 'modbus'")

    gw._driver_factory = refuse
    rig.write(mapping=changed_mapping())
    assert not await reload(gw, rig.load, Notifier(None))
    assert set(gw.sessions) == {"dev-a", "dev-b"}
    assert gw.sessions["dev-b"].device.poll_interval == 0.05


async def test_a_part_that_fails_to_prepare_refuses_the_reload_and_changes_nothing(
    rig: Rig,
) -> None:
    gw = rig.gw
    assert await gw.wait_connected(2.0)
    committed: list[str] = []

    async def fine(config):  # type: ignore[no-untyped-def]
        async def commit() -> None:
            committed.append("fine")

        return commit

    async def broken(config):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug")

    gw.on_reload("fine", fine)
    gw.on_reload("broken", broken)
    before = gw.config
    rig.write(mapping=changed_mapping())
    assert not await reload(gw, rig.load, Notifier(None))
    assert gw.config is before and set(gw.sessions) == {"dev-a", "dev-b"}
    assert committed == []  # prepared, but nothing commits unless every part could prepare
    assert gw.store is not None
    [event] = await gw.store.events("reload_rejected")
    assert "broken cannot take the new config: RuntimeError('a bug')" in event.detail["problems"][0]
