"""Northbound faults: the AMS away for a simulated day (and misbehaving on the wire), the
MQTT broker killed under traffic, TLS failures of every kind in both directions. Nothing
is lost, nothing is applied twice, every error names its cause.

`make test` runs the quick form (a 26-hour outage, 3 broker kills); `MGMS_LONG_FAULTS=1`
the long one (a 3-day outage, 10 broker kills, more traffic)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from gateway.config import FlexSettings
from gateway.market import Market, _instrument
from gateway.north.ams_sim import AmsSimulator
from gateway.north.config import RetryPolicy, Timeouts
from gateway.north.service import North
from gateway.north.tls import server_context
from gateway.north.tls import client_context
from gateway.north.wire import Channel
from gateway.ops.health import Health
from gateway.ops.metrics import Registry
from gateway.smartapi import flexibility as sa
from tests.faults.field import LONG
from tests.faults.northsim import BadAms, CrpDay, Misbehaviour, SimOutboxClock
from tests.support import north as support
from tests.support.flexsim import Bench
from tests.support.pki import PkiFiles, make_test_pki
from tests.support.procs import free_port
from tests.support.waiting import until

pytestmark = pytest.mark.integration

#: the AMS is away this long (simulated); the gateway restarts half way
OUTAGE = timedelta(days=3) if LONG else timedelta(hours=26)
DAY_TIMEOUT = pytest.mark.timeout(1800 if LONG else 300)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def figures(name: str, **values: object) -> None:
    """One JSON line of figures for the report (shown with `pytest -s`)."""
    print(json.dumps({"test": name, **values}))


class Ams:
    """The real AMS simulator on a fixed port, stopped and started at will; what it
    received over all its runs."""

    def __init__(self, pki: PkiFiles, state_dir: Path, port: int, window_s: float) -> None:
        self.pki = pki
        self.state_dir = state_dir
        self.port = port
        self.window_s = window_s
        self.received: dict[Channel, list[str]] = {Channel.FORECAST: [], Channel.VERIFICATION: []}
        self.repeats = 0
        self._ams: AmsSimulator | None = None
        self._stack = contextlib.AsyncExitStack()

    async def start(self) -> None:
        self._ams = await self._stack.enter_async_context(
            support.running_ams(
                self.pki,
                self.state_dir,
                gateway_port=None,
                port=self.port,
                replay_window_s=self.window_s,  # messages delivered days late are still fresh
            )
        )

    async def stop(self) -> None:
        assert self._ams is not None and self._ams.pipeline is not None
        self.repeats += self._ams.pipeline.counts["repeat"]
        await self._stack.aclose()
        self._ams = None

    def collect(self) -> dict[Channel, list[str]]:
        """Everything received, this run included."""
        out = {c: list(ids) for c, ids in self.received.items()}
        if self._ams is not None:
            for channel in out:
                out[channel] += [m.id for m in self._ams.messages(channel)]
        return out

    async def stop_and_keep(self) -> None:
        got = self.collect()
        await self.stop()
        self.received = got

    async def aclose(self) -> None:
        await self._stack.aclose()


@DAY_TIMEOUT
async def test_a_day_without_the_ams_loses_nothing(pki: PkiFiles, tmp_path: Path) -> None:
    """A simulated day and more of forecasts and verifications from the flexibility service
    while the AMS is unreachable, with a gateway restart in the middle: when the AMS is
    back, each message arrives once, in order per channel, and the outbox's depth, age and
    readiness show the outage and the recovery."""
    real_now = datetime.now(UTC).replace(second=0, microsecond=0)
    # simulated time runs around the real now, so the AMS's freshness check holds
    start = real_now - OUTAGE / 2 - timedelta(minutes=30)
    start = start.replace(minute=start.minute - start.minute % 15) + timedelta(minutes=1)
    bench = Bench(start, sample_s=60.0)
    bench.config.gateway.flex = FlexSettings(
        interval_s=900, control_cycle_s=60, horizon_h=4, history_days=1
    )
    clock = SimOutboxClock(bench)
    gw_port, ams_port = free_port(), free_port()
    policy = RetryPolicy(give_up_after_s=OUTAGE.total_seconds() + 2 * 86400)  # backoff 1..60 s
    config = support.gateway_config(pki, ams_port=ams_port, port=gw_port, retry=policy)
    ams = Ams(pki, tmp_path / "ams", ams_port, window_s=OUTAGE.total_seconds() * 2)
    north: North | None = None

    async def send(message: sa.FlexibilityForecast | sa.ReserveVerification) -> bool:
        assert north is not None
        return await north.send(message)

    day = CrpDay(bench, tmp_path / "gw", send)
    ops = SimpleNamespace(metrics=Registry(), health=Health())
    try:
        await ams.start()
        async with support.running_gateway(
            config, tmp_path / "gw", handler=day.handler, outbox_clock=clock
        ) as north:
            market = Market(north, day.service)
            _instrument(ops, market)  # type: ignore[arg-type]
            await day.start()
            await day.run_until(start + timedelta(minutes=30), clock.tick)
            await support.drained(north)
            before = sum(len(v) for v in day.produced.values())
            assert before >= 2
            await ams.stop_and_keep()
            outage_from = bench.now()
            await day.run_until(outage_from + OUTAGE / 2, clock.tick)
            await day.quiesce(clock.tick)  # restart between two CRP cycles
            mid = await north.outbox.stats()
        assert mid.pending > 0 and mid.delivered == before
        await day.restart()
        async with support.running_gateway(
            config, tmp_path / "gw", handler=day.handler, outbox_clock=clock
        ) as north:
            market.north, market.flex = north, day.service
            await day.run_until(outage_from + OUTAGE, clock.tick)
            market.outbox = down = await north.outbox.stats()
            metrics = ops.metrics.render()
            ready = ops.health.ready()
            produced = sum(len(v) for v in day.produced.values())
            assert down.pending == produced - before
            assert down.expired == 0
            assert f"mgms_outbox_depth {down.pending}" in metrics
            assert down.oldest_age_s is not None
            assert down.oldest_age_s >= OUTAGE.total_seconds() - 900
            assert not ready.ok and "outbox: oldest undelivered message" in ready.failing()
            for head in down.destinations.values():
                assert head.head_attempts > 100  # it kept trying, at the capped backoff
                assert f"127.0.0.1:{ams_port}" in (head.last_error or "")
                assert "Connect call failed" in (head.last_error or "")

            await ams.start()
            back = time.perf_counter()
            # forecasts keep coming while the backlog drains
            await day.run_until(bench.now() + timedelta(minutes=30), clock.tick)

            async def empty() -> bool:
                bench.advance(5.0, step=5.0)
                clock.tick()
                return (await north.outbox.stats()).pending == 0

            await until(empty, within=120, step=0.01)
            drain_s = time.perf_counter() - back
            market.outbox = after = await north.outbox.stats()
            assert ops.health.ready().ok
            assert "mgms_outbox_depth 0" in ops.metrics.render()
            assert "mgms_outbox_oldest_age_seconds 0" in ops.metrics.render()
            await ams.stop_and_keep()
    finally:
        day.close()
        await ams.aclose()
    received = ams.received
    for channel in (Channel.FORECAST, Channel.VERIFICATION):
        assert received[channel] == day.produced[channel], channel  # all, once, in order
    assert ams.repeats == 0
    assert after.delivered == sum(len(v) for v in day.produced.values())
    assert day.activations >= OUTAGE / timedelta(hours=1), day.refusals
    backlog = down.pending
    figures(
        "ams-outage",
        simulated_outage_h=OUTAGE.total_seconds() / 3600,
        gateway_restarts=1,
        forecasts=len(day.produced[Channel.FORECAST]),
        verifications=len(day.produced[Channel.VERIFICATION]),
        activations=day.activations,
        backlog=backlog,
        delivered=after.delivered,
        lost=0,
        duplicated=ams.repeats,
        drain_s=round(drain_s, 2),
        drain_per_s=round(backlog / drain_s, 1),
        head_attempts={d: s.head_attempts for d, s in down.destinations.items()},
    )


#: what the outbox's last error must say about each misbehaving AMS
MISBEHAVIOURS = {
    Misbehaviour.UNAVAILABLE: "answered HTTP 503: the AMS is in maintenance",
    Misbehaviour.SILENT_TCP: "no connection and TLS handshake within 0.5 s",
    Misbehaviour.SILENT_TLS: "no answer within 0.5 s",
    Misbehaviour.RESET: "the connection broke in the middle of the answer",
    Misbehaviour.PLAIN_HTTP: "does not speak TLS (it answered in plain text)",
}


async def test_an_ams_that_misbehaves_on_the_wire_gets_everything_later(
    pki: PkiFiles, tmp_path: Path
) -> None:
    """The AMS's port answers 503, hangs before or after the TLS handshake, resets in the
    middle of an answer, or speaks plain HTTP: the outbox's last error says which, every
    message stays queued, and the real AMS gets them all once, in order."""
    gw_port, ams_port = free_port(), free_port()
    config = support.gateway_config(pki, ams_port=ams_port, port=gw_port)
    assert config.ams is not None
    short = Timeouts(connect_s=0.5, read_s=0.5, total_s=3)
    config = config.model_copy(update={"ams": config.ams.model_copy(update={"timeouts": short})})
    server_ctx = server_context(support.tls_files(pki, "ams"))
    sent: list[str] = []
    errors: dict[str, str] = {}
    async with support.running_gateway(config, tmp_path / "gw") as north:
        for how, expected in MISBEHAVIOURS.items():
            async with BadAms(ams_port, how, server_ctx) as bad:
                f = support.forecast()
                assert await north.send(f)
                sent.append(f.id)
                seen = (await north.outbox.stats()).destinations["forecast"].head_attempts

                async def tried_twice() -> bool:
                    head = (await north.outbox.stats()).destinations["forecast"]
                    return head.head_attempts >= seen + 2 and bad.connections >= 2

                await until(tried_twice, within=30)
            stats = await north.outbox.stats()
            error = stats.destinations["forecast"].last_error or ""
            errors[how.value] = error
            assert stats.pending == len(sent)
        async with support.running_ams(
            pki, tmp_path / "ams", gateway_port=gw_port, port=ams_port
        ) as ams:
            north.outbox.kick()
            await support.drained(north)
            assert [m.id for m in ams.messages(Channel.FORECAST)] == sent
            assert ams.pipeline is not None and ams.pipeline.counts["repeat"] == 0
    figures("ams-misbehaving", errors=errors)
    for how, expected in MISBEHAVIOURS.items():
        assert expected in errors[how.value], (how, errors[how.value])
        assert "Traceback" not in errors[how.value]
