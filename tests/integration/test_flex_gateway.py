"""Whole CRP cycles through the real gateway: the simulated demo microgrid served by
`mgms sim` in its own process, the gateway's acquisition, store and write path, and the
flexibility service on top (wall-clock time, 10-second intervals)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.config import FlexSettings
from gateway.flex.cycle import CycleReport, crp_cycle
from gateway.flex.model import DecisionStatus, FlexForecast, Verification
from gateway.flex.ports import WallClock
from gateway.flex.records import LABEL, FlexRecords, RecordTables
from gateway.flex.service import FlexService
from gateway.loader import load_config
from gateway.mapping import Quantity
from gateway.sqlite import read_only
from tests.support.procs import DEMO_CONFIG, sim_process
from tests.support.waiting import until

pytestmark = pytest.mark.integration

EVENING = datetime.now(UTC).replace(hour=17, minute=0, second=0, microsecond=0).isoformat()


class Collect:
    def __init__(self) -> None:
        self.forecasts: list[FlexForecast] = []
        self.verifications: list[Verification] = []

    async def forecast(self, message: FlexForecast) -> None:
        self.forecasts.append(message)

    async def verification(self, message: Verification) -> None:
        self.verifications.append(message)


async def run_cycle(
    tmp_path: Path,
    protocols: set[str] | None,
    up_kw: float,
    config_path: Path = DEMO_CONFIG,
    before: Callable[[Gateway], None] | None = None,
) -> CycleReport:
    """One CRP cycle on the devices of `protocols` (None: all of them) of a demo config;
    `before` looks at the connected gateway before the cycle starts."""
    demo = load_config(config_path)
    devices = [d.id for d in demo.devices if protocols is None or d.protocol in protocols]
    with sim_process(devices, config=config_path, extra=["--start", EVENING]) as sim:
        config = load_config(config_path, port_overrides=sim.ports)
        for mapping in config.mappings.values():
            mapping.devices = [d for d in mapping.devices if d.id in devices]
        config.gateway.state_dir = tmp_path
        config.gateway.flex = FlexSettings(interval_s=10, control_cycle_s=1.0, horizon_h=0.25)
        async with FlexRecords(tmp_path / "flex.sqlite") as records, Gateway(config) as gw:
            assert gw.controller is not None and gw.store is not None
            assert await gw.wait_connected(30)
            await until(lambda: gw.table.value("pcc", Quantity.ENERGY_IMPORT) is not None)
            for der in config.gateway.ders:  # every mapped battery reports its charge
                if gw.table.find(der.id, Quantity.STATE_OF_CHARGE):
                    await until(lambda d=der.id: gw.table.value(d, Quantity.STATE_OF_CHARGE))
            if before is not None:
                # every readable point read once: a report's values may come before the
                # first poll of the rest
                readable = [m.point.id for m in gw.table if m.point.direction.readable]
                await until(lambda: all(gw.table.latest(p) is not None for p in readable))
                before(gw)
            service = FlexService(
                config, gw.table, gw.controller, records, Collect(), gw.store, WallClock()
            )
            loop = asyncio.create_task(service.run())
            try:
                report = await crp_cycle(service, up_kw=up_kw, intervals=2)
            finally:
                loop.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loop
    return report


def check_delivered(report: CycleReport, up_kw: float) -> None:
    assert report.notification.status is DecisionStatus.ACCEPTED
    assert report.activation is not None and report.activation.status is DecisionStatus.ACCEPTED
    assert report.effect_ms is not None  # the meter reached the set point within the interval
    v = report.verification
    assert v is not None and len(v.intervals) == 2
    for iv in v.intervals:
        assert iv.source == "energy_counters"  # the meter's counters, read over Modbus
        assert iv.requested_kw == pytest.approx(up_kw, abs=3.0)
        assert iv.delivered_pct is not None and iv.delivered_pct >= 90.0


async def test_crp_cycle_over_modbus(tmp_path: Path) -> None:
    """One CRP cycle on the Modbus devices alone: the battery delivers the reserved band,
    verified from the coupling-point meter's counters."""
    report = await run_cycle(tmp_path, {"modbus"}, 25.0)
    check_delivered(report, 25.0)
    assert report.setpoint_kw is not None and report.baseline_kw is not None


async def test_crp_cycle_over_every_demo_protocol(tmp_path: Path) -> None:
    """More than the Modbus battery can give: the battery behind the IEC 61850 IED takes its
    share, the coupling point is verified from the DLMS billing meter's counters, and every
    controllable DER (the IEC 104 CHP too) is written back to its plan at the end."""
    report = await run_cycle(tmp_path, None, 65.0)
    check_delivered(report, 65.0)
    sent = sent_values(tmp_path)
    assert max(sent["bess1.p_set"]) == pytest.approx(50.0, abs=1.0)  # cheapest, full out
    assert max(sent["bess2.p_set"]) > 5.0  # the rest, over MMS
    demo = load_config(DEMO_CONFIG)
    ders = {x.id for x in demo.gateway.ders}
    setpoints = {
        p.id
        for d in demo.devices
        for p in d.points
        if p.quantity is Quantity.ACTIVE_POWER_SETPOINT and p.der in ders
    }
    assert setpoints <= set(sent), f"set points never written: {setpoints - set(sent)}"


def sent_values(tmp_path: Path) -> dict[str, list[float]]:
    """Confirmed writes of the flexibility functions, by point."""
    with read_only(tmp_path / "flex.sqlite", LABEL) as db:
        records = RecordTables(db)
        out: dict[str, list[float]] = {}
        for _, kind, act, _, _ in records.audit_log("activation"):
            for _, _, point, value, status in records.sent_setpoints(act):
                if kind == "activation" and status == "confirmed":
                    out.setdefault(point, []).append(value)
        return out
