"""The IEC 61850 driver against the simulated IED (`mgms sim`) in its own process, over
MMS on loopback: reads with quality and time, set points, direct and SBO-enhanced
controls, refusals with their AddCause, reports, and links that hang, die and come back."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from drivers.base import Driver
from drivers.iec61850.driver import Iec61850Driver
from drivers.registry import create_driver
from gateway.app import Gateway
from gateway.errors import LinkError
from gateway.loader import load_config
from gateway.mapping import Device, Point
from gateway.model import Command, CommandStatus, QualityFlag, Reading, utcnow
from tests.support.procs import DEMO_CONFIG, ROOT, SimProcess, free_port, sim_process, start_sim
from tests.support.waiting import until

pytestmark = pytest.mark.integration

DEVICE = "bess2-ied"
MAPPING = ROOT / "mappings" / "demo" / "iec61850.yaml"


def write_config(tmp: Path, **device_changes: Any) -> Path:
    """A gateway config with only the demo IED (changed as asked) and bess2."""
    mapping = yaml.safe_load(MAPPING.read_text())
    mapping["devices"][0].update(device_changes)
    (tmp / "ied.yaml").write_text(yaml.safe_dump(mapping))
    demo = yaml.safe_load(DEMO_CONFIG.read_text())
    config = {
        "microgrid": {"id": "test-mg"},
        "state_dir": "state",
        "mappings": ["ied.yaml"],
        "coupling_point": {**demo["coupling_point"], "billing_meter": None},
        "ders": [d for d in demo["ders"] if d["id"] == "bess2"],
    }
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def device_of(config: Path, port: int) -> Device:
    loaded = load_config(config, port_overrides={DEVICE: port})
    return next(d for d in loaded.devices if d.id == DEVICE)


def point(device: Device, point_id: str) -> Point:
    return next(p for p in device.points if p.id == point_id)


def readable(device: Device) -> list[Point]:
    return [p for p in device.points if p.direction.readable]


async def read_one(driver: Driver, device: Device, point_id: str) -> Reading:
    (reading,) = await driver.read([point(device, point_id)])
    return reading


async def value_becomes(
    driver: Driver, device: Device, point_id: str, target: float, within: float = 5.0
) -> None:
    async def close_enough() -> bool:
        reading = await read_one(driver, device, point_id)
        return reading.value is not None and abs(float(reading.value) - target) < 0.05

    deadline = time.monotonic() + within
    while not await close_enough():
        assert time.monotonic() < deadline, f"{point_id} did not reach {target}"
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_config(tmp_path_factory.mktemp("iec61850"), poll_interval=0.2, timeout=0.5)


@pytest.fixture(scope="module")
def sim(config: Path) -> Iterator[SimProcess]:
    with sim_process([DEVICE], config=config, extra=["--speed", "4"]) as process:
        yield process
    assert process.proc.returncode == 0  # controls were served: the IED still exits cleanly


@pytest.fixture
async def ied(config: Path, sim: SimProcess) -> AsyncIterator[tuple[Iec61850Driver, Device]]:
    device = device_of(config, sim.ports[DEVICE])
    driver = create_driver(device)
    assert isinstance(driver, Iec61850Driver)
    await driver.connect()
    try:
        yield driver, device
    finally:
        await driver.close()


async def test_reads_carry_value_quality_and_source_time(
    ied: tuple[Iec61850Driver, Device],
) -> None:
    driver, device = ied
    readings = {r.point: r for r in await driver.read(readable(device))}
    assert set(readings) == {p.id for p in readable(device)}
    assert all(r.quality.good for r in readings.values()), readings
    assert readings["bess2.capacity"].value == 60.0  # a CF setting
    assert 10.0 <= float(readings["bess2.soc"].value or 0) <= 90.0  # type: ignore[arg-type]
    assert readings["bess2.enable"].value is True  # an SPC's stVal
    soc_time = readings["bess2.soc"].source_time
    assert soc_time is not None and abs((utcnow() - soc_time).total_seconds()) < 60
    assert readings["bess2.capacity"].source_time is None  # CF carries no t
    assert driver.connected


async def test_sbo_enhanced_set_point_moves_the_battery(
    ied: tuple[Iec61850Driver, Device],
) -> None:
    driver, device = ied
    p_set = point(device, "bess2.p_set")
    result = await driver.write(p_set, Command(p_set.id, 12.5))
    assert result.status is CommandStatus.CONFIRMED, result
    assert result.detail == "CommandTermination+"
    await value_becomes(driver, device, "bess2.p_set", 12.5)
    await value_becomes(driver, device, "bess2.p", 12.5)  # the physics followed
    back = await driver.write(p_set, Command(p_set.id, 0.0))
    assert back.ok


async def test_direct_control_and_setting_write(ied: tuple[Iec61850Driver, Device]) -> None:
    driver, device = ied
    enable, q_set = point(device, "bess2.enable"), point(device, "bess2.q_set")
    try:
        stopped = await driver.write(enable, Command(enable.id, False))
        assert stopped.status is CommandStatus.CONFIRMED, stopped
        await value_becomes(driver, device, "bess2.enable", 0.0)
        assert (await read_one(driver, device, "bess2.enable")).value is False
        await value_becomes(driver, device, "bess2.p", 0.0)
    finally:
        assert (await driver.write(enable, Command(enable.id, True))).ok
    written = await driver.write(q_set, Command(q_set.id, -6.0))
    assert written.status is CommandStatus.CONFIRMED, written
    await value_becomes(driver, device, "bess2.q", -6.0)
    assert (await driver.write(q_set, Command(q_set.id, 0.0))).ok


async def test_refused_controls_report_the_add_cause(ied: tuple[Iec61850Driver, Device]) -> None:
    driver, device = ied
    p_set, enable = point(device, "bess2.p_set"), point(device, "bess2.enable")
    # beyond the IED's range (the gateway's limit check is bypassed on purpose)
    too_much = await driver.write(p_set, Command(p_set.id, 45.0))
    assert too_much.status is CommandStatus.REJECTED
    assert too_much.detail == "select refused: AddCause 26 Inconsistent-parameters"
    # wrong state: a power set point while the battery is stopped
    assert (await driver.write(enable, Command(enable.id, False))).ok
    try:
        stopped = await driver.write(p_set, Command(p_set.id, 5.0))
        assert stopped.status is CommandStatus.REJECTED
        assert "AddCause 9 Blocked-by-process" in stopped.detail
    finally:
        assert (await driver.write(enable, Command(enable.id, True))).ok
    # a measurement is no set point
    p = point(device, "bess2.p")
    refused = await driver.write(p, Command(p.id, 1.0))
    assert refused.status is CommandStatus.REJECTED and "cannot be written" in refused.detail


async def test_control_model_mismatch_is_refused_before_operating(
    tmp_path: Path, sim: SimProcess
) -> None:
    points = yaml.safe_load(MAPPING.read_text())["devices"][0]["points"]
    for raw in points:
        if raw["id"] == "bess2.p_set":
            raw["sbo"] = False  # while the simulated IED is select-before-operate
    device = device_of(write_config(tmp_path, points=points), sim.ports[DEVICE])
    driver = create_driver(device)
    await driver.connect()
    try:
        p_set = point(device, "bess2.p_set")
        result = await driver.write(p_set, Command(p_set.id, 3.0))
    finally:
        await driver.close()
    assert result.status is CommandStatus.REJECTED
    assert "sbo-with-enhanced-security on the IED" in result.detail
    assert "direct-with-enhanced-security" in result.detail


async def test_reports_push_changes_without_polling(ied: tuple[Iec61850Driver, Device]) -> None:
    driver, device = ied
    pushed: list[Reading] = []
    assert await driver.subscribe(pushed.append)
    await until(lambda: {"bess2.p", "bess2.q", "bess2.soc"} <= {r.point for r in pushed})
    p_set = point(device, "bess2.p_set")
    assert (await driver.write(p_set, Command(p_set.id, -8.0))).ok
    try:
        await until(
            lambda: any(
                r.point == "bess2.p" and r.value is not None and abs(r.value + 8.0) < 0.05
                for r in pushed
            )
        )
    finally:
        assert (await driver.write(p_set, Command(p_set.id, 0.0))).ok
    assert all(r.quality.good and r.source_time is not None for r in pushed)


def associations(pid: int, port: int) -> int:
    """Established TCP connections of process `pid` to `port` on loopback (/proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port = int(fields[2].split(":")[1], 16)
        if remote_port == port and fields[3] == "01" and fields[9] in inodes:  # ESTABLISHED
            count += 1
    return count


async def test_one_association_carries_requests_and_reports(
    ied: tuple[Iec61850Driver, Device],
) -> None:
    """Every idle association slows a libiec61850 server by 10 ms per pass for every
    client (docs/iec61850.md, "Control latency"): the driver keeps one per IED."""
    driver, device = ied
    pid = driver.worker_pid
    assert pid is not None
    port = device.connection.port
    assert port is not None
    pushed: list[Reading] = []
    assert await driver.subscribe(pushed.append)
    await until(lambda: bool(pushed))
    p_set = point(device, "bess2.p_set")
    assert (await driver.write(p_set, Command(p_set.id, 0.0))).ok
    assert all(r.quality.good for r in await driver.read(readable(device)))
    assert associations(pid, port) == 1


async def test_requests_never_wait_for_the_reports_on_their_association(
    ied: tuple[Iec61850Driver, Device],
) -> None:
    """Controls (select, operate, termination), data set reads and object reads while
    each control makes the IED report: a request that held the GIL when a report came in
    would wait for good (the worker would be killed and the link reported lost). A second
    client, connected and idle, makes the IED answer every request in 10-40 ms, so that
    reports come in while requests are in flight."""
    driver, device = ied
    other = create_driver(device)
    await other.connect()
    pushed: list[Reading] = []
    try:
        assert await driver.subscribe(pushed.append)
        await until(lambda: bool(pushed))
        p_set = point(device, "bess2.p_set")
        before = len(pushed)
        try:
            for i in range(16):
                result = await driver.write(p_set, Command(p_set.id, 5.0 if i % 2 else -5.0))
                assert result.ok, result
                readings = await driver.read(readable(device))
                assert all(r.quality.good for r in readings), readings
        finally:
            assert (await driver.write(p_set, Command(p_set.id, 0.0))).ok
        assert len(pushed) > before  # reports kept coming in between the requests
    finally:
        await other.close()


async def test_a_control_the_ied_lacks_is_refused_by_name_while_reports_run(
    tmp_path: Path, sim: SimProcess
) -> None:
    """Its type lookup fails before the reports are enabled, and again when it is used,
    then over a lookup association of its own (no GIL-holding request on the reporting
    one): the refusal names the object and the association goes on serving."""
    points = yaml.safe_load(MAPPING.read_text())["devices"][0]["points"]
    points.append(
        {
            "id": "bess2.missing",
            "address": "BESS2LD0/DRCC1.NoSuchCtl@CO",
            "type": "float32",
            "unit": "KiloW",
            "direction": "read-write",
        }
    )
    device = device_of(write_config(tmp_path, points=points), sim.ports[DEVICE])
    driver = create_driver(device)
    await driver.connect()
    pushed: list[Reading] = []
    try:
        assert await driver.subscribe(pushed.append)
        await until(lambda: bool(pushed))
        missing = point(device, "bess2.missing")
        result = await driver.write(missing, Command(missing.id, 1.0))
        assert result.status is CommandStatus.REJECTED, result
        assert "BESS2LD0/DRCC1.NoSuchCtl@CO" in result.detail
        p_set = point(device, "bess2.p_set")
        assert (await driver.write(p_set, Command(p_set.id, 0.0))).ok
        assert driver.connected
    finally:
        await driver.close()


class LoopWatch:
    """The longest the event loop went without running this ticker."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            self.worst = max(self.worst, now - last)
            last = now

    async def __aenter__(self) -> LoopWatch:
        self._task = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def test_hung_and_killed_ied_block_neither_other_ied_nor_loop(tmp_path: Path) -> None:
    # a long request timeout: a loop blocked by the hung request would stall that long
    config = write_config(tmp_path, timeout=1.5)
    with (
        sim_process([DEVICE], config=config) as sim_a,
        sim_process([DEVICE], config=config) as sim_b,
    ):
        dev_a, dev_b = (
            device_of(config, sim_a.ports[DEVICE]),
            device_of(config, sim_b.ports[DEVICE]),
        )
        a, b = create_driver(dev_a), create_driver(dev_b)
        await a.connect()
        await b.connect()
        try:
            assert all(r.quality.good for r in await a.read(readable(dev_a)))
            os.kill(sim_a.proc.pid, signal.SIGSTOP)  # the IED hangs: TCP up, no answers
            b_reads = 0

            async def keep_reading_b() -> None:
                nonlocal b_reads
                while True:
                    readings = await b.read(readable(dev_b))
                    assert all(r.quality.good for r in readings)
                    b_reads += 1
                    await asyncio.sleep(0.02)

            async with LoopWatch() as watch:
                reader = asyncio.create_task(keep_reading_b())
                started = time.monotonic()
                with pytest.raises(LinkError):
                    await a.read(readable(dev_a))
                hung_for = time.monotonic() - started
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
            assert hung_for >= dev_a.timeout  # the request really waited for the IED
            assert b_reads >= 5  # the other IED was served all along
            assert watch.worst < hung_for / 2  # and the loop never froze

            os.kill(sim_a.proc.pid, signal.SIGCONT)
            await a.connect()
            assert all(r.quality.good for r in await a.read(readable(dev_a)))

            sim_a.proc.kill()  # the IED dies: the link error comes at once
            sim_a.proc.wait()
            with pytest.raises(LinkError):
                await a.read(readable(dev_a))
            assert all(r.quality.good for r in await b.read(readable(dev_b)))
        finally:
            if sim_a.proc.poll() is None:  # never leave it stopped for the teardown
                os.kill(sim_a.proc.pid, signal.SIGCONT)
            await a.close()
            await b.close()


async def test_a_hung_worker_is_killed_and_replaced(ied: tuple[Iec61850Driver, Device]) -> None:
    driver, device = ied
    assert all(r.quality.good for r in await driver.read(readable(device)))
    pid = driver.worker_pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # a library call that never returns
    async with LoopWatch() as watch:
        with pytest.raises(LinkError, match="worker killed"):
            await driver.read(readable(device))
    assert watch.worst < 0.5
    assert not driver.connected
    await driver.connect()
    assert driver.worker_pid not in (None, pid)
    assert all(r.quality.good for r in await driver.read(readable(device)))


async def test_gateway_marks_points_invalid_while_the_ied_is_gone_and_reconnects(
    config: Path,
) -> None:
    port = free_port()
    sim = start_sim(config, {DEVICE: port}, devices=[DEVICE])
    loaded = load_config(config, port_overrides={DEVICE: port})
    try:
        async with Gateway(loaded) as gw:
            assert await gw.wait_connected(10.0)
            await until(lambda: (r := gw.table.latest("bess2.soc")) is not None and r.quality.good)
            sim.stop()
            assert sim.proc.returncode == 0  # the simulated IED exits cleanly
            await until(
                lambda: QualityFlag.COMM_FAILURE in gw.table.latest("bess2.soc").quality.flags,  # type: ignore[union-attr]
                within=10.0,
            )
            assert gw.controller is not None
            down = await gw.controller.write(Command("bess2.p_set", 1.0))
            assert down.status is CommandStatus.LINK_DOWN
            sim = start_sim(config, {DEVICE: port}, devices=[DEVICE])
            await until(
                lambda: gw.table.latest("bess2.soc").quality.good,  # type: ignore[union-attr]
                within=15.0,
            )
            result = await gw.controller.write(Command("bess2.p_set", 4.0))
            assert result.status is CommandStatus.CONFIRMED, result
            await until(
                lambda: gw.table.latest("bess2.p").value == pytest.approx(4.0, abs=0.05),  # type: ignore[union-attr]
                within=10.0,
            )
    finally:
        sim.stop()
