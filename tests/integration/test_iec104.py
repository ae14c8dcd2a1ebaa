"""The IEC 104 driver against the outstation simulator in its own process, on loopback.

Two simulators serve the module: the demo CHP unit (config/demo.yaml) and a generator
whose outstation uses every supported type id, with faults injected into some qualities
(tests/integration/data/iec104).
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drivers.iec104.driver import Iec104Driver
from drivers.iec104.protocol import Iec104Options
from drivers.iec104.simulator import QUALITY_ENV
from gateway.app import Gateway
from gateway.errors import LinkError
from gateway.loader import load_config, load_mappings
from gateway.mapping import Device, Point
from gateway.model import Command, CommandMode, CommandStatus, QualityFlag, Reading, Validity
from tests.support.procs import DEMO_CONFIG, ROOT, SimProcess, free_port, sim_process, start_sim
from tests.support.waiting import until

pytestmark = pytest.mark.integration

TYPES_CONFIG = Path(__file__).parent / "data" / "iec104" / "config.yaml"
FAULTS = {"gen.q": "NT", "gen.q_t": "SB BL", "gen.energy_t": "CA"}
F = QualityFlag


def device(config: Path, device_id: str, port: int) -> Device:
    loaded = load_config(config, port_overrides={device_id: port})
    return next(d for d in loaded.devices if d.id == device_id)


def points(dev: Device) -> dict[str, Point]:
    return {p.id: p for p in dev.points}


@pytest.fixture(scope="module")
def demo_sim() -> Iterator[SimProcess]:
    with sim_process(["chp1-rtu"]) as sim:
        yield sim


@pytest.fixture(scope="module")
def types_sim() -> Iterator[SimProcess]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(QUALITY_ENV, json.dumps(FAULTS))
        # a generator has no state of charge: the simulator is told to fail it (IV)
        fail = ["--fail", "gen.soc"]
        with sim_process(["gen-rtu"], config=TYPES_CONFIG, extra=fail) as sim:
            yield sim


@pytest.fixture
async def chp(demo_sim: SimProcess) -> AsyncIterator[Iec104Driver]:
    driver = Iec104Driver(device(DEMO_CONFIG, "chp1-rtu", demo_sim.ports["chp1-rtu"]))
    await driver.connect()
    try:
        yield driver
    finally:
        await driver.close()


@pytest.fixture
async def gen(types_sim: SimProcess) -> AsyncIterator[Iec104Driver]:
    driver = Iec104Driver(device(TYPES_CONFIG, "gen-rtu", types_sim.ports["gen-rtu"]))
    await driver.connect()
    try:
        yield driver
    finally:
        await driver.close()


async def read(driver: Iec104Driver, *ids: str) -> dict[str, Reading]:
    pts = points(driver.device)
    return {r.point: r for r in await driver.read([pts[i] for i in ids])}


async def write(driver: Iec104Driver, point_id: str, value: float | bool) -> CommandStatus:
    result = await driver.write(points(driver.device)[point_id], Command(point_id, value))
    return result.status


async def value_of(driver: Iec104Driver, point_id: str) -> object:
    return (await read(driver, point_id))[point_id].value


async def reaches(driver: Iec104Driver, point_id: str, target: float, within: float) -> None:
    async def near() -> bool:
        v = await value_of(driver, point_id)
        return isinstance(v, float) and abs(v - target) < 0.5

    deadline = time.monotonic() + within
    while not await near():
        assert time.monotonic() < deadline, f"{point_id} did not reach {target}"
        await asyncio.sleep(0.05)


# -- monitoring ---------------------------------------------------------------------


async def test_general_interrogation_at_connect_fills_every_point(gen: Iec104Driver) -> None:
    readable = [p for p in gen.device.points if p.direction.readable]
    readings = {r.point: r for r in await gen.read(readable)}
    assert set(readings) == {p.id for p in readable}
    assert all(r.value is not None for pid, r in readings.items() if pid != "gen.soc")
    assert readings["gen.online"].value is True and readings["gen.breaker"].value is True
    assert readings["pcc.voltage"].value == pytest.approx(230.0, abs=2)
    assert readings["pcc.voltage"].quality.good
    good = {pid for pid, r in readings.items() if r.quality.good}
    assert good == set(readings) - {"gen.q", "gen.q_t", "gen.energy_t", "pcc.voltage_mv", "gen.soc"}


async def test_time_tags_are_kept(gen: Iec104Driver) -> None:
    tagged = ["gen.p", "gen.p_norm_t", "gen.q_t", "gen.online_t", "gen.breaker_t", "gen.energy_t"]
    untagged = ["gen.p_norm", "gen.q", "pcc.voltage", "gen.online", "gen.breaker", "gen.energy"]
    readings = await read(gen, *tagged, *untagged)
    now = datetime.now(UTC)
    for pid in tagged:
        at = readings[pid].source_time
        assert at is not None and at.tzinfo is not None, pid
        assert now - timedelta(minutes=5) < at <= now + timedelta(seconds=1), (pid, at)
    assert all(readings[pid].source_time is None for pid in untagged)


async def test_quality_bits(gen: Iec104Driver) -> None:
    r = await read(gen, "gen.q", "gen.q_t", "gen.energy_t", "pcc.voltage_mv", "gen.soc", "gen.p")
    assert r["gen.q"].quality.validity is Validity.QUESTIONABLE
    assert r["gen.q"].quality.flags == {F.OLD} and "NT" in r["gen.q"].detail
    assert r["gen.q_t"].quality.flags == {F.SUBSTITUTED, F.BLOCKED}
    assert r["gen.energy_t"].quality.flags == {F.INCONSISTENT}
    # 230 V does not fit a scaled value in mV: clamped to 32767 with OV
    assert r["pcc.voltage_mv"].value == pytest.approx(32.767)
    assert r["pcc.voltage_mv"].quality.flags == {F.OVERFLOW}
    # a generator has no state of charge: the outstation marks it invalid
    assert r["gen.soc"].quality.validity is Validity.INVALID
    assert r["gen.p"].quality.good


async def test_spontaneous_updates_with_time_tags(chp: Iec104Driver) -> None:
    pushed: list[Reading] = []
    assert await chp.subscribe(pushed.append)
    now = await value_of(chp, "chp1.p")
    assert isinstance(now, float)
    target = 20.0 if now > 25 else 30.0
    assert await write(chp, "chp1.p_set", target) is CommandStatus.CONFIRMED
    await until(lambda: any(r.point == "chp1.p" and r.value == target for r in pushed), 8)
    ramp = [r for r in pushed if r.point == "chp1.p"]
    assert len(ramp) >= 3  # the ramp was reported as it happened, not only its end
    times = [r.source_time for r in ramp]
    assert all(t is not None for t in times)
    assert times == sorted(times)  # type: ignore[type-var]
    values = [r.value for r in ramp]
    assert values == sorted(values, reverse=target < now)  # type: ignore[type-var]
    # the set point's return information came back on its own, without a poll
    assert any(r.point == "chp1.p_set" and r.value == target for r in pushed)
    # feeder measurements are reported periodically (every poll_interval of 1 s)
    await until(lambda: sum(r.point == "feeder.voltage" for r in pushed) >= 2, 4)


async def test_spontaneous_data_costs_no_memory_per_frame(chp: Iec104Driver) -> None:
    """c104 2.2.1 leaks a memoryview and a bytes object for every frame handed to a raw
    callback (upstream issue #77); the link sets its raw hook only while it waits for the
    answers to a request, so telemetry between requests leaves nothing behind."""
    pushed: list[Reading] = []
    assert await chp.subscribe(pushed.append)
    await until(lambda: len(pushed) > 0, 4)
    gc.collect()
    before = sum(type(o) is memoryview for o in gc.get_objects())
    received = len(pushed)
    await until(lambda: len(pushed) >= received + 10, 10)  # frames flowed meanwhile
    gc.collect()
    after = sum(type(o) is memoryview for o in gc.get_objects())
    assert after - before < 3, (before, after, len(pushed) - received)


async def test_counter_interrogation_reads_integrated_totals(gen: Iec104Driver) -> None:
    assert await write(gen, "gen.run", True) is CommandStatus.CONFIRMED
    assert await write(gen, "gen.p_set", 40.0) is CommandStatus.CONFIRMED
    await reaches(gen, "gen.p", 40.0, 5)
    first = await read(gen, "gen.energy", "gen.energy_t")
    assert isinstance(first["gen.energy"].value, float)
    assert first["gen.energy_t"].source_time is not None
    # totals are not sent spontaneously: the next counter interrogation (1 s cycle)
    # brings the new value
    await asyncio.sleep(2.2)
    second = await read(gen, "gen.energy", "gen.energy_t")
    grown = second["gen.energy"].value - first["gen.energy"].value  # type: ignore[operator]
    assert 0.01 < grown < 0.05  # 40 kW for about 2 s is about 0.022 kWh
    assert second["gen.energy"].gateway_time > first["gen.energy"].gateway_time
    assert second["gen.energy_t"].value == pytest.approx(second["gen.energy"].value, abs=0.02)


async def test_values_not_refreshed_read_as_old(types_sim: SimProcess) -> None:
    dev = device(TYPES_CONFIG, "gen-rtu", types_sim.ports["gen-rtu"])
    dev._options = Iec104Options(
        interrogation_cycle=0, counter_interrogation_cycle=0, stale_after=1.0, t1=5, t2=2
    )
    driver = Iec104Driver(dev)
    await driver.connect()
    try:
        assert (await read(driver, "gen.energy"))["gen.energy"].quality.good
        await asyncio.sleep(1.5)
        r = (await read(driver, "gen.energy"))["gen.energy"]
        assert r.quality.validity is Validity.QUESTIONABLE and F.OLD in r.quality.flags
        assert "not refreshed" in r.detail and r.value is not None
    finally:
        await driver.close()


async def test_time_tagged_twin_accepted_other_types_flagged(
    types_sim: SimProcess, tmp_path: Path
) -> None:
    # the outstation sends M_ME_TF_1 at IOA 101 and M_SP_NA_1 at IOA 111
    mapping = tmp_path / "twin.yaml"
    mapping.write_text(
        f"""
devices:
  - id: gen-rtu
    protocol: iec104
    connection: {{host: 127.0.0.1, port: {types_sim.ports["gen-rtu"]}}}
    timeout: 1.0
    points:
      - {{id: p, address: 7/101/M_ME_NC_1, unit: KiloW}}
      - {{id: s, address: 7/111/M_DP_NA_1, unit: UNITLESS}}
""",
        encoding="utf-8",
    )
    dev = next(iter(load_mappings([mapping]).values())).devices[0]
    driver = Iec104Driver(dev)
    await driver.connect()
    try:
        r = await read(driver, "p", "s")
        assert r["p"].quality.good and r["p"].source_time is not None
        assert r["s"].quality.validity is Validity.INVALID
        assert "outstation sends M_SP_NA_1 for IOA 111, mapped M_DP_NA_1" in r["s"].detail
    finally:
        await driver.close()


# -- commands -----------------------------------------------------------------------


async def test_set_point_changes_chp_power(chp: Iec104Driver) -> None:
    result = await chp.write(points(chp.device)["chp1.p_set"], Command("chp1.p_set", 25.0))
    assert result.status is CommandStatus.CONFIRMED
    assert "2001/C_SE_NC_1 direct" in result.detail
    await reaches(chp, "chp1.p", 25.0, 6)
    assert await value_of(chp, "chp1.p_set") == 25.0


async def test_select_before_execute_stops_and_starts_the_unit(chp: Iec104Driver) -> None:
    run = points(chp.device)["chp1.run"]
    assert run.sbo
    stop = await chp.write(run, Command("chp1.run", False))
    assert stop.status is CommandStatus.CONFIRMED and "select-before-execute" in stop.detail
    await until_value(chp, "chp1.running", False)
    await reaches(chp, "chp1.p", 0.0, 6)
    start = await chp.write(run, Command("chp1.run", True))
    assert start.status is CommandStatus.CONFIRMED
    await until_value(chp, "chp1.running", True)


async def test_outstation_refuses_direct_execute_of_select_point(chp: Iec104Driver) -> None:
    direct = points(chp.device)["chp1.run"].model_copy(update={"sbo": False})
    result = await chp.write(direct, Command("chp1.run", True))
    assert result.status is CommandStatus.REJECTED
    assert "direct: negative confirmation of the command" in result.detail


async def test_command_mode_can_ask_for_select_before_execute(gen: Iec104Driver) -> None:
    # gen.run is a direct point; a command may still ask for select-before-execute, which
    # this outstation refuses for a point configured as direct: the select was sent
    result = await gen.write(
        points(gen.device)["gen.run"],
        Command("gen.run", True, mode=CommandMode.SELECT_BEFORE_OPERATE),
    )
    assert result.status is CommandStatus.REJECTED
    assert "select-before-execute: negative confirmation of the select" in result.detail


async def test_negative_confirmation(chp: Iec104Driver) -> None:
    before = await value_of(chp, "chp1.p_set")
    p_set = points(chp.device)["chp1.p_set"]
    below_min_stable = await chp.write(p_set, Command("chp1.p_set", 5.0))
    assert below_min_stable.status is CommandStatus.REJECTED
    assert "negative confirmation" in below_min_stable.detail
    above_rating = await chp.write(p_set, Command("chp1.p_set", 45.0))
    assert above_rating.status is CommandStatus.REJECTED
    await asyncio.sleep(0.3)
    assert await value_of(chp, "chp1.p_set") == before  # nothing half-applied


async def test_value_the_type_cannot_carry_is_not_sent(chp: Iec104Driver) -> None:
    q_set = points(chp.device)["chp1.q_set"]  # scaled, 0.1 kvar per step
    result = await chp.write(q_set, Command("chp1.q_set", 5000.0))
    assert result.status is CommandStatus.REJECTED and result.detail.startswith("not sent")


async def test_every_command_type(gen: Iec104Driver) -> None:
    assert await write(gen, "gen.run", True) is CommandStatus.CONFIRMED  # C_SC_NA_1
    assert await write(gen, "gen.p_set", 30.0) is CommandStatus.CONFIRMED  # C_SE_NC_1
    await reaches(gen, "gen.p", 30.0, 5)
    assert await write(gen, "gen.p_set_scaled", 35.5) is CommandStatus.CONFIRMED  # C_SE_NB_1
    await reaches(gen, "gen.p", 35.5, 5)
    assert await value_of(gen, "gen.p_set_scaled") == pytest.approx(35.5)
    assert await write(gen, "gen.q_set", -10.0) is CommandStatus.CONFIRMED  # C_SE_NA_1
    await reaches(gen, "gen.q_t", -10.0, 5)
    assert await write(gen, "gen.run_sbo", False) is CommandStatus.CONFIRMED  # C_DC_NA_1 SBE
    await until_value(gen, "gen.online_t", False)
    assert await write(gen, "gen.run", True) is CommandStatus.CONFIRMED
    await until_value(gen, "gen.online_t", True)


async def until_value(driver: Iec104Driver, point_id: str, expected: object) -> None:
    deadline = time.monotonic() + 5
    while await value_of(driver, point_id) != expected:
        assert time.monotonic() < deadline, f"{point_id} did not become {expected}"
        await asyncio.sleep(0.05)


# -- links --------------------------------------------------------------------------


async def test_connect_to_nothing_fails_fast() -> None:
    dev = device(DEMO_CONFIG, "chp1-rtu", free_port())
    driver = Iec104Driver(dev)
    started = time.monotonic()
    with pytest.raises(LinkError, match="chp1-rtu"):
        await driver.connect()
    assert time.monotonic() - started < 5  # refused at once, not after t0 = 10 s
    assert not driver.connected
    await driver.close()


async def test_gateway_reconnects_after_the_outstation_restarts(tmp_path: Path) -> None:
    config_path = tmp_path / "gw.yaml"
    config_path.write_text(
        f"""
microgrid: {{id: mg}}
state_dir: {tmp_path / "state"}
mappings: [{ROOT / "mappings" / "demo" / "iec104.yaml"}]
coupling_point: {{id: pcc, import_limit_kw: 100, export_limit_kw: 100}}
reconnect_max_s: 0.5
ders:
  - id: chp1
    type: generator
    ratings: {{p_min_kw: 0, p_max_kw: 40, min_stable_kw: 10, ramp_kw_per_s: 10}}
""",
        encoding="utf-8",
    )
    ports = {"chp1-rtu": free_port()}
    sim = start_sim(config_path, ports)
    config = load_config(config_path, port_overrides=ports)
    try:
        async with Gateway(config) as gw:
            assert await gw.wait_connected(10)
            await until(lambda: good(gw, "chp1.p") and good(gw, "chp1.energy"), 5)
            sim.stop()
            await until(lambda: comm_failure(gw, "chp1.p"), 5)
            assert gw.controller is not None
            down = await gw.controller.write(Command("chp1.p_set", 20.0))
            assert down.status is CommandStatus.LINK_DOWN
            sim = start_sim(config_path, ports)
            await until(lambda: good(gw, "chp1.p") and good(gw, "chp1.running"), 10)
            up = await gw.controller.write(Command("chp1.p_set", 20.0))
            assert up.status is CommandStatus.CONFIRMED
            assert gw.sessions["chp1-rtu"].reconnects >= 1
    finally:
        sim.stop()


def good(gw: Gateway, point_id: str) -> bool:
    r = gw.table.latest(point_id)
    return r is not None and r.quality.good


def comm_failure(gw: Gateway, point_id: str) -> bool:
    r = gw.table.latest(point_id)
    return r is not None and F.COMM_FAILURE in r.quality.flags
