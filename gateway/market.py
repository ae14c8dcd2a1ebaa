"""The market side of the gateway, built when the config has a `north:` section: the
flexibility service (forecast, scheduling, control, verification) and the northbound link
to the aggregator (HTTPS/MQTT over TLS, durable outbox) that carries its messages.

Reserve Notifications and Activations arrive through the north pipeline and are decided
by the flexibility service; its forecasts and verifications leave through the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.config import LoadedConfig
from gateway.core import RunningCore
from gateway.flex.bridge import FlexReserveHandler, NorthPublisher
from gateway.flex.messages import ExternalForecasts
from gateway.flex.records import FlexRecords
from gateway.flex.service import FlexService
from gateway.north.codec import access_security
from gateway.north.outbox import OutboxStats
from gateway.north.service import North
from gateway.ops.flexwatch import FlexWatch
from gateway.ops.health import CheckResult, Health
from gateway.ops.metrics import Registry
from gateway.ops.reload import PrepareReload
from gateway.ops.status import StatusBoard
from gateway.smartapi.access import AccessService
from gateway.smartapi.security.profile import InboundSecurity
from gateway.store import Store

log = logging.getLogger(__name__)

OUTBOX_SAMPLE_S = 5.0
#: readiness fails when the oldest undelivered message is older than this
OUTBOX_MAX_AGE_S = 3600.0


class MarketHost(RunningCore, Protocol):
    """What the market side uses of the starting gateway besides the core: the store's
    history; where to close, reload, run, measure and show its parts."""

    @property
    def store(self) -> Store: ...
    @property
    def stack(self) -> contextlib.AsyncExitStack: ...
    @property
    def metrics(self) -> Registry: ...
    @property
    def health(self) -> Health: ...
    @property
    def status(self) -> StatusBoard: ...
    def on_reload(self, name: str, prepare: PrepareReload) -> None: ...
    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]: ...


@dataclass
class Market:
    north: North
    flex: FlexService
    outbox: OutboxStats | None = None


async def attach_market(gw: MarketHost) -> Market | None:
    """Build and start north and flex on a starting gateway; None without `north:`.
    Activations are recorded as they go (FlexRecords), so a stop needs no drain hook: an
    interrupted activation is resumed or closed out at the next start."""
    cfg = gw.config.gateway
    if cfg.north is None:
        return None
    north = North.from_config(gw.config)
    publisher = NorthPublisher(north.send, sender=north.config.identity, microgrid=cfg.microgrid.id)
    records = await gw.stack.enter_async_context(FlexRecords(cfg.state_dir / "flex.sqlite"))
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
    access = AccessService(
        config=gw.config,
        table=gw.table,
        write=gw.controller.write,
        sender=north.config.identity,
        opener=opener,
        sealer=sealer,
        profiles=north.config.profiles(),
        forecasts=forecasts,
    )
    north.access = access
    await gw.stack.enter_async_context(north)
    market = Market(north, flex)
    watch = FlexWatch(flex, gw.metrics)
    flex.observer = watch
    gw.status.set_flex_source(watch.status)
    gw.on_reload("flex", flex.prepare_reload)
    gw.on_reload("north", north.prepare_reload)
    gw.on_reload("access", lambda config: _reload_access(access, config))
    gw.spawn(north.run(), "north")
    gw.spawn(flex.run(), "flex")
    gw.spawn(_sample_outbox(market), "outbox-metrics")
    _instrument(gw, market)
    return market


async def _reload_access(
    access: AccessService, loaded: LoadedConfig
) -> Callable[[], Awaitable[None]]:
    """The access endpoint on a reloaded config: its DERs and points, the re-read keys and
    trusted peers (the replay guard keeps the ids it has seen)."""
    north = loaded.gateway.north
    if north is None:
        raise ValueError("north: removed; only a restart applies it")
    signing = north.resolved(loaded.source.parent).signing
    opener, sealer = access_security(signing, north.identity, north.server.max_statements)
    if isinstance(access.opener, InboundSecurity) and opener.replay is not None:
        old = access.opener.replay
        if old is not None and old.window == opener.replay.window:
            opener.replay = old

    async def commit() -> None:
        access.config = loaded
        access.opener, access.sealer = opener, sealer

    return commit


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


def _instrument(gw: MarketHost, market: Market) -> None:
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

    def inbound() -> list[tuple[tuple[str, ...], float]]:
        pipeline = market.north.pipeline
        return [((r,), float(n)) for r, n in (pipeline.counts if pipeline else {}).items()]

    gw.metrics.callback(
        "mgms_inbound_messages_total",
        "Messages from the AMS answered, by reason (accepted, repeat, or why refused).",
        "counter",
        inbound,
        ("reason",),
    )
    if market.north.config.transport == "mqtt":

        def connected() -> list[tuple[tuple[str, ...], float]]:
            mqtt = market.north.mqtt
            return [((), float(mqtt is not None and mqtt.connected.is_set()))]

        gw.metrics.callback(
            "mgms_mqtt_connected", "1 while the session with the broker is up.", "gauge", connected
        )

    def outbox_ready() -> CheckResult:
        oldest = market.outbox.oldest_age_s if market.outbox else None
        if oldest is not None and oldest > OUTBOX_MAX_AGE_S:
            return CheckResult(False, f"oldest undelivered message is {oldest:.0f} s old")
        return CheckResult(True, f"{market.outbox.pending if market.outbox else 0} pending")

    gw.health.add_readiness("outbox", outbox_ready)
