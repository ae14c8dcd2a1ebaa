"""The CEMS driver in the Smart API form against the simulated building: one Read request
per entity, Writes reaching the physics, values with units, quality and time, over mutual
TLS on loopback. Messages go through the gateway's own Smart API codec on both sides."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drivers.cems.driver import CemsDriver
from drivers.cems.simulator import CemsFrontEnd
from fwsim.physics import Microgrid
from fwsim.runner import build_grid
from gateway.loader import load_config
from gateway.mapping import Device, Quantity
from gateway.model import Command, CommandStatus
from tests.support.cems import SMARTAPI_POINTS, write_site

pytestmark = pytest.mark.integration


@pytest.fixture
async def building(tmp_path: Path) -> AsyncIterator[tuple[Device, Microgrid]]:
    config_path, _ = write_site(tmp_path, points=SMARTAPI_POINTS)
    config = load_config(config_path)
    device = config.devices[0]
    grid = build_grid(config)
    front = CemsFrontEnd(device, grid, "127.0.0.1", device.connection.port or 0)
    await front.start()
    try:
        yield device, grid
    finally:
        await front.stop()


async def test_one_read_per_entity_with_units_quality_and_time(
    building: tuple[Device, Microgrid],
) -> None:
    device, grid = building
    driver = CemsDriver(device)
    await driver.connect()
    try:
        before = driver.requests_sent
        readings = await driver.read(list(device.points))
        assert driver.requests_sent - before == 2  # load2 and ev1
        assert all(r.quality.good for r in readings), [r.detail for r in readings]
        assert all(r.source_time is not None for r in readings)
        values = {r.point: r.value for r in readings}
        assert values["load2.p"] == pytest.approx(grid.value("load2", Quantity.ACTIVE_POWER))
        assert values["load2.q"] == pytest.approx(grid.value("load2", Quantity.REACTIVE_POWER))
        assert values["ev1.p"] == pytest.approx(grid.value("ev1", Quantity.ACTIVE_POWER))
        assert values["load2.curtail"] == 0
    finally:
        await driver.close()


async def test_a_write_is_a_smartapi_write(building: tuple[Device, Microgrid]) -> None:
    device, grid = building
    curtail = next(p for p in device.points if p.id == "load2.curtail")
    driver = CemsDriver(device)
    await driver.connect()
    try:
        result = await driver.write(curtail, Command("load2.curtail", 35.0))
        assert result.status is CommandStatus.CONFIRMED, result.detail
        assert grid.value("load2", Quantity.ACTIVE_POWER_LIMIT) == 35.0
        (reading,) = await driver.read([curtail])
        assert reading.value == 35.0
    finally:
        await driver.close()
