"""The Modbus driver against a server it was not written with: pyModbusTCP's (an independent
pure-Python implementation, not pymodbus), over a real socket. Register answers are decoded
by the gateway's own classes (`drivers.modbus.answers`); here they meet another
implementation's frames: full 125-register blocks, words in both orders, scaled integers,
bits, a refused address, writes, and a function the server does not implement."""

from __future__ import annotations

import random
import struct
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyModbusTCP.server import DataBank, ModbusServer

from drivers.modbus.driver import ModbusDriver
from gateway.loader import load_config
from gateway.mapping import Device, Point
from gateway.model import Command, CommandStatus, QualityFlag
from tests.support.procs import demo_config_with, free_port

pytestmark = pytest.mark.integration

#: float32 points from this holding register on, two registers each: more than two full
#: read requests (the planner's largest is 124 registers, 62 points)
FLOATS_AT, FLOATS = 40000, 130
#: the server's holding registers end here: a point past it is an illegal data address
HOLDING_SIZE = 42000
MISSING_AT = 45000


def _float32(x: float) -> float:
    """`x` as a float32 holds it."""
    return float(struct.unpack(">f", struct.pack(">f", x))[0])


def _words(fmt: str, value: float | int) -> list[int]:
    return list(struct.unpack(">2H", struct.pack(fmt, value)))


def _point(point_id: str, address: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": point_id,
        "address": address,
        "der": "bess1",
        "quantity": fields.pop("quantity", "active_power"),
        "unit": fields.pop("unit", "KiloW"),
        **fields,
    }


def _mapping(port: int) -> dict[str, Any]:
    points = [
        _point(f"f{k}", f"1/holding/{FLOATS_AT + 2 * k}", type="float32") for k in range(FLOATS)
    ]
    points += [_point(f"i{k}", f"1/input/{100 + k}", type="int16", scale=0.1) for k in range(10)]
    points += [
        _point(
            "counter", "1/holding/1000", type="uint32", quantity="energy_import", unit="KiloW-HR"
        ),
        _point("little", "1/holding/1002", type="float32", word_order="little"),
        _point(
            "set",
            "1/holding/1004",
            type="float32",
            quantity="active_power_setpoint",
            direction="read-write",
        ),
        _point("online", "1/holding/1010", type="bool", bit=3, quantity="status", unit="UNITLESS"),
        _point("enable", "1/coil/5", quantity="switch", unit="UNITLESS", direction="read-write"),
        _point(
            "mode",
            "1/holding/1011",
            type="bool",
            bit=2,
            quantity="switch",
            unit="UNITLESS",
            direction="read-write",
        ),
        _point("missing", f"1/holding/{MISSING_AT}", type="float32"),
    ]
    return {
        "devices": [
            {
                "id": "other-vendor",
                "protocol": "modbus",
                "connection": {"host": "127.0.0.1", "port": port},
                "points": points,
            }
        ]
    }


@pytest.fixture
def server() -> Iterator[ModbusServer]:
    bank = DataBank(h_regs_size=HOLDING_SIZE, i_regs_size=1000, coils_size=100)
    srv = ModbusServer(host="127.0.0.1", port=free_port(), no_block=True, data_bank=bank)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
async def driver(server: ModbusServer, tmp_path: Path) -> AsyncIterator[ModbusDriver]:
    config = demo_config_with(["other.yaml"])
    config["state_dir"] = str(tmp_path / "state")
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(_mapping(server.port)))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    (device,) = load_config(tmp_path / "config.yaml").devices
    drv = ModbusDriver(device)
    await drv.connect()
    try:
        yield drv
    finally:
        await drv.close()


def _by_id(device: Device) -> dict[str, Point]:
    return {p.id: p for p in device.points}


def _serve_values(bank: DataBank, seed: int) -> dict[str, float | bool]:
    """Random values into the server's registers; what each point should read."""
    rng = random.Random(seed)
    expected: dict[str, float | bool] = {}
    words: list[int] = []
    for k in range(FLOATS):
        value = _float32(rng.uniform(-1e4, 1e4))
        words += _words(">f", value)
        expected[f"f{k}"] = value
    assert bank.set_holding_registers(FLOATS_AT, words)
    raw = [rng.randrange(-32768, 32768) for _ in range(10)]
    assert bank.set_input_registers(100, [r & 0xFFFF for r in raw])
    expected |= {f"i{k}": r * 0.1 for k, r in enumerate(raw)}
    counter = rng.randrange(2**32)
    little = _float32(rng.uniform(-500, 500))
    high, low = _words(">f", little)
    assert bank.set_holding_registers(1000, [*_words(">I", counter), low, high])
    expected |= {"counter": float(counter), "little": little}
    online = rng.random() < 0.5
    assert bank.set_holding_registers(1010, [0xFFF7 | (online << 3)])
    expected["online"] = online
    return expected


async def test_every_block_reads_what_the_server_holds(
    driver: ModbusDriver, server: ModbusServer
) -> None:
    points = [p for p in driver.device.points if p.id not in ("missing", "set", "enable", "mode")]
    for seed in (1, 2):  # new values each time: nothing is kept from the last answer
        expected = _serve_values(server.data_bank, seed)
        readings = await driver.read(points)
        for reading in readings:
            assert reading.quality.good, (reading.point, reading.quality, reading.detail)
            want = expected[reading.point]
            if isinstance(want, float):
                assert reading.value == pytest.approx(want, rel=1e-9, abs=1e-9), reading.point
            else:
                assert reading.value is want, reading.point
    # the floats came in full blocks, as the planner asks for them
    plan = driver.plan(points)
    assert max(r.count for r in plan) == 124


async def test_an_address_the_server_refuses_fails_that_point_alone(
    driver: ModbusDriver, server: ModbusServer
) -> None:
    expected = _serve_values(server.data_bank, 3)
    points = _by_id(driver.device)
    readings = {r.point: r for r in await driver.read([points["missing"], points["f0"]])}
    missing = readings["missing"]
    assert not missing.quality.good
    assert "modbus exception 2 (illegal data address)" in (missing.detail or "")
    assert readings["f0"].quality.good and readings["f0"].value == expected["f0"]


async def test_writes_land_in_the_server_and_are_confirmed(
    driver: ModbusDriver, server: ModbusServer
) -> None:
    points = _by_id(driver.device)
    bank = server.data_bank
    result = await driver.write(points["set"], Command("set", 12.5))
    assert result.status is CommandStatus.CONFIRMED, result.detail
    assert bank.get_holding_registers(1004, 2) == _words(">f", 12.5)
    result = await driver.write(points["enable"], Command("enable", True))
    assert result.status is CommandStatus.CONFIRMED, result.detail
    assert bank.get_coils(5, 1) == [True]
    (reading,) = await driver.read([points["set"]])
    assert reading.value == 12.5


async def test_a_bit_write_to_a_server_without_mask_write_is_refused_by_name(
    driver: ModbusDriver, server: ModbusServer
) -> None:
    """The driver writes one bit of a register with mask write (function 22), which this
    server does not implement: the write is refused with the device's own exception and
    nothing else of the register is touched (no read-modify-write behind its back)."""
    bank = server.data_bank
    assert bank.set_holding_registers(1011, [0x00F0])
    result = await driver.write(_by_id(driver.device)["mode"], Command("mode", True))
    assert result.status is CommandStatus.REJECTED
    assert "modbus exception 1 (illegal function)" in result.detail
    assert bank.get_holding_registers(1011, 1) == [0x00F0]
    (reading,) = await driver.read([_by_id(driver.device)["mode"]])
    assert reading.quality.good and reading.value is False
    assert QualityFlag.COMM_FAILURE not in reading.quality.flags
