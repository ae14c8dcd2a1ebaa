"""Acquisition, point table, store and control path of the gateway, over in-memory devices."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from drivers.base import Driver
from gateway.app import Gateway
from gateway.errors import LimitViolation, NotWritable, UnknownPoint
from gateway.loader import load_config
from gateway.mapping import Device, Quantity
from gateway.model import Command, CommandStatus, QualityFlag
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
