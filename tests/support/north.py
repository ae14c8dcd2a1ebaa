"""Northbound test parts: a gateway `North` and an AMS simulator on loopback over the test
PKI, and the messages of a CRP cycle."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

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
from gateway.north.wire import TURTLE
from gateway.smartapi.codec import media_format, serialize
from gateway.smartapi.encode import to_tree
from gateway.smartapi.flexibility import (
    FlexibilityForecast,
    ForecastInterval,
    ReserveVerification,
    VerificationInterval,
)
from gateway.smartapi.messages import Message, new_message_id
from gateway.smartapi.security.keys import Identity
from gateway.smartapi.security.profile import OutboundSecurity
from gateway.smartapi.tree import Node
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


@contextlib.asynccontextmanager
async def running_gateway(
    config: NorthConfig, state_dir: Path, **kwargs: Any
) -> AsyncIterator[North]:
    async with North(config, microgrid=MICROGRID, state_dir=state_dir, **kwargs) as north:
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
