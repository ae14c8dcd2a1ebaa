"""Modbus RTU on a serial line: the simulator (`mgms sim --serial`) on one end of a socat
pty pair, the driver (and the whole gateway) on the other, three units on the line.

A pseudo-terminal carries bytes, not a UART's timing or parity (Linux refuses PARENB on a
pty), so the line runs 19200 8N2, the RTU standard's format without parity; that the
settings reach the port is checked on the port's termios.
"""

from __future__ import annotations

import asyncio
import os
import signal
import termios
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from drivers.modbus.driver import ModbusDriver
from fwsim.pty_pair import PtyPair
from gateway.app import Gateway
from gateway.errors import LinkError, RequestTimeout
from gateway.loader import load_config
from gateway.mapping import Device, Point, Quantity
from gateway.model import Command, CommandStatus, QualityFlag, Reading, Value
from tests.support.procs import ROOT, SimProcess, demo_config_with, start_sim
from tests.support.waiting import until

pytestmark = pytest.mark.integration

DEVICE = "rtu-line"
LINE = {"baudrate": 19200, "parity": "N", "stopbits": 2}
#: unit id on the line -> the demo device whose register map that unit has
UNITS = {1: "bess1-inverter", 2: "pv1-inverter", 3: "pcc-meter"}
# The simulator is told to fail the battery temperature: it answers exception 04 for it.
TEMPERATURE = {
    "id": "bess1.temperature",
    "address": "1/holding/40084",
    "type": "int16",
    "unit": "DEG_C",
    "der": "bess1",
    "quantity": "temperature",
}
# Unit 4 is in the gateway's mapping but not on the line: it never answers.
SILENT = {"id": "meter4.voltage", "address": "4/input/0", "type": "uint16", "unit": "V"}


def _line_points() -> list[dict[str, Any]]:
    """The demo devices' points, each device moved to its unit on the line."""
    mapping = yaml.safe_load((ROOT / "mappings" / "demo" / "modbus.yaml").read_text())
    by_id = {d["id"]: d for d in mapping["devices"]}
    points = []
    for unit, device_id in UNITS.items():
        for point in by_id[device_id]["points"]:
            _, table, address = point["address"].split("/")
            points.append({**point, "address": f"{unit}/{table}/{address}"})
    return points


def _write_config(folder: Path, port: Path, extra: list[dict[str, Any]]) -> Path:
    device = {
        "id": DEVICE,
        "protocol": "modbus",
        "description": "RS-485 line: battery inverter 1, PV inverter 2, meter 3",
        "connection": {"serial": {"port": str(port), **LINE}},
        "poll_interval": 0.2,
        "timeout": 0.3,
        "points": _line_points() + extra,
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rtu.yaml").write_text(yaml.safe_dump({"devices": [device]}))
    config = demo_config_with(["rtu.yaml"])
    config["state_dir"] = str(folder / "state")
    config["reconnect_max_s"] = 0.5
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Line:
    pair: PtyPair
    sim: SimProcess
    #: the gateway's config: the line's points plus TEMPERATURE and SILENT
    config: Path


@contextmanager
def rtu_line(folder: Path) -> Iterator[Line]:
    pair = PtyPair(folder).start()
    sim_config = _write_config(folder / "sim", pair.gateway, [TEMPERATURE])
    gateway_config = _write_config(folder / "gateway", pair.gateway, [TEMPERATURE, SILENT])
    try:
        sim = start_sim(
            sim_config,
            {},
            serial_ports={DEVICE: str(pair.device)},
            extra=["--fail", str(TEMPERATURE["id"])],
        )
    except BaseException:
        pair.stop()
        raise
    try:
        yield Line(pair, sim, gateway_config)
    finally:
        sim.stop()
        pair.stop()


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Line]:
    with rtu_line(tmp_path_factory.mktemp("rtu")) as served:
        yield served


def line_device(line: Line) -> Device:
    (device,) = load_config(line.config).devices
    return device


@pytest.fixture
async def driver(line: Line) -> AsyncIterator[ModbusDriver]:
    driver = ModbusDriver(line_device(line))
    await driver.connect()
    try:
        yield driver
    finally:
        await driver.close()


def points(driver: ModbusDriver, *ids: str) -> list[Point]:
    by_id = {p.id: p for p in driver.device.points}
    return [by_id[i] for i in ids]


async def read(driver: ModbusDriver, *ids: str) -> dict[str, Reading]:
    return {r.point: r for r in await driver.read(points(driver, *ids))}


async def settle(driver: ModbusDriver, point_id: str, target: float, within: float = 6.0) -> Value:
    """Read a point until it is within 0.2 of `target`; return the last value either way."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = (await read(driver, point_id))[point_id].value
        if abs(float(value or 0) - target) < 0.2 or loop.time() > deadline:
            return value
        await asyncio.sleep(0.1)


async def write(driver: ModbusDriver, point_id: str, value: float | bool) -> None:
    (point,) = points(driver, point_id)
    result = await driver.write(point, Command(point_id, value))
    assert result.status is CommandStatus.CONFIRMED, result.detail


async def test_reads_every_unit_on_one_line(line: Line, driver: ModbusDriver) -> None:
    assert line.sim.serial == {DEVICE: str(line.pair.device)}  # `mgms sim` serves the line
    wanted = [p for p in driver.device.points if p.id not in (TEMPERATURE["id"], SILENT["id"])]
    readings = await driver.read(wanted)
    assert [r.point for r in readings] == [p.id for p in wanted]
    bad = [(r.point, r.detail) for r in readings if not r.quality.good]
    assert not bad
    values = {r.point: r.value for r in readings}
    plan = driver.plan(wanted)
    assert {request.unit for request in plan} == {1, 2, 3}
    assert len(plan) == 7  # one line, one client, the coalesced plan of three units
    # bess1.p and bess1.q share a request that bridges 40084, the register the device fails
    # on (exception 04): the request is split once, into two that succeed
    assert driver.requests_sent == 7 + 2
    # decoded end to end: types, word and byte orders, scale, each from its own unit
    assert values["bess1.capacity"] == 100.0  # unit 1, float32 little word order
    assert values["bess1.online"] is True  # unit 1, bit field
    assert values["pv1.limit"] == 100.0  # unit 2
    assert values["pcc.frequency"] == pytest.approx(50.0)  # unit 3, uint16 x 0.01
    pcc_p, volts = float(values["pcc.p"] or 0), float(values["pcc.voltage"] or 0)
    assert volts == pytest.approx(230.0 - 0.02 * pcc_p, abs=0.01)
    assert values["pcc.current"] == pytest.approx(abs(pcc_p) * 1000 / (3 * volts), abs=0.02)


def test_line_settings_reach_the_port(line: Line, driver: ModbusDriver) -> None:
    # what the driver's open configured on its end of the line (root may open it again
    # despite the exclusive lock; the read changes nothing)
    fd = os.open(line.pair.gateway, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        _, _, cflag, _, ispeed, ospeed, _ = termios.tcgetattr(fd)
    finally:
        os.close(fd)
    assert (ispeed, ospeed) == (termios.B19200, termios.B19200)
    assert cflag & termios.CSIZE == termios.CS8
    assert cflag & termios.CSTOPB  # two stop bits
    assert not cflag & termios.PARENB
    assert driver.timing.frame_gap == pytest.approx(3.5 * 11 / 19200)  # 11 bits a character


async def test_writes_on_two_units_change_the_model(driver: ModbusDriver) -> None:
    try:
        await write(driver, "bess1.p_set", 12.0)  # unit 1, float32
        assert (await read(driver, "bess1.p_set"))["bess1.p_set"].value == 12.0
        assert await settle(driver, "bess1.p", 12.0) == pytest.approx(12.0, abs=0.2)
        await write(driver, "pv1.limit", 40.0)  # unit 2, uint16 x 0.1
        assert (await read(driver, "pv1.limit"))["pv1.limit"].value == 40.0
        await write(driver, "bess1.enable", False)  # unit 1, coil
        assert await settle(driver, "bess1.online", 0.0) is False
    finally:
        await write(driver, "bess1.enable", True)
        await write(driver, "pv1.limit", 100.0)
        await write(driver, "bess1.p_set", 0.0)
    assert await settle(driver, "bess1.online", 1.0) is True
    refused = await driver.write(points(driver, "bess1.soc")[0], Command("bess1.soc", 5.0))
    assert refused.status is CommandStatus.REJECTED
    assert refused.detail == "modbus exception 2 (illegal data address)"


async def test_exception_marks_only_its_points(driver: ModbusDriver) -> None:
    ids = ("bess1.p", TEMPERATURE["id"], "bess1.q", "pv1.p", "pcc.p")
    for _ in range(2):  # and again on the plan the device taught the driver
        readings = await read(driver, *ids)
        temperature = readings.pop(TEMPERATURE["id"])
        assert not temperature.quality.good and temperature.value is None
        assert QualityFlag.FAILURE in temperature.quality.flags
        assert temperature.detail == "modbus exception 4 (server device failure)"
        assert all(r.quality.good for r in readings.values()), readings
    # 40083..40085 was one request; the split pinned the exception on 40084 alone
    assert len(driver.plan(points(driver, *ids))) == 3


async def test_silent_unit_does_not_take_the_line_down(driver: ModbusDriver) -> None:
    readings = await read(driver, "bess1.p", SILENT["id"], "pcc.p")
    silent = readings.pop(SILENT["id"])
    assert not silent.quality.good
    assert QualityFlag.COMM_FAILURE in silent.quality.flags
    assert silent.detail.startswith("unit 4 did not answer within 0.")
    assert all(r.quality.good for r in readings.values()), readings
    assert driver.connected
    # nothing on the line answers a read of unit 4 alone: that is a link failure
    with pytest.raises(RequestTimeout, match="no answer within"):
        await read(driver, SILENT["id"])
    # a late frame must not be taken for the next answer: unit 1 reads right after
    assert (await read(driver, "bess1.capacity"))["bess1.capacity"].value == 100.0


async def test_link_loss_and_recovery(tmp_path: Path) -> None:
    with rtu_line(tmp_path) as served:
        driver = ModbusDriver(line_device(served))
        try:
            await driver.connect()
            await write(driver, "bess1.p_set", 7.0)
            served.pair.stop(signal.SIGKILL)  # the line is gone as abruptly as a pulled cable
            with pytest.raises(LinkError):
                for _ in range(50):
                    await read(driver, "pcc.p")
                    await asyncio.sleep(0.05)
            assert not driver.connected
            with pytest.raises(LinkError, match=f"cannot open serial port {served.pair.gateway}"):
                await driver.connect()

            served.pair.start()  # the line is back; the simulator reopens its end
            recovered: dict[str, Reading] = {}
            for _ in range(40):
                # until the simulator has its end open again, units are silent
                try:
                    if not driver.connected:
                        await driver.connect()
                    recovered = await read(driver, "bess1.p_set", "pcc.p", "pv1.p")
                except LinkError:
                    recovered = {}
                if recovered and all(r.quality.good for r in recovered.values()):
                    break
                await asyncio.sleep(0.25)
            assert recovered, "the driver did not recover the line"
            assert all(r.quality.good for r in recovered.values()), recovered
            assert recovered["bess1.p_set"].value == 7.0  # the device kept its state
        finally:
            await driver.close()


async def test_gateway_session_rides_through_a_line_outage(tmp_path: Path) -> None:
    with rtu_line(tmp_path) as served:
        config = load_config(served.config)
        async with Gateway(config) as gw:
            assert gw.controller is not None
            assert await gw.wait_connected(10)
            session = gw.sessions[DEVICE]
            await until(lambda: gw.table.value("pcc", Quantity.ACTIVE_POWER) is not None)
            result = await gw.controller.write(Command("bess1.p_set", -5.0))
            assert result.status is CommandStatus.CONFIRMED
            await until(lambda: gw.table.value("bess1", Quantity.ACTIVE_POWER) == -5.0)

            served.pair.stop(signal.SIGKILL)
            await until(lambda: not session.up)
            reading = gw.table.latest("pcc.p")
            assert reading is not None and QualityFlag.COMM_FAILURE in reading.quality.flags

            served.pair.start()
            await until(lambda: session.up, within=15)
            # units answer again once the simulator has its end open (the gateway may be first)
            await until(lambda: gw.table.value("pcc", Quantity.ACTIVE_POWER) is not None)
            await until(lambda: gw.table.value("bess1", Quantity.ACTIVE_POWER_SETPOINT) is not None)
            assert gw.table.value("bess1", Quantity.ACTIVE_POWER_SETPOINT) == -5.0
            assert session.reconnects >= 1
            # the silent unit is one invalid point, not a dead line
            silent = gw.table.latest(SILENT["id"])
            assert silent is not None and not silent.quality.good
            assert session.up


async def test_port_refusing_the_format_is_a_link_error(line: Line) -> None:
    device = line_device(line)
    assert device.connection.serial is not None
    even = device.connection.serial.model_copy(update={"parity": "E"})
    connection = device.connection.model_copy(update={"serial": even})
    driver = ModbusDriver(device.model_copy(update={"connection": connection}))
    # a pty has no parity bit: the port refuses the format when it is opened
    with pytest.raises(LinkError, match=r"cannot open serial port .*\(19200 8E2\): .*Invalid arg"):
        await driver.connect()
    assert not driver.connected
    # the failed open left nothing behind: the port opens with a format it takes
    good = ModbusDriver(device)
    try:
        await good.connect()
        readings = await read(good, "pcc.p")
        assert readings["pcc.p"].quality.good
    finally:
        await good.close()
