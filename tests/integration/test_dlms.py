"""The DLMS driver against the simulated meters, each in its own process on loopback.

The simulator runs 900 times faster than the wall clock: 15 simulated minutes (one load
profile entry, one demand period) pass each second.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drivers.dlms.driver import DlmsDriver
from drivers.dlms.protocol import CosemClass, DlmsAddress, DlmsOptions, Obis
from drivers.dlms.session import Got, Session
from gateway.errors import DeviceRejected, LinkError
from gateway.loader import load_config, load_mappings
from gateway.mapping import Device, Point
from gateway.model import Command, CommandStatus, Reading
from tests.support.procs import SimProcess, free_port, sim_process, start_sim
from tests.support.waiting import until

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent / "dlms"
CONFIG = HERE / "config.yaml"
MAPPING = HERE / "meters.yaml"
SECRETS = HERE / "secrets"
METERS = ["pcc-meter", "load-meter", "hls-meter"]
SPEED = 900.0


@pytest.fixture(scope="module")
def sim() -> Iterator[SimProcess]:
    with sim_process(METERS, config=CONFIG, extra=["--speed", str(SPEED)]) as proc:
        yield proc


def load_device(
    ports: dict[str, int], device_id: str, tmp: Path | None = None, **swap: str
) -> Device:
    """A device of the test mapping on the simulator's port; `swap` replaces text in the
    mapping (e.g. a secret file name) in a copy written to `tmp`."""
    if not swap:
        config = load_config(CONFIG, port_overrides=ports)
        return next(d for d in config.devices if d.id == device_id)
    assert tmp is not None
    text = MAPPING.read_text()
    for old, new in swap.items():
        assert old in text, old
        text = text.replace(old, new)
    text = text.replace("secrets/", f"{SECRETS}/")
    path = tmp / "meters.yaml"
    path.write_text(text)
    mapping = load_mappings([path], port_overrides=ports)[path]
    return next(d for d in mapping.devices if d.id == device_id)


@asynccontextmanager
async def connected(device: Device) -> AsyncIterator[DlmsDriver]:
    driver = DlmsDriver(device)
    await driver.connect()
    try:
        yield driver
    finally:
        await driver.close()


async def read_all(driver: DlmsDriver) -> dict[str, Reading]:
    points = [p for p in driver.device.points if p.direction.readable]
    return {r.point: r for r in await driver.read(points)}


def point(device: Device, point_id: str) -> Point:
    return next(p for p in device.points if p.id == point_id)


# --- object classes -----------------------------------------------------------------------


async def test_every_interface_class_reads_good_values(sim: SimProcess) -> None:
    device = load_device(sim.ports, "pcc-meter")
    async with connected(device) as driver:
        r = await read_all(driver)
        # one request (scalers known by now), so one snapshot of the meter
        p, voltage = (
            reading.value
            for reading in await driver.read([point(device, "pcc.p"), point(device, "pcc.voltage")])
        )
    bad = {k: (v.quality, v.detail) for k, v in r.items() if not v.quality.good}
    assert not bad
    assert isinstance(p, float | int) and isinstance(voltage, float)
    # the meter's voltage model is 230 V - 0.02 V/kW * P; the register holds 0.1 V steps
    # (scaler -1) and P in W (scaler 0)
    assert voltage == pytest.approx(230.0 - 0.02 * p, abs=0.06)
    assert r["pcc.frequency"].value == pytest.approx(50.0)  # Data, float64
    assert r["pcc.e_import"].value >= 0 and r["pcc.e_export"].value >= 0  # type: ignore[operator]
    assert r["pcc.voltage_status"].value == 0  # Extended register status
    # Extended register capture time and the clock: POSIX seconds with a source time
    clock = r["pcc.clock"]
    assert clock.source_time is not None and clock.source_time.tzinfo is not None
    assert clock.value == pytest.approx(clock.source_time.timestamp())
    assert r["pcc.voltage_time"].value == pytest.approx(clock.value, abs=1.0)
    assert r["pcc.demand_period"].value == 900  # Demand register period
    assert isinstance(r["pcc.profile_entries"].value, int)  # Profile generic entries_in_use


async def test_register_scaler_and_unit_are_applied(sim: SimProcess) -> None:
    """The driver's kWh value is the raw register times 10**scaler, Wh -> kWh."""
    device = load_device(sim.ports, "pcc-meter")
    options = device.typed_options
    assert isinstance(options, DlmsOptions)
    conn = device.connection
    assert conn.host and conn.port
    session = Session(device.id, conn.host, conn.port, options, 2.0)
    obis = Obis.parse("1.0.32.7.0.255")
    try:  # blocking calls on the test's loop: the meter runs in another process
        session.open()
        raw_su, raw_value = session.get(
            [
                DlmsAddress(CosemClass.EXTENDED_REGISTER, obis, attribute=3),
                DlmsAddress(CosemClass.EXTENDED_REGISTER, obis, attribute=2),
            ]
        )
    finally:
        session.close()
    assert isinstance(raw_su, Got) and isinstance(raw_value, Got)
    assert raw_su.value == [-1, 35]  # 0.1 V steps, unit V
    async with connected(device) as driver:
        reading = (await driver.read([point(device, "pcc.voltage")]))[0]
    assert reading.value == pytest.approx(raw_value.value / 10, abs=1.0)


async def test_demand_register_averages_the_last_period(sim: SimProcess) -> None:
    device = load_device(sim.ports, "pcc-meter")
    async with connected(device) as driver:
        samples = []
        for _ in range(25):  # 2.5 s of wall time: more than two demand periods
            samples.append((await driver.read([point(device, "pcc.p")]))[0].value)
            await asyncio.sleep(0.1)
        last = (await driver.read([point(device, "pcc.demand_last")]))[0]
    assert last.quality.good
    # the load moves up to ~1 kW between samples at this speed
    assert min(samples) - 2.0 <= last.value <= max(samples) + 2.0  # type: ignore[operator]


async def test_load_profile_by_time_range(sim: SimProcess, tmp_path: Path) -> None:
    device = load_device(sim.ports, "pcc-meter")
    entries = point(device, "pcc.profile_entries")
    async with connected(device) as driver:

        async def enough() -> bool:
            return (await driver.read([entries]))[0].value >= 4  # type: ignore[operator]

        await until(enough, within=15, step=0.1)
        r = await read_all(driver)
        now = datetime.fromtimestamp(r["pcc.clock"].value, UTC)  # type: ignore[arg-type]
        profile = await driver.read_load_profile(now - timedelta(hours=6), now)
    assert profile.capture_period_s == 900
    keys = [c.key for c in profile.columns]
    assert keys[:3] == ["pcc.clock", "pcc.e_import", "pcc.e_export"]
    assert profile.columns[1].unit == "KiloW-HR" and profile.columns[1].is_energy
    times = [e.time for e in profile.entries]
    assert len(times) >= 4
    assert all(t.timestamp() % 900 == 0 for t in times)
    assert all(b - a == timedelta(minutes=15) for a, b in itertools.pairwise(times))
    assert now - timedelta(hours=6) <= times[0] and times[-1] <= now
    imports = [v for _, v in profile.values("pcc.e_import")]
    assert imports == sorted(imports)  # a cumulative register
    assert imports[-1] <= r["pcc.e_import"].value  # type: ignore[operator]
    intervals = profile.intervals()
    assert len(intervals) == len(times) - 1
    assert [i.end for i in intervals] == times[1:]
    total = sum(i.energy["pcc.e_import"] for i in intervals)
    assert total == pytest.approx(imports[-1] - imports[0], abs=1e-6)

    # a range around one entry returns just that entry
    middle = times[len(times) // 2]
    async with connected(device) as driver:
        one = await driver.read_load_profile(middle - timedelta(minutes=1), middle)
    assert [e.time for e in one.entries] == [middle]
    assert one.entries[0].values == profile.entries[len(times) // 2].values

    # the same range read in 15-minute windows gives the same entries, each once
    narrow = load_device(
        sim.ports,
        "pcc-meter",
        tmp_path,
        **{"{authentication: none}": "{authentication: none, profile_window_s: 900}"},
    )
    async with connected(narrow) as driver:
        windowed = await driver.read_load_profile(times[0], times[-1])
    assert [e.time for e in windowed.entries] == times
    assert [e.values for e in windowed.entries] == [e.values for e in profile.entries]


# --- authentication -----------------------------------------------------------------------


@pytest.mark.parametrize("device_id", METERS, ids=["none", "low", "high"])
async def test_each_authentication_level_associates(sim: SimProcess, device_id: str) -> None:
    async with connected(load_device(sim.ports, device_id)) as driver:
        r = await read_all(driver)
    assert r and all(v.quality.good for v in r.values()), r


@pytest.mark.parametrize(
    ("device_id", "swap", "expected"),
    [
        ("load-meter", {"secrets/load.password": "secrets/wrong.password"}, "wrong password"),
        ("hls-meter", {"secrets/hls.keys": "secrets/wrong-auth.keys"}, "authentication failed"),
        ("hls-meter", {"secrets/hls.keys": "secrets/wrong-block.keys"}, "key"),
        (
            "pcc-meter",
            {
                "options: {authentication: none}": (
                    "options: {authentication: low, password_file: secrets/load.password}"
                )
            },
            "does not accept this authentication level",
        ),
        (
            "load-meter",
            {"authentication: low, password_file: secrets/load.password": ("authentication: none")},
            "does not accept this authentication level",
        ),
    ],
    ids=["wrong-password", "wrong-auth-key", "wrong-block-key", "low-on-none", "none-on-low"],
)
async def test_wrong_credentials_are_rejected_clearly(
    sim: SimProcess, tmp_path: Path, device_id: str, swap: dict[str, str], expected: str
) -> None:
    device = load_device(sim.ports, device_id, tmp_path, **swap)
    driver = DlmsDriver(device)
    with pytest.raises(DeviceRejected) as caught:
        await driver.connect()
    assert device_id in str(caught.value) and expected in str(caught.value)
    assert not driver.connected
    # no secret in the error or the options' repr
    for secret in ("test-lls-password", "wrong-password", "D0D1D2D3", "00112233"):
        assert secret not in str(caught.value) and secret not in repr(device.typed_options)
    # the meter still serves the right credentials afterwards
    async with connected(load_device(sim.ports, device_id)) as driver:
        assert all(r.quality.good for r in (await read_all(driver)).values())


async def test_hls_invocation_counter_never_repeats(sim: SimProcess) -> None:
    """Each ciphered APDU uses a new counter, also across associations of one driver."""
    driver = DlmsDriver(load_device(sim.ports, "hls-meter"))
    assert driver.invocation_counter == 1
    await driver.connect()
    try:
        first = driver.invocation_counter
        assert first > 1
        await read_all(driver)
        after_read = driver.invocation_counter
        assert after_read > first
        await driver.close()
        assert driver.invocation_counter == after_read  # the release is not ciphered
        await driver.connect()  # AARQ and HLS pass 3 continue the count
        assert driver.invocation_counter > after_read
        assert all(r.quality.good for r in (await read_all(driver)).values())
    finally:
        await driver.close()


# --- control ------------------------------------------------------------------------------


async def test_disconnector_switches_the_load_in_the_model(sim: SimProcess) -> None:
    device = load_device(sim.ports, "load-meter")
    async with connected(device) as driver:
        before = await read_all(driver)
        assert before["load.supply"].value is True and before["load.p"].value < 0  # type: ignore[operator]
        result = await driver.write(point(device, "load.disconnect"), Command("load.disconnect", 1))
        assert result.status is CommandStatus.CONFIRMED, result.detail

        async def off() -> bool:
            r = await read_all(driver)
            return (
                r["load.supply"].value is False
                and r["load.supply_state"].value == 0
                and r["load.p"].value == 0
            )

        await until(off, within=10, step=0.1)
        result = await driver.write(
            point(device, "load.reconnect"), Command("load.reconnect", True)
        )
        assert result.status is CommandStatus.CONFIRMED, result.detail

        async def on() -> bool:
            r = await read_all(driver)
            return r["load.supply"].value is True and r["load.p"].value < 0  # type: ignore[operator]

        await until(on, within=10, step=0.1)


async def test_limiter_threshold_trips_the_disconnector(sim: SimProcess) -> None:
    device = load_device(sim.ports, "load-meter")
    async with connected(device) as driver:
        r = await read_all(driver)
        assert r["load.supply"].value is True
        ok = await driver.write(point(device, "load.limit_delay"), Command("load.limit_delay", 120))
        assert ok.status is CommandStatus.CONFIRMED, ok.detail
        ok = await driver.write(point(device, "load.limit"), Command("load.limit", 2.5))
        assert ok.status is CommandStatus.CONFIRMED, ok.detail
        r = await read_all(driver)
        assert r["load.limit"].value == pytest.approx(2.5)
        assert r["load.limit_active"].value == pytest.approx(2.5)  # normal threshold applies
        assert r["load.limit_delay"].value == 120

        async def tripped() -> bool:
            r = await read_all(driver)
            return (
                r["load.supply"].value is False
                and r["load.supply_state"].value == 2  # ready_for_reconnection
                and r["load.p"].value == 0  # the load is off in the model
            )

        await until(tripped, within=10, step=0.1)
        ok = await driver.write(point(device, "load.limit"), Command("load.limit", 200.0))
        assert ok.status is CommandStatus.CONFIRMED, ok.detail
        ok = await driver.write(point(device, "load.reconnect"), Command("load.reconnect", 1))
        assert ok.status is CommandStatus.CONFIRMED, ok.detail

        async def restored() -> bool:
            r = await read_all(driver)
            return r["load.supply"].value is True and r["load.p"].value < 0  # type: ignore[operator]

        await until(restored, within=10, step=0.1)


async def test_a_writable_register_takes_a_set_point(sim: SimProcess) -> None:
    """A register the mapping declares writable keeps what is written; one it does not
    refuses the write."""
    device = load_device(sim.ports, "load-meter")
    async with connected(device) as driver:
        for value in (7.5, -3.25):
            ok = await driver.write(point(device, "load.setpoint"), Command("load.setpoint", value))
            assert ok.status is CommandStatus.CONFIRMED, ok.detail
            assert (await read_all(driver))["load.setpoint"].value == pytest.approx(value)
        refused = await driver.write(point(device, "load.p"), Command("load.p", 1.0))
        assert refused.status is CommandStatus.REJECTED and "access denied" in refused.detail


async def test_refused_commands_say_why(sim: SimProcess) -> None:
    device = load_device(sim.ports, "load-meter")
    async with connected(device) as driver:
        # threshold_active is read-only on the meter
        active = point(device, "load.limit_active")
        result = await driver.write(active, Command(active.id, 5.0))
        assert result.status is CommandStatus.REJECTED
        assert "access denied" in result.detail
        # a method point takes 1/true
        result = await driver.write(point(device, "load.disconnect"), Command("load.disconnect", 0))
        assert result.status is CommandStatus.REJECTED and "write 1" in result.detail
        # out of the meter's integer range (threshold is a double-long in W)
        result = await driver.write(point(device, "load.limit"), Command("load.limit", 1e9))
        assert result.status is CommandStatus.REJECTED and "does not fit" in result.detail
        assert (await read_all(driver))["load.supply"].value is True


# --- errors and links ---------------------------------------------------------------------


async def test_an_unknown_object_is_one_invalid_point(sim: SimProcess, tmp_path: Path) -> None:
    extra = (
        "      - {id: pcc.clock, address: 8/0.0.1.0.0.255/2, unit: SEC, der: pcc}\n"
        "      - {id: pcc.nothing, address: 3/1.0.99.99.0.255/2, unit: KiloW, der: pcc}\n"
    )
    device = load_device(
        sim.ports,
        "pcc-meter",
        tmp_path,
        **{"      - {id: pcc.clock, address: 8/0.0.1.0.0.255/2, unit: SEC, der: pcc}\n": extra},
    )
    async with connected(device) as driver:
        r = await read_all(driver)
        assert not r["pcc.nothing"].quality.good
        assert "undefined object" in r["pcc.nothing"].detail
        assert all(v.quality.good for k, v in r.items() if k != "pcc.nothing")
        # the association survives: the next read is fine too
        assert (await driver.read([point(device, "pcc.p")]))[0].quality.good


async def test_connect_to_nothing_is_a_link_error() -> None:
    device = load_device({"pcc-meter": free_port()}, "pcc-meter")
    driver = DlmsDriver(device)
    with pytest.raises(LinkError, match="cannot connect"):
        await driver.connect()
    assert not driver.connected
    await driver.close()


async def test_reconnects_after_the_simulator_restarts() -> None:
    ports = {"pcc-meter": free_port()}
    device = load_device(ports, "pcc-meter")
    p = point(device, "pcc.p")
    driver = DlmsDriver(device)
    sim = start_sim(CONFIG, ports, devices=["pcc-meter"])
    try:
        await driver.connect()
        assert (await driver.read([p]))[0].quality.good
        sim.stop()
        with pytest.raises(LinkError):
            await driver.read([p])
        assert not driver.connected
        with pytest.raises(LinkError):
            await driver.connect()
        sim = start_sim(CONFIG, ports, devices=["pcc-meter"])
        await driver.connect()
        reading = (await driver.read([p]))[0]
        assert reading.quality.good and math.isfinite(reading.value)  # type: ignore[arg-type]
    finally:
        await driver.close()
        sim.stop()
