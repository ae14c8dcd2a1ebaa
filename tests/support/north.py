"""Northbound test parts: a gateway `North` with the real flexibility service behind it (on
the simulated test microgrid, at the real time) and an AMS simulator on loopback over the
test PKI, and the messages of a CRP cycle."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.config import FlexSettings
from gateway.flex.bridge import FlexReserveHandler, NorthPublisher
from gateway.flex.conflict import band_margin
from gateway.flex.model import ActivationRecord
from gateway.flex.records import LABEL, FlexRecords, RecordTables
from gateway.flex.service import FlexService
from gateway.north.ams_sim import AmsSimConfig, AmsSimulator
from gateway.north.certs import GATEWAY_IDENTITY, SIGNERS, dev_north_config
from gateway.north.config import (
    MqttConfig,
    NorthConfig,
    RetryPolicy,
    Timeouts,
    TlsFiles,
)
from gateway.north.service import North
from gateway.north.wire import TURTLE, Channel
from gateway.smartapi.codec import media_format, serialize
from gateway.smartapi.encode import to_tree
from gateway.smartapi.flexibility import (
    FlexibilityForecast,
    ForecastInterval,
    ReserveActivation,
    ReserveNotification,
    ReserveVerification,
    VerificationInterval,
)
from gateway.smartapi.messages import Message, new_message_id
from gateway.smartapi.security.keys import Identity
from gateway.smartapi.security.profile import OutboundSecurity
from gateway.smartapi.tree import Node
from gateway.sqlite import read_only
from tests.support.flexsim import Bench, BenchClock
from tests.support.pki import PkiFiles
from tests.support.waiting import until

MICROGRID = "demo-microgrid"
STEP = timedelta(minutes=15)
#: fast retries for tests; the one-hour floor of give_up_after_s still holds
FAST_RETRY = RetryPolicy(initial_s=0.05, max_s=0.2)


def interval_start(now: datetime | None = None) -> datetime:
    """The start of the current 15-minute interval."""
    now = now or datetime.now(UTC)
    return now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)


def forecast(
    *, intervals: int = 8, start: datetime | None = None, microgrid: str = MICROGRID
) -> FlexibilityForecast:
    """Baseline import 40 kW, adjustable 10..70 kW; Q 5 kvar within -20..30."""
    return FlexibilityForecast(
        id=new_message_id(),
        sender=GATEWAY_IDENTITY,
        generated_at=datetime.now(UTC),
        microgrid=microgrid,
        start=start or interval_start(),
        step=STEP,
        intervals=tuple(
            ForecastInterval(
                p_kw=40.0,
                p_min_kw=10.0,
                p_max_kw=70.0,
                q_kvar=5.0,
                q_min_kvar=-20.0,
                q_max_kvar=30.0,
            )
            for _ in range(intervals)
        ),
    )


def verification(activation_id: str, *, start: datetime | None = None) -> ReserveVerification:
    return ReserveVerification(
        id=new_message_id(),
        sender=GATEWAY_IDENTITY,
        generated_at=datetime.now(UTC),
        microgrid=MICROGRID,
        start=start or interval_start(),
        step=STEP,
        activation=activation_id,
        intervals=(
            VerificationInterval(
                p_set_kw=25.0,
                p_baseline_kw=40.0,
                p_measured_kw=26.0,
                p_delivered_kw=-14.0,
                p_percent=93.3,
            ),
        ),
    )


def tls_files(pki: PkiFiles, party: str) -> TlsFiles:
    cert, key = pki.pair(party)
    return TlsFiles(ca=(pki.ca,), cert=cert, key=key)


def gateway_config(
    pki: PkiFiles,
    *,
    ams_port: int,
    port: int = 0,
    mqtt: MqttConfig | None = None,
    retry: RetryPolicy = FAST_RETRY,
    max_body_bytes: int = 256 * 1024,
    max_statements: int | None = None,
) -> NorthConfig:
    config = dev_north_config(
        pki.dev.directory,
        ams_url=f"https://127.0.0.1:{ams_port}",
        port=port,
        mqtt=mqtt,
        outbox=retry,
    )
    assert config.ams is not None
    return config.model_copy(
        update={
            "server": config.server.model_copy(
                update={
                    "max_body_bytes": max_body_bytes,
                    "max_statements": max_statements or config.server.max_statements,
                }
            ),
            "ams": config.ams.model_copy(
                update={"timeouts": Timeouts(connect_s=2, read_s=5, total_s=10)}
            ),
        }
    )


class Flexibility:
    """The gateway's flexibility service on the simulated test microgrid, its clock kept at
    the real time (the AMS's messages carry real times): the real `FlexReserveHandler`
    decides what the AMS sends, its forecasts go out through North. Records in
    `state_dir/flex.sqlite`, so a restarted gateway finds what was accepted."""

    def __init__(self, state_dir: Path, horizon_h: float = 1.0) -> None:
        self.bench = Bench(datetime.now(UTC), sample_s=60.0)
        self.bench.config.gateway.flex = FlexSettings(
            interval_s=900, control_cycle_s=120, horizon_h=horizon_h, history_days=1
        )
        state_dir.mkdir(parents=True, exist_ok=True)
        self.records = FlexRecords(state_dir / "flex.sqlite")
        self.north: North | None = None
        #: ids of the messages the service published that the outbox took as new
        self.published: list[str] = []
        #: the service's latest forecast as a Smart API message
        self.last_forecast: FlexibilityForecast | None = None
        b = self.bench
        publisher = NorthPublisher(self._send, GATEWAY_IDENTITY, MICROGRID, b.now)
        self.service = FlexService(
            b.config, b.table, b.controller, self.records, publisher, b.history, BenchClock(b)
        )
        self.handler = FlexReserveHandler(self.service)

    async def _send(self, message: FlexibilityForecast | ReserveVerification) -> bool:
        if isinstance(message, FlexibilityForecast):
            self.last_forecast = message
        if self.north is None:  # in-process tests: nothing goes out
            return False
        fresh = await self.north.send(message)
        if fresh:
            self.published.append(message.id)
        return fresh

    def catch_up(self) -> None:
        """Move the simulated time to the real time."""
        lag = (datetime.now(UTC) - self.bench.now()).total_seconds()
        if lag > 0:
            self.bench.advance(lag, step=10.0)

    async def publish_forecast(self) -> FlexibilityForecast:
        """The service plans now and sends its Flexibility Forecast to the AMS."""
        self.catch_up()
        await self.service.forecast()
        assert self.last_forecast is not None
        return self.last_forecast

    def activation(self, activation_id: str) -> ActivationRecord | None:
        """The activation as the flexibility records hold it (accepted or refused)."""
        with read_only(self.records.path, LABEL) as db:
            return RecordTables(db).activation(activation_id)

    def accepted_activations(self) -> list[str]:
        """Ids of the activations the service accepted, in the order received."""
        with read_only(self.records.path, LABEL) as db:
            sql = "SELECT id FROM flex_activation WHERE status != 'refused' ORDER BY received_at"
            return [i for (i,) in db.execute(sql)]


def activation_on_plan(
    flex: Flexibility,
    ams: AmsSimulator,
    notification: ReserveNotification,
    forecast: FlexibilityForecast,
    fraction: float,
) -> ReserveActivation:
    """`fraction` of the reserved down band below the gateway's baseline now. Accepting a
    reservation replans how the DERs hold its bands, which may move the baseline off the
    forecast's (by tens of kW at some hours of the simulated day): an activation built on
    the forecast alone can then lie outside the band and be refused."""
    a = ams.activation_for(notification, forecast, fraction=fraction)
    plan = flex.service.plan
    assert plan is not None
    i = plan.horizon.index(a.start)
    assert i is not None
    k = int((a.start - notification.start) / notification.step)
    base = float(plan.pcc_p[i])
    return dataclasses.replace(a, p_kw=base - fraction * notification.intervals[k].p_lower_kw)


def fraction_beyond_band(notification: ReserveNotification) -> float:
    """A share of the first interval's reserved down band far enough past it that the
    gateway refuses the activation instead of following at the band's edge: the margin it
    follows within is a share of the band's whole width, so it moves with the up band."""
    band = notification.intervals[0]
    margin = band_margin(0.0, band.p_lower_kw + band.p_raise_kw)
    return 1.0 + (margin + 1.0) / band.p_lower_kw


async def offered(flex: Flexibility, ams: AmsSimulator) -> FlexibilityForecast:
    """The flexibility service's forecast, as the AMS received it."""
    seen = len(ams.messages(Channel.FORECAST))
    await flex.publish_forecast()
    got = await asyncio.wait_for(ams.next_message(Channel.FORECAST, after=seen), 10)
    assert isinstance(got, FlexibilityForecast)
    return got


@contextlib.asynccontextmanager
async def flexibility(state_dir: Path, horizon_h: float = 1.0) -> AsyncIterator[Flexibility]:
    flex = Flexibility(state_dir, horizon_h)
    async with flex.records:
        await flex.service.start()
        yield flex


@contextlib.asynccontextmanager
async def running_gateway(
    config: NorthConfig, state_dir: Path, flex: Flexibility | None = None, **kwargs: Any
) -> AsyncIterator[North]:
    """North serving and delivering; with `flex`, its reserve handler is the flexibility
    service's and the service publishes through it."""
    if flex is not None:
        kwargs["handler"] = flex.handler
    async with North(config, microgrid=MICROGRID, state_dir=state_dir, **kwargs) as north:
        if flex is not None:
            flex.north = north
        task = asyncio.create_task(north.run())
        try:
            async with asyncio.timeout(10):
                await north.started()
            yield north
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def running_ams(
    pki: PkiFiles,
    state_dir: Path,
    *,
    gateway_port: int | None,
    port: int = 0,
    mqtt: MqttConfig | None = None,
    replay_window_s: float | None = None,
) -> AsyncIterator[AmsSimulator]:
    """`replay_window_s`: how old a message the AMS still takes (default: a day and more)."""
    url = f"https://127.0.0.1:{gateway_port}" if gateway_port else None
    config = AmsSimConfig.dev(
        pki.dev.directory,
        microgrid=MICROGRID,
        state_dir=state_dir,
        gateway_url=url,
        port=port,
        mqtt=mqtt,
    )
    if replay_window_s is not None:
        signing = config.signing.model_copy(update={"replay_window_s": replay_window_s})
        config = dataclasses.replace(config, signing=signing)
    async with AmsSimulator(config) as ams:
        task = asyncio.create_task(ams.run())
        try:
            async with asyncio.timeout(10):
                await ams.ready()
            yield ams
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def drained(north: North, within: float = 10.0) -> None:
    """Until the outbox has nothing pending (the peer's receipt precedes our bookkeeping)."""

    async def empty() -> bool:
        return (await north.outbox.stats()).pending == 0

    await until(empty, within=within)


def signed(
    pki: PkiFiles,
    party: str,
    message: Message,
    *,
    content_type: str = TURTLE,
    drop: str | None = None,
) -> bytes:
    """`message` as `party` (gateway, ams, operator) would send it, signed with its key;
    `drop` removes every triple with that predicate IRI before signing (a well-signed
    message that breaks the shapes)."""
    key_id, sender, _ = SIGNERS[party]
    roots = to_tree(message)  # type: ignore[arg-type]
    if drop is not None:
        stack: list[object] = list(roots)
        while stack:
            node = stack.pop()
            if isinstance(node, Node):
                node.props = [(p, o) for p, o in node.props if p != drop]
                stack.extend(o for _, o in node.props)
    sealer = OutboundSecurity(Identity.from_file(key_id, sender, pki.dev[f"{party}-signing"]))
    return serialize(sealer.seal(roots), media_format(content_type))
