"""The Modbus driver against the simulated microgrid (`mgms sim`) in its own process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import yaml

from drivers.modbus.driver import ModbusDriver
from gateway.errors import LinkError
from gateway.loader import load_config
from gateway.mapping import Device, Point
from gateway.model import Command, CommandStatus, Reading, Value
from tests.support.procs import (
    DEMO_CONFIG,
    ROOT,
    SimProcess,
    demo_config_with,
    free_port,
    sim_process,
    start_sim,
)

pytestmark = pytest.mark.integration

DEMO_DEVICES = ["bess1-inverter", "pv1-inverter", "load1-controller", "pcc-meter"]


def point(device: Device, point_id: str) -> Point:
    return next(p for p in device.points if p.id == point_id)


async def read_one(driver: ModbusDriver, point_id: str) -> Reading:
    (reading,) = await driver.read([point(driver.device, point_id)])
    return reading


async def until(
    driver: ModbusDriver, point_id: str, ok: Callable[[Value], bool], within: float = 6.0
) -> Value:
    """Poll a point until `ok(value)`; return the last value either way."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        reading = await read_one(driver, point_id)
        if (reading.quality.good and ok(reading.value)) or loop.time() > deadline:
            return reading.value
        await asyncio.sleep(0.1)


async def write(driver: ModbusDriver, point_id: str, value: float | bool) -> CommandStatus:
    result = await driver.write(point(driver.device, point_id), Command(point_id, value))
    assert result.status is CommandStatus.CONFIRMED, result.detail
    return result.status


@pytest.fixture(scope="module")
def modbus_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's Modbus devices and only the DERs they serve: the coupling point then
    balances what these devices read (the demo's other DERs are on other protocols)."""
    mapping = ROOT / "mappings" / "demo" / "modbus.yaml"
    served = {
        p.get("der") for d in yaml.safe_load(mapping.read_text())["devices"] for p in d["points"]
    }
    config = demo_config_with([str(mapping)])
    config["ders"] = [d for d in config["ders"] if d["id"] in served]
    path = tmp_path_factory.mktemp("modbus-site") / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def demo_sim(modbus_site: Path) -> Iterator[SimProcess]:
    with sim_process(DEMO_DEVICES, config=modbus_site) as sim:
        yield sim


@pytest.fixture
async def drivers(
    demo_sim: SimProcess, modbus_site: Path
) -> AsyncIterator[dict[str, ModbusDriver]]:
    config = load_config(modbus_site, port_overrides=demo_sim.ports)
    out = {d.id: ModbusDriver(d) for d in config.devices if d.id in DEMO_DEVICES}
    try:
        for driver in out.values():
            await driver.connect()
        yield out
    finally:
        for driver in out.values():
            await driver.close()


async def test_reads_every_demo_point_good(drivers: dict[str, ModbusDriver]) -> None:
    values: dict[str, Value] = {}
    for driver in drivers.values():
        readings = await driver.read(driver.device.points)
        assert [r.point for r in readings] == [p.id for p in driver.device.points]
        for r in readings:
            assert r.quality.good, (r.point, r.detail)
            assert r.value is not None
            values[r.point] = r.value
    assert len(values) == sum(len(d.device.points) for d in drivers.values())
    # values that check decoding end to end (types, orders, scale)
    assert values["bess1.capacity"] == 100.0  # float32, little word order, from the ratings
    assert 10.0 <= float(values["bess1.soc"]) <= 90.0  # uint16 x 0.1
    assert values["bess1.online"] is True  # bit field
    assert values["pcc.frequency"] == pytest.approx(50.0)  # uint16 x 0.01
    pcc_p, volts = float(values["pcc.p"]), float(values["pcc.voltage"])
    assert volts == pytest.approx(230.0 - 0.02 * pcc_p, abs=0.01)
    # int32, little byte order, x 0.01: the meter's current from its own P and V
    assert values["pcc.current"] == pytest.approx(abs(pcc_p) * 1000 / (3 * volts), abs=0.02)
    injected = sum(float(values[f"{d}.p"]) for d in ("bess1", "pv1", "load1"))
    assert pcc_p == pytest.approx(-injected, abs=1.0)
    # the coalesced plan: the whole meter in one request
    assert drivers["pcc-meter"].requests_sent == 1


async def test_readings_come_in_the_order_asked_whatever_the_plan(
    drivers: dict[str, ModbusDriver],
) -> None:
    """Decoded in address order; handed back in the order of the points asked for."""
    for driver in drivers.values():
        for points in (list(reversed(driver.device.points)), driver.device.points[1::2]):
            readings = await driver.read(points)
            assert [r.point for r in readings] == [p.id for p in points]


async def test_setpoint_moves_the_simulated_battery(drivers: dict[str, ModbusDriver]) -> None:
    bess = drivers["bess1-inverter"]
    for target in (20.0, -15.0, 0.0):
        await write(bess, "bess1.p_set", target)
        assert (await read_one(bess, "bess1.p_set")).value == target
        p = await until(bess, "bess1.p", lambda v, t=target: abs(float(v or 0) - t) < 0.2)
        assert p == pytest.approx(target, abs=0.2)


async def test_coil_switches_the_battery_off_and_on(drivers: dict[str, ModbusDriver]) -> None:
    bess = drivers["bess1-inverter"]
    try:
        await write(bess, "bess1.enable", False)
        assert (await read_one(bess, "bess1.enable")).value is False
        assert await until(bess, "bess1.online", lambda v: v is False) is False
    finally:
        await write(bess, "bess1.enable", True)
    assert await until(bess, "bess1.online", lambda v: v is True) is True


async def test_pv_limit_curtails(drivers: dict[str, ModbusDriver]) -> None:
    pv = drivers["pv1-inverter"]
    rating = 60.0
    try:
        for limit in (50.0, 10.0):
            await write(pv, "pv1.limit", limit)
            # read back from the model: the write reached the simulated inverter
            assert await until(pv, "pv1.limit", lambda v, x=limit: v == x) == limit
            ceiling = rating * limit / 100
            await asyncio.sleep(0.3)  # a few simulator ticks
            readings = await pv.read([point(pv.device, "pv1.p"), point(pv.device, "pv1.available")])
            p, available = (float(r.value or 0) for r in readings)
            # the simulated time of day decides `available` (0 at night): check the law
            assert p == pytest.approx(min(available, ceiling), abs=0.2)
            assert p <= ceiling + 0.1
    finally:
        await write(pv, "pv1.limit", 100.0)


async def test_raw_range_is_checked_before_sending(drivers: dict[str, ModbusDriver]) -> None:
    pv = drivers["pv1-inverter"]
    sent = pv.requests_sent
    result = await pv.write(point(pv.device, "pv1.limit"), Command("pv1.limit", 7000.0))
    assert result.status is CommandStatus.REJECTED
    assert "raw value 70000.0 out of range for uint16 (0..65535)" in result.detail
    assert result.detail.startswith("not sent")
    assert pv.requests_sent == sent
    assert (await read_one(pv, "pv1.limit")).value != 7000.0


async def test_device_refuses_writes_to_read_only_registers(
    drivers: dict[str, ModbusDriver],
) -> None:
    bess = drivers["bess1-inverter"]
    before = (await read_one(bess, "bess1.soc")).value
    result = await bess.write(point(bess.device, "bess1.soc"), Command("bess1.soc", 12.0))
    assert result.status is CommandStatus.REJECTED
    assert result.detail == "modbus exception 2 (illegal data address)"
    assert (await read_one(bess, "bess1.soc")).value == pytest.approx(before, abs=0.2)
    load = drivers["load1-controller"]
    result = await load.write(point(load.device, "load1.p"), Command("load1.p", 1.0))
    assert result.status is CommandStatus.REJECTED
    assert result.detail == "not sent: input is read-only"


def _write_config(folder: Path, extra_points: list[dict[str, object]]) -> Path:
    """The demo config with only the battery inverter, plus `extra_points` on it."""
    config = demo_config_with(["modbus.yaml"])
    mapping = yaml.safe_load((ROOT / "mappings" / "demo" / "modbus.yaml").read_text())
    (bess,) = [d for d in mapping["devices"] if d["id"] == "bess1-inverter"]
    bess["points"] += extra_points
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "modbus.yaml").write_text(yaml.safe_dump({"devices": [bess]}))
    config["state_dir"] = str(folder / "state")
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# The simulator is told to fail the battery temperature: it answers exception 04 for it.
TEMPERATURE = {
    "id": "bess1.temperature",
    "address": "1/holding/40084",
    "type": "int16",
    "unit": "DEG_C",
    "der": "bess1",
    "quantity": "temperature",
}
# A register the simulated device does not have (its block ends at 40112): exception 02.
MISSING = {"id": "bess1.missing", "address": "1/holding/40113", "type": "uint16", "unit": "V"}


@pytest.fixture(scope="module")
def faulty_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SimProcess, Path]]:
    root = tmp_path_factory.mktemp("faulty")
    sim_config = _write_config(root / "sim", [TEMPERATURE])
    # the gateway's mapping names one more register than the device serves
    gateway_config = _write_config(root / "gateway", [TEMPERATURE, MISSING])
    fail = ["--fail", TEMPERATURE["id"]]
    with sim_process(["bess1-inverter"], config=sim_config, extra=fail) as sim:
        yield sim, gateway_config


@pytest.fixture
async def faulty_bess(faulty_sim: tuple[SimProcess, Path]) -> AsyncIterator[ModbusDriver]:
    sim, gateway_config = faulty_sim
    (device,) = load_config(gateway_config, port_overrides=sim.ports).devices
    driver = ModbusDriver(device)
    await driver.connect()
    try:
        yield driver
    finally:
        await driver.close()


async def test_exception_marks_only_the_affected_points(faulty_bess: ModbusDriver) -> None:
    points = [p for p in faulty_bess.device.points if p.id != "bess1.missing"]
    readings = {r.point: r for r in await faulty_bess.read(points)}
    bad = readings.pop("bess1.temperature")
    assert not bad.quality.good
    assert bad.value is None
    assert bad.detail == "modbus exception 4 (server device failure)"
    # its neighbours in the same coalesced request (40083..40085) stay good
    assert all(r.quality.good for r in readings.values()), readings
    assert readings["bess1.p"].value is not None and readings["bess1.q"].value is not None
    # 04 may pass: the coalesced request is tried again on the next poll
    sent = faulty_bess.requests_sent
    await faulty_bess.read(points)
    assert faulty_bess.requests_sent - sent == len(faulty_bess.plan(points)) + 4


async def test_illegal_address_split_is_remembered(faulty_bess: ModbusDriver) -> None:
    # the set point block 40100.. (away from the temperature register that fails with 04)
    points = [p for p in faulty_bess.device.points if p.address.startswith("1/holding/401")]
    first_plan = faulty_bess.plan(points)
    assert len(first_plan) == 1
    sent = faulty_bess.requests_sent
    readings = {r.point: r for r in await faulty_bess.read(points)}
    first_cost = faulty_bess.requests_sent - sent
    assert readings.pop("bess1.missing").detail == "modbus exception 2 (illegal data address)"
    assert all(r.quality.good for r in readings.values()), readings
    assert readings["bess1.capacity"].value == 100.0  # shared the failed request with it
    # the device said the request is wrong: the next poll reads the learned split directly
    learned = faulty_bess.plan(points)
    assert [(r.address, r.count) for r in learned] == [
        (40100, 4),
        (40110, 1),
        (40111, 2),
        (40113, 1),
    ]
    sent = faulty_bess.requests_sent
    again = {r.point: r for r in await faulty_bess.read(points)}
    assert faulty_bess.requests_sent - sent == len(learned) < first_cost
    assert again["bess1.capacity"].value == 100.0
    assert not again["bess1.missing"].quality.good


async def test_link_drop_raises_and_reconnect_after_restart() -> None:
    device_id = "pv1-inverter"
    ports = {device_id: free_port()}
    sim = start_sim(DEMO_CONFIG, ports, devices=[device_id])
    (device,) = [
        d for d in load_config(DEMO_CONFIG, port_overrides=ports).devices if d.id == device_id
    ]
    driver = ModbusDriver(device)
    try:
        await driver.connect()
        assert all(r.quality.good for r in await driver.read(device.points))
        sim.stop()
        with pytest.raises(LinkError, match="pv1-inverter"):
            for _ in range(50):  # the close reaches the client within a moment
                await driver.read(device.points)
                await asyncio.sleep(0.05)
        assert not driver.connected
        result = await driver.write(point(device, "pv1.limit"), Command("pv1.limit", 50.0))
        assert result.status is CommandStatus.LINK_DOWN
        with pytest.raises(LinkError, match=f"cannot connect to 127.0.0.1:{ports[device_id]}"):
            await driver.connect()
        sim = start_sim(DEMO_CONFIG, ports, devices=[device_id])
        await driver.connect()
        assert driver.connected
        assert all(r.quality.good for r in await driver.read(device.points))
    finally:
        await driver.close()
        sim.stop()
