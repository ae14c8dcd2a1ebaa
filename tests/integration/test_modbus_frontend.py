"""The Modbus simulator front end in-process: several unit ids behind one server, the
register layout it serves, and writes reaching the physics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from pymodbus.client import AsyncModbusTcpClient

from drivers.modbus.driver import ModbusDriver
from fwsim.modbus_server import ModbusFrontEnd
from fwsim.physics import Microgrid
from fwsim.runner import build_grid
from gateway.loader import load_config
from gateway.mapping import Device, Quantity
from gateway.model import Command, CommandMode, CommandStatus
from tests.support.procs import demo_config_with, free_port

pytestmark = pytest.mark.integration

# One Modbus TCP server in front of three units, as a serial-to-TCP gateway would be.
POINTS = [
    {"id": "bess1.p", "address": "1/holding/10", "type": "int16", "scale": 0.1},
    {"id": "bess1.p_set", "address": "1/holding/12", "type": "float32", "rw": True},
    {"id": "bess1.online", "address": "1/holding/14", "type": "bool", "bit": 3},
    {"id": "bess1.enable", "address": "1/coil/5", "rw": True},
    {"id": "pv1.available", "address": "2/input/0", "type": "float32", "word_order": "little"},
    {"id": "pv1.limit", "address": "2/holding/0", "type": "uint16", "scale": 0.1, "rw": True},
    {"id": "load1.p", "address": "3/input/0", "type": "float64"},
    {"id": "load1.online", "address": "3/discrete/17"},
    # two bit fields of one register: a writable switch and the read-only status
    {"id": "load1.enable", "address": "3/holding/5", "type": "bool", "bit": 2, "rw": True},
    {"id": "load1.running", "address": "3/holding/5", "type": "bool", "bit": 0, "q": "status"},
]
QUANTITY = {
    "p": "active_power",
    "p_set": "active_power_setpoint",
    "online": "status",
    "enable": "switch",
    "available": "available_power",
    "limit": "active_power_limit",
}
UNIT = {"p": "KiloW", "p_set": "KiloW", "available": "KiloW", "limit": "PERCENT"}


def _mapping() -> dict[str, object]:
    points = []
    for spec in POINTS:
        raw = dict(spec)
        der, name = str(raw["id"]).split(".")
        rw = raw.pop("rw", False)
        quantity = raw.pop("q", None) or QUANTITY[name]
        raw.update(der=der, quantity=quantity, unit=UNIT.get(name, "UNITLESS"))
        if rw:
            raw["direction"] = "read-write"
        points.append(raw)
    return {
        "devices": [
            {
                "id": "gateway-box",
                "protocol": "modbus",
                "connection": {"host": "127.0.0.1", "port": free_port()},
                "points": points,
            }
        ]
    }


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Device, Microgrid, ModbusFrontEnd]]:
    config = demo_config_with(["units.yaml"])
    config["state_dir"] = str(tmp_path / "state")
    (tmp_path / "units.yaml").write_text(yaml.safe_dump(_mapping()))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    loaded = load_config(tmp_path / "config.yaml")
    (device,) = loaded.devices
    grid = build_grid(loaded)
    assert device.connection.host is not None and device.connection.port is not None
    front = ModbusFrontEnd(device, grid, device.connection.host, device.connection.port)
    await front.start()
    try:
        yield device, grid, front
    finally:
        await front.stop()


@pytest.fixture
async def client(
    served: tuple[Device, Microgrid, ModbusFrontEnd],
) -> AsyncIterator[AsyncModbusTcpClient]:
    _, _, front = served
    c = AsyncModbusTcpClient("127.0.0.1", port=front.port, timeout=1, retries=0, reconnect_delay=0)
    assert await c.connect()
    try:
        yield c
    finally:
        c.close()


async def test_driver_reads_every_unit(served: tuple[Device, Microgrid, ModbusFrontEnd]) -> None:
    device, grid, front = served
    grid.apply("bess1", Quantity.ACTIVE_POWER_SETPOINT, 7.5)
    grid.step()
    await front.refresh()
    driver = ModbusDriver(device)
    await driver.connect()
    try:
        readings = {r.point: r for r in await driver.read(device.points)}
    finally:
        await driver.close()
    assert all(r.quality.good for r in readings.values()), readings
    assert {r.unit for r in driver.plan(device.points)} == {1, 2, 3}
    expected = {
        "bess1.p_set": 7.5,
        "bess1.online": True,
        "bess1.enable": True,  # the switch reads back the online state
        "pv1.available": grid.value("pv1", Quantity.AVAILABLE_POWER),
        "pv1.limit": 100.0,
        "load1.p": grid.value("load1", Quantity.ACTIVE_POWER),
        "load1.online": True,
        "load1.running": True,
    }
    for point_id, value in expected.items():
        assert readings[point_id].value == pytest.approx(value, abs=1e-4), point_id
    assert readings["bess1.p"].value == pytest.approx(
        grid.value("bess1", Quantity.ACTIVE_POWER), abs=0.05
    )


async def test_writes_reach_the_model_of_their_unit(
    served: tuple[Device, Microgrid, ModbusFrontEnd],
) -> None:
    device, grid, _ = served
    driver = ModbusDriver(device)
    await driver.connect()
    try:
        points = {p.id: p for p in device.points}
        for point_id, value in (
            ("pv1.limit", 40.0),
            ("bess1.p_set", -12.25),
            ("bess1.enable", False),
        ):
            result = await driver.write(points[point_id], Command(point_id, value))
            assert result.status is CommandStatus.CONFIRMED, (point_id, result.detail)
        assert grid.value("pv1", Quantity.ACTIVE_POWER_LIMIT) == pytest.approx(40.0)
        assert grid.value("bess1", Quantity.ACTIVE_POWER_SETPOINT) == -12.25
        grid.step()
        assert grid.value("bess1", Quantity.STATUS) == 0.0  # the enable coil switched it off
        (online,) = await driver.read([points["bess1.online"]])
        assert online.value is True  # not refreshed yet: the image changes on refresh()
    finally:
        await driver.close()


async def test_bit_field_write_leaves_its_neighbours(
    served: tuple[Device, Microgrid, ModbusFrontEnd],
) -> None:
    device, grid, front = served
    driver = ModbusDriver(device)
    points = {p.id: p for p in device.points}
    pair = [points["load1.enable"], points["load1.running"]]
    await driver.connect()
    try:
        running = True
        for enable in (True, False, True):
            result = await driver.write(points["load1.enable"], Command("load1.enable", enable))
            assert result.status is CommandStatus.CONFIRMED, result.detail
            # the mask write changed bit 2 only: bit 0 still shows the last refresh
            assert [r.value for r in await driver.read(pair)] == [enable, running]
            running = enable
            grid.step()
            assert grid.value("load1", Quantity.STATUS) == float(enable)
            await front.refresh()
            assert [r.value for r in await driver.read(pair)] == [enable, enable]
    finally:
        await driver.close()


async def test_writes_modbus_cannot_do_are_not_sent(
    served: tuple[Device, Microgrid, ModbusFrontEnd],
) -> None:
    device, _, _ = served
    driver = ModbusDriver(device)
    point = next(p for p in device.points if p.id == "pv1.limit")
    await driver.connect()
    try:
        sbo = Command("pv1.limit", 10.0, mode=CommandMode.SELECT_BEFORE_OPERATE)
        result = await driver.write(point, sbo)
        assert (result.status, result.detail) == (
            CommandStatus.REJECTED,
            "not sent: Modbus has no select-before-operate",
        )
        late = Command("pv1.limit", 10.0, deadline=datetime.now(UTC) - timedelta(seconds=1))
        result = await driver.write(point, late)
        assert result.status is CommandStatus.TIMEOUT
        assert driver.requests_sent == 0
    finally:
        await driver.close()


async def test_layout_and_exceptions(
    served: tuple[Device, Microgrid, ModbusFrontEnd], client: AsyncModbusTcpClient
) -> None:
    # unit 1 holding block spans 10..14: 11 is unmapped inside it and reads 0
    answer = await client.read_holding_registers(10, count=5, device_id=1)
    assert not answer.isError()
    assert answer.registers[1] == 0
    assert answer.registers[4] == 1 << 3  # bess1.online, bit 3
    for address, count in ((9, 1), (14, 2)):  # just outside the block
        answer = await client.read_holding_registers(address, count=count, device_id=1)
        assert answer.isError() and answer.exception_code == 2
    # a table the unit does not serve
    answer = await client.read_input_registers(0, count=1, device_id=1)
    assert answer.isError() and answer.exception_code == 2
    answer = await client.read_coils(0, count=1, device_id=2)
    assert answer.isError() and answer.exception_code == 2
    # writes only to writable points: unmapped 11, read-only 10 and 14 are refused
    for address in (10, 11, 14):
        answer = await client.write_register(address, 1, device_id=1)
        assert answer.isError() and answer.exception_code == 2, address
    # a write spanning a writable and an unmapped register is refused as a whole
    answer = await client.write_registers(11, [0, 0, 0], device_id=1)
    assert answer.isError() and answer.exception_code == 2
    answer = await client.read_discrete_inputs(17, count=1, device_id=3)
    assert not answer.isError() and answer.bits[0] is True
    # a unit id the server does not have
    answer = await client.read_holding_registers(0, count=1, device_id=9)
    assert answer.isError() and answer.exception_code == 4
