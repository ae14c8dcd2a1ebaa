"""Acquisition, point table, store and control path of the gateway, over in-memory devices."""

from __future__ import annotations

import asyncio
import gc
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from drivers.base import Driver
from gateway.acquisition import DeviceSession, poll_phase
from gateway.app import SWITCH_INTERVAL_S, Gateway
from gateway.errors import LimitViolation, NotWritable, UnknownPoint
from gateway.loader import load_config
from gateway.mapping import Device, Quantity
from gateway.model import Command, CommandStatus, QualityFlag, Reading
from gateway.points import PointTable
from tests.support.memory_driver import MemoryDevice, MemoryDriver
from tests.support.waiting import until

MAPPING = """
devices:
  - id: dev-a
    protocol: modbus
    connection: {host: 127.0.0.1, port: 1}
    poll_interval: 0.05
    timeout: 0.2
    points:
      - {id: a.p, address: 1/holding/0, type: int16, unit: KiloW, der: bess, quantity: active_power}
      - id: a.set
        address: 1/holding/1
        type: int16
        unit: KiloW
        direction: read-write
        limits: {min: -10, max: 10}
        der: bess
        quantity: active_power_setpoint
      - {id: a.bad, address: 1/holding/2, type: int16, unit: KiloW}
  - id: dev-b
    protocol: modbus
    connection: {host: 127.0.0.1, port: 2}
    poll_interval: 0.05
    timeout: 0.2
    points:
      - {id: b.p, address: 1/holding/0, type: int16, unit: KiloW}
"""

CONFIG = """
microgrid: {id: mg}
state_dir: state
mappings: [m.yaml]
coupling_point: {import_limit_kw: 10, export_limit_kw: 10}
reconnect_max_s: 0.2
ders:
  - {id: bess, type: battery, ratings: {p_min_kw: -10, p_max_kw: 10, energy_kwh: 20}}
"""


@dataclass
class Rig:
    gw: Gateway
    fields: dict[str, MemoryDevice]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    (tmp_path / "m.yaml").write_text(textwrap.dedent(MAPPING))
    (tmp_path / "gw.yaml").write_text(textwrap.dedent(CONFIG))
    config = load_config(tmp_path / "gw.yaml")
    fields = {"dev-a": MemoryDevice(), "dev-b": MemoryDevice()}
    fields["dev-a"].values.update({"a.p": 1.0, "a.set": 0.0})
    fields["dev-a"].refuse.add("a.bad")
    fields["dev-b"].values["b.p"] = 7.0

    def factory(device: Device) -> Driver:
        return MemoryDriver(device, fields[device.id])

    async with Gateway(config, driver_factory=factory) as gw:
        yield Rig(gw, fields)


async def test_points_flow_into_table_and_store(rig: Rig) -> None:
    gw = rig.gw
    assert await gw.wait_connected(2.0)
    await until(lambda: gw.table.latest("b.p") is not None)
    assert gw.table.latest("b.p").value == 7.0  # type: ignore[union-attr]
    bad = gw.table.latest("a.bad")
    assert bad is not None and not bad.quality.good and "illegal" in bad.detail
    assert gw.table.value("bess", Quantity.ACTIVE_POWER) == 1.0
    assert gw.store is not None
    await gw.store.flush()
    assert (await gw.store.latest("b.p")).value == 7.0  # type: ignore[union-attr]


async def test_write_path_checks_then_sends(rig: Rig) -> None:
    gw = rig.gw
    assert gw.controller is not None and gw.store is not None
    assert await gw.wait_connected(2.0)
    result = await gw.controller.write(Command("a.set", 5))
    assert result.status is CommandStatus.CONFIRMED
    assert rig.fields["dev-a"].values["a.set"] == 5.0
    await until(lambda: gw.table.latest("a.set").value == 5.0)  # type: ignore[union-attr]

    for cmd, error in (
        (Command("a.set", 11), LimitViolation),
        (Command("a.p", 1), NotWritable),
        (Command("nope", 1), UnknownPoint),
    ):
        with pytest.raises(error, match=cmd.point):
            await gw.controller.write(cmd)
    assert rig.fields["dev-a"].values["a.set"] == 5.0  # nothing half-applied
    refused = await gw.store.events("write_refused")
    assert [e.point for e in refused] == ["a.set", "a.p", "nope"]
    assert gw.controller.sent == {"modbus": 1} and gw.controller.confirmed == {"modbus": 1}


async def test_link_loss_marks_points_invalid_and_reconnects(rig: Rig) -> None:
    gw = rig.gw
    assert await gw.wait_connected(2.0)
    await until(lambda: gw.table.latest("a.p") is not None)
    field_a = rig.fields["dev-a"]
    field_a.link_up = False
    await until(lambda: not gw.table.latest("a.p").quality.good)  # type: ignore[union-attr]
    reading = gw.table.latest("a.p")
    assert reading is not None and QualityFlag.COMM_FAILURE in reading.quality.flags
    # the other device keeps being polled while dev-a is down
    reads_b = rig.fields["dev-b"].reads
    await until(lambda: rig.fields["dev-b"].reads > reads_b + 3)
    assert gw.table.latest("b.p").quality.good  # type: ignore[union-attr]
    assert gw.controller is not None
    down = await gw.controller.write(Command("a.set", 1))
    assert down.status is CommandStatus.LINK_DOWN
    field_a.link_up = True
    await until(lambda: gw.table.latest("a.p").quality.good)  # type: ignore[union-attr]
    assert field_a.connects == 2
    assert gw.store is not None
    events = await gw.store.events()
    kinds = [e.kind for e in events if e.device == "dev-a" and e.kind.startswith("link")]
    assert kinds == ["link_up", "link_down", "link_up"]  # each transition logged once


async def test_devices_connected_together_poll_on_their_own_phases(tmp_path: Path) -> None:
    """Two devices that connect at the same moment poll at different moments of each
    period (their hashed phases, about half a period apart), not together for good."""
    interval = 0.2
    mapping = textwrap.dedent(MAPPING).replace("poll_interval: 0.05", f"poll_interval: {interval}")
    (tmp_path / "m.yaml").write_text(mapping)
    (tmp_path / "gw.yaml").write_text(textwrap.dedent(CONFIG))
    config = load_config(tmp_path / "gw.yaml")
    table = PointTable(config)
    polled: dict[str, list[float]] = {"dev-a": [], "dev-b": []}

    async def events(kind: str, **detail: object) -> None:
        return None

    def on_poll(device: str, _: float) -> None:
        polled[device].append(time.monotonic())

    sessions = [
        DeviceSession(d, MemoryDriver(d, MemoryDevice()), table, events, on_poll=on_poll)
        for d in config.devices
    ]
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(s.run()) for s in sessions]
        await until(lambda: all(len(times) >= 6 for times in polled.values()), within=5.0)
        for task in tasks:
            task.cancel()

    def off_phase(device: str, at: float) -> float:
        """How far (s) a poll started from the device's phase, either way round."""
        off = (at - poll_phase(device, interval)) % interval
        return min(off, interval - off)

    phases = {d: poll_phase(d, interval) for d in polled}
    assert abs(phases["dev-a"] - phases["dev-b"]) > interval / 4, phases
    for device, times in polled.items():
        late = [round(off_phase(device, t), 3) for t in times[1:]]  # the first: at connect
        # a poll's end is reported: late by the poll's own time and the loop's wake-up
        assert max(late) < interval / 8, (device, late)


async def test_what_start_up_built_is_out_of_the_collectors_sight(rig: Rig) -> None:
    """A full collection walks what the gateway made since it started, not the models and
    libraries start-up built (a 100-340 ms pause each, every few seconds, on a 10,000-point
    site); once it stops, all of it may be collected again."""
    assert gc.get_freeze_count() > 10 * len(gc.get_objects(generation=2))


async def test_a_stopped_gateway_leaves_nothing_frozen(tmp_path: Path) -> None:
    """...and gives the interpreter lock back at the default switch interval: while it
    runs, a worker thread holds the lock 1 ms, not 5, when the event loop wants it."""
    before = sys.getswitchinterval()
    (tmp_path / "m.yaml").write_text(textwrap.dedent(MAPPING))
    (tmp_path / "gw.yaml").write_text(textwrap.dedent(CONFIG))
    config = load_config(tmp_path / "gw.yaml")
    fields = {"dev-a": MemoryDevice(), "dev-b": MemoryDevice()}
    async with Gateway(config, driver_factory=lambda d: MemoryDriver(d, fields[d.id])):
        assert gc.get_freeze_count() > 0
        assert sys.getswitchinterval() == SWITCH_INTERVAL_S < before
    assert gc.get_freeze_count() == 0
    assert sys.getswitchinterval() == before
    # two side by side, the first to start stopping first: the second still runs tuned,
    # and the process is as before once both stopped
    (tmp_path / "second").mkdir()
    (tmp_path / "second" / "m.yaml").write_text(textwrap.dedent(MAPPING))
    (tmp_path / "second" / "gw.yaml").write_text(textwrap.dedent(CONFIG))
    other = load_config(tmp_path / "second" / "gw.yaml")
    first = Gateway(config, driver_factory=lambda d: MemoryDriver(d, fields[d.id]))
    second = Gateway(other, driver_factory=lambda d: MemoryDriver(d, MemoryDevice()))
    await first.__aenter__()
    await second.__aenter__()
    await first.__aexit__(None, None, None)
    assert sys.getswitchinterval() == SWITCH_INTERVAL_S and gc.get_freeze_count() > 0
    await second.__aexit__(None, None, None)
    assert gc.get_freeze_count() == 0
    assert sys.getswitchinterval() == before


async def test_a_big_poll_reaches_the_table_in_slices_with_other_work_between(
    tmp_path: Path,
) -> None:
    """The table (and the store behind it) takes a 350-point poll 100 readings at a time,
    and work that became ready meanwhile (an activation's next step) runs in between."""
    points = "\n".join(
        f"      - {{id: p{i}, address: 1/holding/{i}, type: int16, unit: KiloW}}"
        for i in range(350)
    )
    mapping = (
        "devices:\n  - id: big\n    protocol: modbus\n"
        "    connection: {host: 127.0.0.1, port: 1}\n    poll_interval: 10\n"
        f"    points:\n{points}\n"
    )
    (tmp_path / "m.yaml").write_text(mapping)
    (tmp_path / "gw.yaml").write_text(textwrap.dedent(CONFIG))
    config = load_config(tmp_path / "gw.yaml")
    device = config.devices[0]
    field = MemoryDevice()
    field.values.update({f"p{i}": float(i) for i in range(350)})
    table = PointTable(config)
    seen: list[str] = []

    def listener(batch: Sequence[Reading]) -> None:
        seen.append(f"batch {len(batch)}")
        if len(seen) == 1:  # something else gets ready while the first slice is taken
            asyncio.get_running_loop().call_soon(seen.append, "other")

    table.listen(listener)

    async def events(kind: str, **detail: object) -> None:
        return None

    session = DeviceSession(device, MemoryDriver(device, field), table, events)
    await session.driver.connect()
    await session.poll_once()
    assert seen == ["batch 100", "other", "batch 100", "batch 100", "batch 50"]
    assert table.latest("p349").value == 349.0  # type: ignore[union-attr]


async def test_a_command_is_answered_while_the_store_is_busy_and_its_record_follows(
    rig: Rig,
) -> None:
    """The write's audit record is appended in turn, not awaited: a command sent while the
    store's database is busy (a write of 10,000 points' samples) is answered at once, and
    the record is there for the next query."""
    gw = rig.gw
    assert gw.controller is not None and gw.store is not None
    assert await gw.wait_connected(2.0)
    busy = threading.Event()
    # the store's database thread held, as a long write of samples holds it
    held = gw.store._db.submit(lambda _: busy.wait(10))
    try:
        result = await asyncio.wait_for(gw.controller.write(Command("a.set", 4)), 5)
    finally:
        busy.set()
        await held
    assert result.status is CommandStatus.CONFIRMED
    written = await gw.store.events("write")
    assert [(e.point, e.detail["value"]) for e in written] == [("a.set", 4)]
