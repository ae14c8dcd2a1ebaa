"""Reserve activation end to end, and closed-loop dispatch against a one-shot one.

(1) Over the real path: the simulated demo microgrid served over Modbus TCP by `mgms sim`
    in its own process, the gateway (acquisition, store, write path) and the flexibility
    service on top, 10-second intervals and a 1-second control cycle. One CRP cycle
    reserves and activates 25 kW of up flexibility for two intervals. Measured: the
    notification (plan LP and conflict check), the activation (dispatch LP and the Modbus
    writes), the time until the meter reads the set point, control-cycle and dispatch-LP
    times, and the percent delivered.
(2) Closed loop against the naive open loop, in simulated time on the same physics (the
    drift of an evening hour cannot be waited for over a socket): a one-hour activation of
    45 kW from 17:00 with 15-minute intervals, (a) corrected every 5-second control cycle
    from the coupling-point meter, (b) the set points computed when the activation
    arrives, written once and left alone. Percent delivered of each and the ratio of
    their shortfalls.
Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fwsim.process import free_port, start_sim
from gateway.app import Gateway
from gateway.config import FlexSettings
from gateway.flex import activation as activation_module
from gateway.flex.cycle import crp_cycle
from gateway.flex.dispatch import Dispatch, DispatchInput
from gateway.flex.dispatch import dispatch as solve_dispatch
from gateway.flex.model import (
    Activation,
    Band,
    FlexForecast,
    Reservation,
    Verification,
)
from gateway.flex.ports import WallClock
from gateway.flex.records import FlexRecords
from gateway.flex.service import FlexService
from gateway.loader import load_config
from gateway.mapping import Quantity
from tests.support.flexsim import Bench, BenchClock

ROOT = Path(__file__).resolve().parent.parent

CONFIG = ROOT / "config" / "demo.yaml"
dispatch_ms: list[float] = []


class Discard:
    async def forecast(self, message: FlexForecast) -> None:
        pass

    async def verification(self, message: Verification) -> None:
        pass


def timed_dispatch(inp: DispatchInput) -> Dispatch:
    t0 = time.perf_counter()
    out = solve_dispatch(inp)
    dispatch_ms.append((time.perf_counter() - t0) * 1000)
    return out


async def stepping(service: FlexService, cycle_ms: list[float], stop: asyncio.Event) -> None:
    await service.start()
    while not stop.is_set():
        t0 = time.perf_counter()
        await service.step()  # it takes the service's locks itself
        cycle_ms.append((time.perf_counter() - t0) * 1000)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), service.model.settings.control_cycle_s)


async def over_modbus() -> dict[str, Any]:
    probe = load_config(CONFIG)
    devices = [d.id for d in probe.devices if d.protocol == "modbus"]
    ports = {d: free_port() for d in devices}
    start = datetime.now(UTC).replace(hour=17, minute=0, second=0, microsecond=0)
    with tempfile.TemporaryDirectory(prefix="mgms-bench-") as state:
        sim = start_sim(CONFIG, ports, devices=devices, extra=["--start", start.isoformat()])
        try:
            config = load_config(CONFIG, port_overrides=ports)
            config.mappings = {p: m for p, m in config.mappings.items() if p.name == "modbus.yaml"}
            config.gateway.state_dir = Path(state)
            config.gateway.flex = FlexSettings(
                interval_s=10, control_cycle_s=1.0, horizon_h=0.25, history_days=1
            )
            async with FlexRecords(Path(state) / "flex.sqlite") as records, Gateway(config) as gw:
                assert gw.controller is not None and gw.store is not None
                if not await gw.wait_connected(20):
                    raise RuntimeError("simulator not reachable")
                for _ in range(200):
                    if gw.table.value("pcc", Quantity.ENERGY_IMPORT) is not None:
                        break
                    await asyncio.sleep(0.1)
                service = FlexService(
                    config, gw.table, gw.controller, records, Discard(), gw.store, WallClock()
                )
                cycle_ms: list[float] = []
                stop = asyncio.Event()
                loop = asyncio.create_task(stepping(service, cycle_ms, stop))
                report = await crp_cycle(service, up_kw=25.0, intervals=2)
                stop.set()
                await loop
        finally:
            sim.stop()
    pct = report.delivered_pct
    return {
        "notify_ms": round(report.notify_ms, 1),
        "activate_ms": None if report.activate_ms is None else round(report.activate_ms, 1),
        "effect_ms": None if report.effect_ms is None else round(report.effect_ms, 1),
        "cycle_ms_median": round(statistics.median(cycle_ms), 1),
        "cycle_ms_p95": round(sorted(cycle_ms)[int(0.95 * (len(cycle_ms) - 1))], 1),
        "dispatch_lp_ms_median": round(statistics.median(dispatch_ms), 2),
        "delivered_pct": None if pct is None else round(pct, 1),
    }


async def one_hour(closed: bool) -> float | None:
    """A 45 kW up activation 17:00-18:00 on the physics in simulated time."""
    t17 = datetime(2024, 6, 3, 17, 0, tzinfo=UTC)
    bench = Bench.warmed(t17 - timedelta(minutes=10))
    bench.config.gateway.flex = FlexSettings(control_cycle_s=5.0, horizon_h=4)
    with tempfile.TemporaryDirectory(prefix="mgms-bench-") as state:
        async with FlexRecords(Path(state) / "flex.sqlite") as records:
            service = FlexService(
                bench.config,
                bench.table,
                bench.controller,
                records,
                Discard(),
                bench.history,
                BenchClock(bench),
            )
            q = timedelta(minutes=15)
            bands = tuple(Band(t17 + k * q, t17 + (k + 1) * q, p_up_kw=45.0) for k in range(4))
            await service.notify(Reservation("hour", bands))
            while bench.now() < t17:
                await service.step()
                bench.advance(5)
            assert service.plan is not None
            base = float(service.plan.pcc_p[service.plan.horizon.index(t17) or 0])
            end = t17 + timedelta(hours=1)
            await service.activate(
                Activation("hour-act", t17, end, base - 45.0, reservation_id="hour")
            )
            while bench.now() < end:
                if closed:
                    await service.step()
                bench.advance(5)
            for _ in range(3):  # closes it: release, then the final verification
                await service.step()
                bench.advance(5)
            verified = await records.verification("hour-act")
    return Verification("hour-act", "hour", tuple(verified), final=True).delivered_pct


def main() -> None:
    activation_module.dispatch = timed_dispatch  # count the dispatch LP inside the control cycle
    figures = asyncio.run(over_modbus())
    closed = asyncio.run(one_hour(closed=True))
    opened = asyncio.run(one_hour(closed=False))
    figures["hour_closed_loop_delivered_pct"] = None if closed is None else round(closed, 1)
    figures["hour_open_loop_delivered_pct"] = None if opened is None else round(opened, 1)
    if closed is not None and opened is not None:
        figures["shortfall_ratio_open_to_closed"] = round(
            abs(100 - opened) / max(abs(100 - closed), 0.1), 1
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
