"""The market side of the gateway, built when the config has a `north:` section: the
flexibility service (forecast, scheduling, control, verification) and the northbound link
to the aggregator (HTTPS/MQTT over TLS, durable outbox) that carries its messages.

Reserve Notifications and Activations arrive through the north pipeline and are decided
by the flexibility service; its forecasts and verifications leave through the outbox.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.flex.bridge import FlexReserveHandler, NorthPublisher
from gateway.flex.messages import ExternalForecasts
from gateway.flex.records import FlexRecords
from gateway.flex.service import FlexService
from gateway.north.outbox import OutboxStats
from gateway.north.service import North
from gateway.ops.health import CheckResult
from gateway.smartapi.access import AccessService

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger(__name__)

OUTBOX_SAMPLE_S = 5.0
#: readiness fails when the oldest undelivered message is older than this
OUTBOX_MAX_AGE_S = 3600.0


@dataclass
class Market:
    north: North
    flex: FlexService
    outbox: OutboxStats | None = None


async def attach_market(gw: Gateway) -> Market | None:
    """Build and start north and flex on a starting gateway; None without `north:`.
    Activations are recorded as they go (FlexRecords), so a stop needs no drain hook: an
    interrupted activation is resumed or closed out at the next start."""
    assert gw.controller is not None and gw.store is not None
    cfg = gw.config.gateway
    if cfg.north is None:
        return None
    north = North.from_config(gw.config)
    publisher = NorthPublisher(north.send, sender=north.config.identity, microgrid=cfg.microgrid.id)
    records = FlexRecords(cfg.state_dir / "flex.sqlite")
    gw.stack.callback(records.close)
    # external forecasts (TimeSeries writes to the access endpoint) join the DER baselines
    forecasts = ExternalForecasts()
    flex = FlexService(
        gw.config,
        gw.table,
        gw.controller,
        records,
        publisher,
        history=gw.store,
        external=forecasts,
    )
    north.handler = FlexReserveHandler(flex)
    opener, sealer = north.access_security()
    north.access = AccessService(
        config=gw.config,
        table=gw.table,
        write=gw.controller.write,
        sender=north.config.identity,
        opener=opener,
        sealer=sealer,
        profiles=north.config.profiles(),
        forecasts=forecasts,
    )
    await gw.stack.enter_async_context(north)
    market = Market(north, flex)
    gw.spawn(north.run(), "north")
    gw.spawn(flex.run(), "flex")
    gw.spawn(_sample_outbox(market), "outbox-metrics")
    _instrument(gw, market)
    return market


async def _sample_outbox(market: Market) -> None:
    """Outbox statistics need a query; metrics and readiness read this cached copy."""
    failing = False
    while True:
        try:
            market.outbox = await market.north.outbox.stats()
            failing = False
        except Exception as exc:  # metrics must not stop the gateway; say it once  # noqa: BLE001
            if not failing:
                log.warning("outbox statistics unavailable: %s", exc)
            failing = True
        await asyncio.sleep(OUTBOX_SAMPLE_S)


def _instrument(gw: Gateway, market: Market) -> None:
    def depth() -> list[tuple[tuple[str, ...], float]]:
        return [((), float(market.outbox.pending if market.outbox else 0))]

    def age() -> list[tuple[tuple[str, ...], float]]:
        oldest = market.outbox.oldest_age_s if market.outbox else None
        return [((), float(oldest or 0.0))]

    gw.metrics.callback(
        "mgms_outbox_depth", "Messages for the AMS not yet delivered", "gauge", depth
    )
    gw.metrics.callback(
        "mgms_outbox_oldest_age_seconds", "Age of the oldest undelivered message", "gauge", age
    )

    def outbox_ready() -> CheckResult:
        oldest = market.outbox.oldest_age_s if market.outbox else None
        if oldest is not None and oldest > OUTBOX_MAX_AGE_S:
            return CheckResult(False, f"oldest undelivered message is {oldest:.0f} s old")
        return CheckResult(True, f"{market.outbox.pending if market.outbox else 0} pending")

    gw.health.add_readiness("outbox", outbox_ready)
