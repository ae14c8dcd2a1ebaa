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
import signal
import socket
import ssl
import subprocess
import time
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest

from fwsim.broker import MOSQUITTO, BrokerFiles
from fwsim.broker import mosquitto as run_mosquitto
from gateway.config import FlexSettings
from gateway.errors import DeliveryError
from gateway.flex.bridge import FlexReserveHandler
from gateway.market import Market, _instrument
from gateway.north.ams_sim import AmsSimulator
from gateway.north.config import MqttConfig, RetryPolicy, Timeouts, TlsFiles
from gateway.north.service import North
from gateway.north.tls import client_context, server_context
from gateway.north.wire import Channel
from gateway.ops.health import Health
from gateway.ops.metrics import Registry
from gateway.smartapi import flexibility as sa
from tests.faults.field import LONG
from tests.faults.northsim import CONTROL_CYCLE_S, BadAms, CrpDay, Misbehaviour, SimOutboxClock
from tests.support import north as support
from tests.support.flexsim import Bench
from tests.support.mosquitto import Broker, mosquitto
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
        """Stop the simulator, keeping what it received."""
        assert self._ams is not None and self._ams.pipeline is not None
        for channel, ids in self.received.items():
            ids += [m.id for m in self._ams.messages(channel)]
        self.repeats += self._ams.pipeline.counts["repeat"]
        await self._stack.aclose()
        self._ams = None

    async def aclose(self) -> None:
        await self._stack.aclose()


@DAY_TIMEOUT
async def test_a_day_without_the_ams_loses_nothing(
    pki: PkiFiles, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A simulated day and more of forecasts and verifications from the flexibility service
    while the AMS is unreachable, with a gateway restart in the middle: when the AMS is
    back, each message arrives once, in order per channel, and the outbox's depth, age and
    readiness show the outage and the recovery."""
    caplog.set_level(logging.INFO, logger="gateway.north.outbox")
    real_now = datetime.now(UTC).replace(second=0, microsecond=0)
    # simulated time runs around the real now, so the AMS's freshness check holds
    start = real_now - OUTAGE / 2 - timedelta(minutes=30)
    start = start.replace(minute=start.minute - start.minute % 15) + timedelta(minutes=1)
    bench = Bench(start, sample_s=60.0)
    bench.config.gateway.flex = FlexSettings(
        interval_s=900, control_cycle_s=CONTROL_CYCLE_S, horizon_h=4, history_days=1
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
            await ams.stop()
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
            await ams.stop()
    finally:
        await day.close()
        await ams.aclose()
    outbox_log = [r for r in caplog.records if r.name == "gateway.north.outbox"]
    failures = [r for r in outbox_log if r.levelno >= logging.WARNING]
    back = [r.getMessage() for r in outbox_log if "reachable again" in r.getMessage()]
    # thousands of failed attempts, logged when they start (per destination and run)
    assert len(failures) <= 8, [r.getMessage() for r in failures]
    assert sorted(m.split()[1] for m in back) == ["forecast", "verification"], back
    received = ams.received
    for channel in (Channel.FORECAST, Channel.VERIFICATION):
        assert received[channel] == day.produced[channel], channel  # all, once, in order
    # a delivery whose answer came too late is sent again: the AMS's ledger answers it as a
    # repeat and records it once (reported, not an error)
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
        duplicated=0,
        resent_and_deduplicated_by_ams=ams.repeats,
        drain_s=round(drain_s, 2),
        drain_per_s=round(backlog / drain_s, 1),
        head_attempts={d: s.head_attempts for d, s in down.destinations.items()},
        outbox_warnings=len(failures),
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
        for how in MISBEHAVIOURS:
            async with BadAms(ams_port, how, server_ctx) as bad:
                f = support.forecast()
                assert await north.send(f)
                sent.append(f.id)
                seen = (await north.outbox.stats()).destinations["forecast"].head_attempts

                async def tried_twice(seen: int = seen, bad: BadAms = bad) -> bool:
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
            assert ams.pipeline is not None
            repeats = ams.pipeline.counts["repeat"]  # an answer later than the read timeout
    figures("ams-misbehaving", errors=errors, resent_and_deduplicated_by_ams=repeats)
    for how, expected in MISBEHAVIOURS.items():
        assert expected in errors[how.value], (how, errors[how.value])
        assert "Traceback" not in errors[how.value]


BROKER_KILLS = 10 if LONG else 3
#: per broker kill: forecasts and verifications the gateway sends, requests the AMS sends
OUTBOUND_PER_KILL, INBOUND_PER_KILL = (20, 4) if LONG else (10, 3)


class CountingHandler:
    """The flexibility service's reserve handler, counting how often each message is
    applied."""

    def __init__(self, handler: FlexReserveHandler) -> None:
        self.handler = handler
        self.applied: Counter[str] = Counter()

    async def check_notification(self, n: sa.ReserveNotification) -> None:
        await self.handler.check_notification(n)

    async def apply_notification(self, n: sa.ReserveNotification) -> None:
        self.applied[n.id] += 1
        await self.handler.apply_notification(n)

    async def check_activation(self, a: sa.ReserveActivation) -> None:
        await self.handler.check_activation(a)

    async def apply_activation(self, a: sa.ReserveActivation) -> None:
        self.applied[a.id] += 1
        await self.handler.apply_activation(a)


async def until_answered(
    ams: AmsSimulator, message: sa.ReserveNotification | sa.ReserveActivation
) -> int:
    """Send over MQTT until the gateway answers 200, as an AMS would; the attempts."""
    attempts = 0
    while True:
        attempts += 1
        try:
            sent = await ams.send(message, via="mqtt")
        except DeliveryError:
            await asyncio.sleep(0.1)
            continue
        assert sent.answer.status == 200, sent.answer.body.decode()
        return attempts


def kill(broker: Broker) -> None:
    broker.proc.send_signal(signal.SIGKILL)
    broker.proc.wait(10)


async def test_broker_killed_under_traffic_loses_nothing(
    pki: PkiFiles, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """mosquitto SIGKILLed and restarted again and again while the gateway publishes
    forecasts and verifications and the AMS sends notifications and activations: each
    message arrives and is applied once, the gateway reconnects every time and logs each
    loss and each return once."""
    caplog.set_level(logging.INFO, logger="gateway.north.mqtt")
    stack = contextlib.ExitStack()
    broker = stack.enter_context(mosquitto(tmp_path / "broker", pki))
    mqtt = MqttConfig(
        host=broker.host, port=broker.port, connect_timeout_s=2, keepalive_s=5, answer_timeout_s=2
    )
    config = support.gateway_config(pki, ams_port=free_port(), mqtt=mqtt)
    sent: dict[Channel, list[str]] = {Channel.FORECAST: [], Channel.VERIFICATION: []}
    inbound: list[str] = []
    retried = 0
    client_id = f"mgms-{support.MICROGRID}"
    with stack:
        async with (
            support.flexibility(tmp_path / "gw") as flex,
            support.running_ams(pki, tmp_path / "ams", gateway_port=None, mqtt=mqtt) as ams,
        ):
            counting = CountingHandler(flex.handler)
            async with support.running_gateway(config, tmp_path / "gw", handler=counting) as north:
                flex.north = north
                assert north.mqtt is not None and ams.mqtt is not None
                async with asyncio.timeout(10):
                    await north.mqtt.connected.wait()

                async def gateway_traffic() -> None:
                    for _ in range(OUTBOUND_PER_KILL * (BROKER_KILLS + 1)):
                        f = support.forecast()
                        v = support.verification(f"act-{f.id}")
                        for m, channel in ((f, Channel.FORECAST), (v, Channel.VERIFICATION)):
                            assert await north.send(m)
                            sent[channel].append(m.id)
                        await asyncio.sleep(0.03)

                async def ams_traffic() -> None:
                    nonlocal retried
                    forecast = await support.offered(flex, ams)
                    # small reservations that all fit; every activation is of the first
                    # (a newer activation of a reservation supersedes the running one,
                    # one of another reservation would conflict with it)
                    first = ams.notification_for(forecast, share=0.5, intervals=2)
                    retried += await until_answered(ams, first) - 1
                    inbound.append(first.id)
                    for _ in range(INBOUND_PER_KILL * (BROKER_KILLS + 1)):
                        n = ams.notification_for(forecast, share=0.02, intervals=2)
                        retried += await until_answered(ams, n) - 1
                        inbound.append(n.id)
                        # on the baseline the accepted notifications left
                        a = support.activation_on_plan(flex, ams, first, forecast, 0.5)
                        retried += await until_answered(ams, a) - 1
                        inbound.append(a.id)
                        await asyncio.sleep(0.1)

                traffic = [
                    asyncio.create_task(gateway_traffic()),
                    asyncio.create_task(ams_traffic()),
                ]
                try:
                    for _ in range(BROKER_KILLS):
                        await asyncio.sleep(0.6)
                        kill(broker)
                        await until(lambda: not north.mqtt.connected.is_set(), within=15)
                        await asyncio.sleep(0.2)
                        broker = stack.enter_context(
                            mosquitto(broker.directory, pki, port=broker.port)
                        )
                        await until(
                            lambda: north.mqtt.connected.is_set() and ams.mqtt.connected.is_set(),
                            within=30,
                        )
                    async with asyncio.timeout(120):
                        await asyncio.gather(*traffic)
                finally:
                    for t in traffic:
                        t.cancel()
                    await asyncio.gather(*traffic, return_exceptions=True)
                north.outbox.kick()
                await support.drained(north, within=60)
                stats = await north.stats()
            received = {c: [m.id for m in ams.messages(c)] for c in sent}
            assert ams.pipeline is not None
            ams_repeats = ams.pipeline.counts["repeat"]
    for channel, ids in sent.items():
        got = received[channel]
        assert len(got) == len(set(got)), channel  # each once
        assert [i for i in got if i not in flex.published] == ids, channel  # in order
    assert set(flex.published) <= set(received[Channel.FORECAST] + received[Channel.VERIFICATION])
    assert set(counting.applied) == set(inbound)
    assert max(counting.applied.values()) == 1  # none applied twice
    total = sum(map(len, sent.values())) + len(flex.published)
    assert stats.outbox.delivered == total and stats.outbox.pending == 0
    ours = [r.getMessage() for r in caplog.records if client_id in r.getMessage()]
    lost = [m for m in ours if " lost: " in m]
    restored = [m for m in ours if " restored after " in m]
    assert len(lost) == BROKER_KILLS, ours
    assert len(restored) == BROKER_KILLS, ours
    figures(
        "broker-kills",
        broker_kills=BROKER_KILLS,
        outbound=sum(map(len, sent.values())),
        inbound=len(inbound),
        inbound_resent_by_ams=retried,
        redelivered_to_ams=ams_repeats,
        lost=0,
        applied_twice=0,
        reconnects=len(restored),
    )


# -- TLS failures ------------------------------------------------------------------------------

NOW = datetime.now(UTC)
#: a bad certificate (issue() arguments; None: from a CA nobody trusts) and what the
#: party that checks it must say
BAD_CERTS: dict[str, tuple[dict[str, object] | None, str]] = {
    "expired": (
        {"not_before": NOW - timedelta(days=30), "days": -1},
        "certificate has expired",
    ),
    "not-yet-valid": (
        {"not_before": NOW + timedelta(days=1), "days": 30},
        "certificate is not yet valid",
    ),
    "untrusted-ca": (None, "certificate is not signed by a CA we trust"),
    "wrong-host": ({"hosts": ["ams.elsewhere.example"]}, "not valid for '127.0.0.1'"),
}


def bad_pair(pki: PkiFiles, case: str, common_name: str) -> tuple[Path, Path]:
    kwargs, _ = BAD_CERTS[case]
    if kwargs is None:
        return pki.stranger
    return pki.issue(f"{common_name}-{case}", common_name, **kwargs)  # type: ignore[arg-type]


def tls_files(pair: tuple[Path, Path], pki: PkiFiles) -> TlsFiles:
    return TlsFiles(ca=(pki.ca,), cert=pair[0], key=pair[1])


@contextlib.asynccontextmanager
async def tls_listener(port: int, ctx: ssl.SSLContext | None) -> AsyncIterator[None]:
    """A server on `port` that completes a TLS handshake with `ctx` (or speaks plain
    text) and closes."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            await reader.read(1024)
        writer.transport.abort()

    server = await asyncio.start_server(serve, "127.0.0.1", port, ssl=ctx)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


@contextlib.contextmanager
def legacy_tls_server(pki: PkiFiles, port: int) -> Iterator[None]:
    """OpenSSL's own test server speaking TLS 1.1 at most (an AMS that was never updated)."""
    cert, key = pki.pair("ams")
    proc = subprocess.Popen(
        [
            *("openssl", "s_server", "-quiet", "-accept", f"127.0.0.1:{port}"),
            *("-cert", str(cert), "-key", str(key), "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port)
        yield
    finally:
        proc.kill()
        proc.wait(10)
        assert proc.stdin is not None
        proc.stdin.close()


async def last_error_after_attempts(north: North, destination: str, seen: int) -> str:
    async def tried() -> bool:
        head = (await north.outbox.stats()).destinations.get(destination)
        return head is not None and head.head_attempts >= seen + 2

    await until(tried, within=30)
    head = (await north.outbox.stats()).destinations[destination]
    return head.last_error or ""


async def test_gateway_names_what_is_wrong_with_the_ams_tls(pki: PkiFiles, tmp_path: Path) -> None:
    """The AMS's port presents an expired, not yet valid, untrusted or wrongly named
    certificate, or speaks TLS 1.1 only: the outbox's last error names the cause, the
    messages wait, and the real AMS gets them all later, in order."""
    gw_port, ams_port = free_port(), free_port()
    config = support.gateway_config(pki, ams_port=ams_port, port=gw_port)
    expected = {case: text for case, (_, text) in BAD_CERTS.items()}
    expected["tls-1.1"] = "the peer refused the TLS version (1.2 at least is required)"
    errors: dict[str, str] = {}
    sent: list[str] = []
    async with support.running_gateway(config, tmp_path / "gw") as north:
        for case in expected:
            f = support.forecast()
            await north.send(f)
            sent.append(f.id)
            seen = (await north.outbox.stats()).destinations["forecast"].head_attempts
            if case == "tls-1.1":
                with legacy_tls_server(pki, ams_port):
                    errors[case] = await last_error_after_attempts(north, "forecast", seen)
            else:
                ctx = server_context(tls_files(bad_pair(pki, case, "ams"), pki))
                async with tls_listener(ams_port, ctx):
                    errors[case] = await last_error_after_attempts(north, "forecast", seen)
        async with support.running_ams(
            pki, tmp_path / "ams", gateway_port=gw_port, port=ams_port
        ) as ams:
            north.outbox.kick()
            await support.drained(north)
            assert [m.id for m in ams.messages(Channel.FORECAST)] == sent
    figures("tls-ams-server", errors=errors)
    for case, text in expected.items():
        assert text in errors[case], (case, errors[case])
        assert "TLS" in errors[case] and "Traceback" not in errors[case]


async def test_gateway_with_a_bad_certificate_of_its_own(
    pki: PkiFiles, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Our own certificate expired or not yet valid: the gateway says so at start and in
    the outbox's last error (the AMS just closes the connection); the AMS logs why it
    refused us. Messages wait for a good certificate."""
    ams_port = free_port()
    errors: dict[str, str] = {}
    async with support.running_ams(pki, tmp_path / "ams", gateway_port=None, port=ams_port) as ams:
        for case in ("expired", "not-yet-valid"):
            cert, key = bad_pair(pki, case, "mgms-gateway")
            config = support.gateway_config(pki, ams_port=ams_port)
            config = config.model_copy(
                update={"tls": config.tls.model_copy(update={"cert": cert, "key": key})}
            )
            caplog.clear()
            async with support.running_gateway(config, tmp_path / case) as north:
                await north.send(support.forecast())
                errors[case] = await last_error_after_attempts(north, "forecast", 0)
                assert (await north.outbox.stats()).pending == 1
            started = [r.getMessage() for r in caplog.records if r.name == "gateway.north.service"]
            refused = [r.getMessage() for r in caplog.records if r.name == "gateway.north.server"]
            assert any(str(cert) in m for m in started), started
            _, text = BAD_CERTS[case]
            assert any(f"the client's {text}" in m for m in refused), refused
        assert ams.messages(Channel.FORECAST) == []
    figures("tls-own-cert", errors=errors)
    assert "expired on" in errors["expired"], errors
    assert "is not valid before" in errors["not-yet-valid"], errors


async def test_gateway_server_logs_why_a_client_was_refused(
    pki: PkiFiles, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Clients of the gateway's HTTPS server with an expired, not yet valid or untrusted
    certificate, none, TLS 1.1, or plain HTTP: refused in the handshake, the gateway logs
    why, nothing reaches the pipeline."""
    caplog.set_level(logging.WARNING, logger="gateway.north.server")
    gw_port = free_port()
    config = support.gateway_config(pki, ams_port=free_port(), port=gw_port)
    expected = {
        "expired": "the client's certificate has expired",
        "not-yet-valid": "the client's certificate is not yet valid",
        "untrusted-ca": "the client's certificate is not signed by a CA we trust",
        "no-certificate": "the client presented no certificate",
        "tls-1.1": "the peer offers only a TLS version below 1.2",
        "plain-http": "the peer sent plain HTTP to a TLS port",
    }
    url = f"https://127.0.0.1:{gw_port}{Channel.ACTIVATION.path}"
    client_errors: dict[str, str] = {}
    async with support.running_gateway(config, tmp_path / "gw") as north:
        for case in expected:
            caplog.clear()
            if case == "plain-http":
                ctx: ssl.SSLContext | bool = False
                target = url.replace("https://", "http://")
            else:
                target = url
                ctx = client_ssl(pki, case)
            try:
                async with (
                    aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session,
                    session.post(target, data=b"x", headers={"Content-Type": "text/turtle"}) as r,
                ):
                    client_errors[case] = f"HTTP {r.status}"
            except aiohttp.ClientError as exc:
                client_errors[case] = str(exc)
            await until(lambda: any("TLS handshake from" in r.getMessage() for r in caplog.records))
            logged = [r.getMessage() for r in caplog.records]
            assert any(expected[case] in m for m in logged), (case, logged)
            assert all("Traceback" not in m for m in logged)
        assert north.pipeline is not None and sum(north.pipeline.counts.values()) == 0
    figures("tls-gateway-server", client_errors=client_errors)
    assert not any(e.startswith("HTTP 2") for e in client_errors.values()), client_errors


def client_ssl(pki: PkiFiles, case: str) -> ssl.SSLContext:
    if case == "no-certificate":
        return ssl.create_default_context(cafile=str(pki.ca))
    if case == "tls-1.1":
        ctx = client_context(support.tls_files(pki, "ams"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        return ctx
    return client_context(tls_files(bad_pair(pki, case, "ams"), pki))


#: what the gateway must say of a broker port: its certificate, plain MQTT, or the broker
#: refusing our own certificate
BROKER_CASES = {
    **{case: text for case, (_, text) in BAD_CERTS.items()},
    "plain-mqtt": "the broker closed the connection in the TLS handshake",
    "own-expired": "the peer refused our certificate: it has expired",
    "own-untrusted-ca": "the peer does not trust the CA that signed our certificate",
}


# paho-mqtt 2.2 does not close its socket when a TLS handshake fails (the finalizer does)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_gateway_names_what_is_wrong_with_the_broker_tls(
    pki: PkiFiles, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A broker with an expired, not yet valid, untrusted or wrongly named certificate, a
    plain MQTT port, a broker that refuses our expired or foreign certificate: the gateway
    logs the cause once, the outbox's last error repeats it, the message waits; a good
    broker on the same port gets it in the end."""
    caplog.set_level(logging.WARNING, logger="gateway.north.mqtt")
    port = free_port()
    mqtt = MqttConfig(host="127.0.0.1", port=port, connect_timeout_s=1, answer_timeout_s=2)
    base = support.gateway_config(pki, ams_port=free_port(), mqtt=mqtt)
    own = {
        "own-expired": bad_pair(pki, "expired", "mgms-gateway"),
        "own-untrusted-ca": pki.issue_foreign("gateway-foreign", "mgms-gateway"),
    }
    errors: dict[str, str] = {}
    f = support.forecast()
    for case, text in BROKER_CASES.items():
        config = base
        if case in own:
            cert, key = own[case]
            tls = base.tls.model_copy(update={"cert": cert, "key": key})
            config = base.model_copy(update={"tls": tls})
        caplog.clear()
        async with (
            support.running_gateway(config, tmp_path / "gw") as north,
            contextlib.AsyncExitStack() as stack,
        ):
            await north.send(f)  # the same message every time: queued once
            directory = tmp_path / f"broker-{case}"
            if case == "plain-mqtt":
                stack.enter_context(plain_mosquitto(directory, port))
            elif case in own:
                stack.enter_context(mosquitto(directory, pki, port=port))
            else:
                cert, key = bad_pair(pki, case, "mqtt-broker")
                files = BrokerFiles(ca=pki.ca, cert=cert, key=key)
                stack.enter_context(run_mosquitto(directory, files, port=port))
            errors[case] = await error_naming(north, text)
            assert (await north.outbox.stats()).pending == 1
        logged = [r.getMessage() for r in caplog.records if r.name.startswith("gateway.north.mqtt")]
        assert sum(text in m for m in logged) == 1, (case, logged)
        if case == "own-expired":
            assert "our certificate" in errors[case] and "expired on" in errors[case]
    async with support.running_gateway(base, tmp_path / "gw") as north:
        with mosquitto(tmp_path / "broker", pki, port=port):
            async with support.running_ams(
                pki, tmp_path / "ams", gateway_port=None, mqtt=mqtt
            ) as ams:
                north.outbox.kick()
                await support.drained(north, within=30)
                assert [m.id for m in ams.messages(Channel.FORECAST)] == [f.id]
    figures("tls-broker", errors=errors)


@contextlib.contextmanager
def plain_mosquitto(directory: Path, port: int) -> Iterator[None]:
    """mosquitto with a plain MQTT listener (no TLS) on `port`."""
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "plain.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_listening(port)
        yield
    finally:
        proc.kill()
        proc.wait(10)


def wait_listening(port: int, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


async def error_naming(north: North, text: str) -> str:
    """The forecast outbox's last error once it says `text`, after two more attempts."""

    async def says() -> bool:
        head = (await north.outbox.stats()).destinations["forecast"]
        return text in (head.last_error or "")

    await until(says, within=30)
    seen = (await north.outbox.stats()).destinations["forecast"].head_attempts
    return await last_error_after_attempts(north, "forecast", seen)
