"""The Conditional Re-Profiling cycle of `mgms demo`, over the wire as in the field: an
AMS simulator and the gateway talk HTTPS with mutual TLS and signed Smart API messages.

Forecast (gateway → AMS, via the outbox) → Reserve Notification (AMS → gateway) →
Reserve Activation (AMS → gateway, applied to the DERs) → Reserve Verification
(gateway → AMS). The demo uses a development PKI and 10-second intervals.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fwsim.process import free_port
from gateway.config import LoadedConfig
from gateway.flex.cycle import DEMO_SETTINGS
from gateway.north.ams_sim import AmsSimConfig, AmsSimulator
from gateway.north.certs import dev_north_config, init_dev_pki
from gateway.north.wire import Channel
from gateway.smartapi.flexibility import FlexibilityForecast, ReserveVerification

MESSAGE_TIMEOUT_S = 90.0
#: share of the offered flexibility the simulated AMS buys, and of it that it activates
RESERVED_SHARE = 0.5
ACTIVATED_FRACTION = 1.0
#: the demo's intervals are 10 s, so the first second of ramp and polling weighs ~10 %;
#: a 15-minute interval loses a fraction of a percent to the same delay
DEMO_MIN_DELIVERED_PCT = 80.0


@asynccontextmanager
async def ams_for(config: LoadedConfig, state_dir: Path) -> AsyncIterator[AmsSimulator]:
    """Give `config` a development north section and run an AMS simulator for it."""
    pki = state_dir / "certs"
    init_dev_pki(pki)
    ams_port, gateway_port = free_port(), free_port()
    config.gateway.north = dev_north_config(
        pki, ams_url=f"https://127.0.0.1:{ams_port}", port=gateway_port
    )
    config.gateway.flex = DEMO_SETTINGS
    ams_config = AmsSimConfig.dev(
        pki,
        microgrid=config.gateway.microgrid.id,
        state_dir=state_dir / "ams",
        gateway_url=f"https://127.0.0.1:{gateway_port}",
        port=ams_port,
    )
    (state_dir / "ams").mkdir(exist_ok=True)
    async with AmsSimulator(ams_config) as ams:
        task = asyncio.create_task(ams.run(), name="ams-sim")
        try:
            await asyncio.wait_for(ams.ready(), 30)
            yield ams
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _from_next_interval(forecast: FlexibilityForecast) -> FlexibilityForecast:
    """The forecast without the intervals that already began: the AMS buys future ones."""
    now = datetime.now(UTC)
    skip = max(int((now - forecast.start) / forecast.step) + 1, 0)
    return replace(
        forecast,
        start=forecast.start + skip * forecast.step,
        intervals=forecast.intervals[skip:],
    )


async def crp_cycle(ams: AmsSimulator) -> dict[str, Any]:
    """One cycle driven by the AMS from the gateway's next forecast: reserve two intervals
    from the next interval start, activate at that start, wait for the verification."""
    seen = len(ams.messages(Channel.FORECAST))
    async with asyncio.timeout(MESSAGE_TIMEOUT_S):
        received = await ams.next_message(Channel.FORECAST, after=seen)
    assert isinstance(received, FlexibilityForecast)
    forecast = _from_next_interval(received)
    notification = ams.notification_for(forecast, share=RESERVED_SHARE, intervals=2)
    notified = await ams.send(notification)
    await asyncio.sleep(max((notification.start - datetime.now(UTC)).total_seconds(), 0.0))
    activation = ams.activation_for(
        notification, forecast, fraction=ACTIVATED_FRACTION, direction="down"
    )
    activated = await ams.send(activation)
    verification: ReserveVerification | None = None
    if activated.answer.ok:
        async with asyncio.timeout(MESSAGE_TIMEOUT_S):
            verified = await ams.next_message(Channel.VERIFICATION)
        assert isinstance(verified, ReserveVerification)
        verification = verified
    first = forecast.intervals[0]
    summary: dict[str, Any] = {
        "forecast": {
            "id": forecast.id,
            "intervals": len(received.intervals),
            "p_baseline_kw": round(first.p_kw, 2),
            "p_range_kw": [round(first.p_min_kw, 2), round(first.p_max_kw, 2)],
        },
        "notification": {
            "id": notification.id,
            "status": notified.answer.status,
            "latency_ms": round(notified.latency_ms, 1),
        },
        "activation": {
            "id": activation.id,
            "status": activated.answer.status,
            "p_set_kw": round(activation.p_kw, 2),
            "latency_ms": round(activated.latency_ms, 1),
        },
        "verification": None,
    }
    if verification is not None:
        rows = verification.intervals
        summary["verification"] = {
            "id": verification.id,
            "activation": verification.activation,
            "intervals": [
                {
                    "p_set_kw": round(i.p_set_kw, 2),
                    "p_baseline_kw": round(i.p_baseline_kw, 2),
                    "p_measured_kw": round(i.p_measured_kw, 2),
                    "p_delivered_kw": round(i.p_delivered_kw, 2),
                    "p_percent": round(i.p_percent, 1),
                }
                for i in rows
            ],
            "percent_delivered": round(min(i.p_percent for i in rows), 1) if rows else None,
        }
    return summary


def cycle_ok(summary: dict[str, Any]) -> bool:
    v = summary.get("verification")
    return (
        summary["notification"]["status"] < 300
        and summary["activation"]["status"] < 300
        and v is not None
        and v["activation"] == summary["activation"]["id"]
        and v["percent_delivered"] is not None
        and v["percent_delivered"] >= DEMO_MIN_DELIVERED_PCT
    )
