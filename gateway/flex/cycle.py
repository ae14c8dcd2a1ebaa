"""One Conditional Re-Profiling cycle driven from inside the gateway, as the AMS would:
a Flexibility Forecast, a Reserve Notification for the next intervals, a Reserve
Activation at the start of the reserved period, and the Reserve Verification at its end.
The benchmarks and tests run it against the simulated microgrid; the service's `run()`
must be running meanwhile. (`mgms demo` drives the same cycle from the AMS simulator over
the wire: gateway/demo_market.py.)
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

from gateway.config import FlexSettings
from gateway.flex.intervals import floor_time
from gateway.flex.model import (
    Activation,
    ActivationDecision,
    Band,
    FlexForecast,
    NotificationDecision,
    Reservation,
    Verification,
)
from gateway.flex.service import FlexService
from gateway.mapping import Quantity


@dataclass(frozen=True)
class CycleReport:
    forecast: FlexForecast
    notification: NotificationDecision
    activation: ActivationDecision | None
    verification: Verification | None
    setpoint_kw: float | None
    baseline_kw: float | None
    #: wall-clock latencies
    notify_ms: float
    activate_ms: float | None
    #: from the activation until the coupling point read within the tolerance of the set point
    effect_ms: float | None

    @property
    def delivered_pct(self) -> float | None:
        return None if self.verification is None else self.verification.delivered_pct


async def _until(service: FlexService, at: datetime) -> None:
    while service.clock.now() < at:
        left = (at - service.clock.now()).total_seconds()
        await service.clock.sleep(min(max(left, 0.01), 1.0))


async def crp_cycle(
    service: FlexService,
    *,
    up_kw: float = 30.0,
    intervals: int = 2,
    tolerance_kw: float = 1.0,
) -> CycleReport:
    """Reserve `up_kw` of up flexibility for `intervals` intervals from the next interval
    start, activate it in full at that start, and wait for the final verification."""
    step = service.model.step
    forecast = await service.forecast()
    first = floor_time(service.clock.now(), step) + step
    tag = uuid.uuid4().hex[:8]
    bands = tuple(
        Band(first + k * step, first + (k + 1) * step, p_up_kw=up_kw) for k in range(intervals)
    )
    t0 = time.perf_counter()
    notified = await service.notify(Reservation(f"cycle-{tag}", bands))
    notify_ms = (time.perf_counter() - t0) * 1000
    if notified.accepted is None:
        return CycleReport(forecast, notified, None, None, None, None, notify_ms, None, None)
    await _until(service, first)
    plan = service.plan
    assert plan is not None
    i = plan.horizon.index(service.clock.now())
    baseline = float(plan.pcc_p[i or 0])
    end = first + intervals * step
    act = Activation(
        f"cycle-{tag}-act", first, end, p_kw=baseline - up_kw, reservation_id=f"cycle-{tag}"
    )
    t0 = time.perf_counter()
    decision = await service.activate(act)
    activate_ms = (time.perf_counter() - t0) * 1000
    effect_ms = None
    while service.clock.now() < end and decision.p_kw is not None:
        pcc = service.points.value(service.model.pcc, Quantity.ACTIVE_POWER)
        running = service.running
        target = running.setpoints[-1].p_kw if running and running.setpoints else decision.p_kw
        if pcc is not None and target is not None and abs(pcc - target) <= tolerance_kw:
            effect_ms = (time.perf_counter() - t0) * 1000
            break
        await service.clock.sleep(0.05)
    await _until(service, end)
    verification = None
    for _ in range(400):  # closed a few seconds after the end, once the readings are in
        record = await asyncio.to_thread(service.records.activation, act.id)
        if record is not None and record.state == "ended":
            rows = await asyncio.to_thread(service.records.verification, act.id)
            verification = Verification(act.id, act.reservation_id, tuple(rows), final=True)
            break
        await service.clock.sleep(service.model.settings.control_cycle_s / 2)
    return CycleReport(
        forecast,
        notified,
        decision,
        verification,
        decision.p_kw,
        baseline,
        notify_ms,
        activate_ms,
        effect_ms,
    )


#: flexibility settings short enough for a demo: a cycle in about 30 seconds
DEMO_SETTINGS = FlexSettings(interval_s=10, control_cycle_s=1.0, horizon_h=0.25, history_days=1)
