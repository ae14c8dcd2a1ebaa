"""A whole CRP cycle through the real gateway: the simulated demo microgrid served over
Modbus TCP by `mgms sim` in its own process, the gateway's acquisition, store and write
path, and the flexibility service on top (wall-clock time, 10-second intervals)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.config import FlexSettings
from gateway.flex.cycle import crp_cycle
from gateway.flex.model import DecisionStatus, FlexibilityForecast, Verification
from gateway.flex.records import FlexRecords
from gateway.flex.service import FlexService, WallClock
from gateway.loader import load_config
from gateway.mapping import Quantity
from tests.support.procs import DEMO_CONFIG, sim_process
from tests.support.waiting import until

pytestmark = pytest.mark.integration

EVENING = datetime.now(UTC).replace(hour=17, minute=0, second=0, microsecond=0).isoformat()


class Collect:
    def __init__(self) -> None:
        self.forecasts: list[FlexibilityForecast] = []
        self.verifications: list[Verification] = []

    async def forecast(self, message: FlexibilityForecast) -> None:
        self.forecasts.append(message)

    async def verification(self, message: Verification) -> None:
        self.verifications.append(message)


async def test_crp_cycle_over_modbus(tmp_path: Path) -> None:
    devices = [d.id for d in load_config(DEMO_CONFIG).devices if d.protocol == "modbus"]
    with sim_process(devices, extra=["--start", EVENING]) as sim:
        config = load_config(DEMO_CONFIG, port_overrides=sim.ports)
        config.mappings = {p: m for p, m in config.mappings.items() if p.name == "modbus.yaml"}
        config.gateway.state_dir = tmp_path
        config.gateway.flex = FlexSettings(interval_s=10, control_cycle_s=1.0, horizon_h=0.25)
        records = FlexRecords(tmp_path / "flex.sqlite")
        collect = Collect()
        async with Gateway(config) as gw:
            assert gw.controller is not None and gw.store is not None
            assert await gw.wait_connected(20)
            await until(lambda: gw.table.value("pcc", Quantity.ENERGY_IMPORT) is not None)
            service = FlexService(
                config, gw.table, gw.controller, records, collect, gw.store, WallClock()
            )
            loop = asyncio.create_task(service.run())
            try:
                report = await crp_cycle(service, up_kw=25.0, intervals=2)
            finally:
                loop.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loop
        records.close()
    assert report.notification.status is DecisionStatus.ACCEPTED
    assert report.activation is not None and report.activation.status is DecisionStatus.ACCEPTED
    assert report.effect_ms is not None  # the meter reached the set point within the interval
    v = report.verification
    assert v is not None and len(v.intervals) == 2
    for iv in v.intervals:
        assert iv.source == "energy_counters"  # the meter's counters, read over Modbus
        assert iv.requested_kw == pytest.approx(25.0, abs=3.0)
        assert iv.delivered_pct is not None and iv.delivered_pct >= 90.0
    assert collect.verifications[-1].final
    # the battery carried it and went back to its plan (idle) afterwards
    sent = records_points(tmp_path)
    assert "bess1.p_set" in sent


def records_points(tmp_path: Path) -> set[str]:
    records = FlexRecords(tmp_path / "flex.sqlite")
    try:
        acts = [a for _, k, a, _, _ in records.audit_log("activation") if k == "activation"]
        return {p for a in acts for _, _, p, _, _ in records.sent_setpoints(a)}
    finally:
        records.close()
