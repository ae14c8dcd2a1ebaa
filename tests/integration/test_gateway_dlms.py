"""The whole gateway against the demo's DLMS meters: acquisition with HLS and LLS
associations, commands through the controller, the load profile from a running session,
and reconnection after the meters restart."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from drivers.dlms.driver import DlmsDriver
from gateway.app import Gateway
from gateway.config import LoadedConfig
from gateway.loader import load_config
from gateway.model import Command, CommandStatus, QualityFlag
from tests.support.procs import DEMO_CONFIG, free_port, start_sim
from tests.support.waiting import until

pytestmark = pytest.mark.integration

METERS = ["pcc-billing-meter", "load1-customer-meter"]


def dlms_only(ports: dict[str, int], state: Path) -> LoadedConfig:
    config = load_config(DEMO_CONFIG, port_overrides=ports)
    config.mappings = {p: m for p, m in config.mappings.items() if p.name == "dlms.yaml"}
    config.gateway.state_dir = state
    config.gateway.reconnect_max_s = 0.5
    return config


def good(gw: Gateway, point: str) -> bool:
    reading = gw.table.latest(point)
    return reading is not None and reading.quality.good


async def test_gateway_polls_controls_and_reconnects(tmp_path: Path) -> None:
    ports = {d: free_port() for d in METERS}
    sim = start_sim(DEMO_CONFIG, ports, devices=METERS, extra=["--speed", "900"])
    config = dlms_only(ports, tmp_path)
    readable = [p.id for d in config.devices for p in d.points if p.direction.readable]
    try:
        async with Gateway(config) as gw:
            assert gw.controller is not None
            assert await gw.wait_connected(15)
            await until(lambda: all(good(gw, p) for p in readable), within=15)

            result = await gw.controller.write(Command("load1.limit", 150.0))
            assert result.status is CommandStatus.CONFIRMED, result.detail
            await until(lambda: gw.table.latest("load1.limit_active").value == 150.0)  # type: ignore[union-attr]
            result = await gw.controller.write(Command("load1.disconnect", 1))
            assert result.status is CommandStatus.CONFIRMED, result.detail
            await until(lambda: gw.table.latest("load1.supply").value is False)  # type: ignore[union-attr]
            await until(lambda: gw.table.latest("load1.meter.p").value == 0)  # type: ignore[union-attr]
            result = await gw.controller.write(Command("load1.reconnect", 1))
            assert result.status is CommandStatus.CONFIRMED, result.detail
            await until(lambda: gw.table.latest("load1.supply").value is True)  # type: ignore[union-attr]

            # the load profile of the running (HLS, ciphered) association
            driver = gw.sessions["pcc-billing-meter"].driver
            assert isinstance(driver, DlmsDriver)
            clock = gw.table.latest("pcc.meter.clock")
            assert clock is not None and clock.source_time is not None
            await until(lambda: gw.table.latest("pcc.meter.clock").value > clock.value + 1800)  # type: ignore[union-attr,operator]
            now = gw.table.latest("pcc.meter.clock").source_time  # type: ignore[union-attr]
            assert now is not None
            profile = await driver.read_load_profile(now - timedelta(hours=2), now)
            assert len(profile.entries) >= 2
            assert {"pcc.meter.e_import", "pcc.meter.q_export"} <= {c.key for c in profile.columns}
            assert all(i.energy["pcc.meter.e_import"] >= 0 for i in profile.intervals())

            sim.stop()
            await until(lambda: not gw.sessions["pcc-billing-meter"].up, within=10)
            reading = gw.table.latest("pcc.meter.p")
            assert reading is not None and QualityFlag.COMM_FAILURE in reading.quality.flags
            result = await gw.controller.write(Command("load1.reconnect", 1))
            assert result.status is CommandStatus.LINK_DOWN

            sim = start_sim(DEMO_CONFIG, ports, devices=METERS, extra=["--speed", "900"])
            await until(lambda: all(gw.sessions[m].up for m in METERS), within=15)
            await until(lambda: good(gw, "pcc.meter.p") and good(gw, "load1.meter.p"))
    finally:
        sim.stop()
