"""Northbound fault parts: simulated time for the outbox, a CRP day driven through the real
flexibility service, and an AMS that misbehaves on the wire.

- `SimOutboxClock`: the outbox's clock on the simulated microgrid's time, so a day-long
  outage with the product's real backoff (1 s doubling to 60 s) runs in seconds.
- `CrpDay`: the flexibility service on the simulated demo microgrid, stepped once a
  simulated minute: periodic Flexibility Forecasts, and an AMS (in process, through the
  same `FlexReserveHandler` the north pipeline calls) that reserves and activates back to
  back, so Reserve Verifications keep coming. Everything the service publishes goes
  through `send` (the gateway's `North.send`, swappable across a gateway restart) and its
  message id is recorded per channel when the outbox took it as new.
- `BadAms`: a TCP server on the AMS's port that answers 503, accepts and never starts
  TLS, completes TLS and never answers, or resets the connection in the middle of an
  answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from gateway.errors import ReserveRefused
from gateway.flex.bridge import FlexReserveHandler, NorthPublisher
from gateway.flex.records import FlexRecords
from gateway.flex.service import FlexService
from gateway.north.certs import AMS_IDENTITY, GATEWAY_IDENTITY
from gateway.north.wire import Channel
from gateway.smartapi import flexibility as sa
from tests.support.flexsim import Bench, BenchClock

STEP = timedelta(minutes=15)
#: the service's control cycle in the fault runs: one step every two simulated minutes
CONTROL_CYCLE_S = 120.0


class SimOutboxClock:
    """The outbox's time is the bench's simulated time; a wait ends when `event` is set or
    the simulated time passed its end (checked whenever the test calls `tick()`)."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self._tick = asyncio.Event()

    def time(self) -> float:
        return self.bench.now().timestamp()

    def tick(self) -> None:
        """Simulated time moved: waiters look at the clock again."""
        self._tick.set()
        self._tick = asyncio.Event()

    async def wait(self, event: asyncio.Event, seconds: float) -> None:
        deadline = self.time() + seconds
        while not event.is_set() and self.time() < deadline:
            waiters = {
                asyncio.ensure_future(event.wait()),
                asyncio.ensure_future(self._tick.wait()),
            }
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()
                await asyncio.gather(*waiters, return_exceptions=True)


Send = Callable[[sa.FlexibilityForecast | sa.ReserveVerification], Awaitable[bool]]


class CrpDay:
    """The flexibility service stepped in simulated time with back-to-back CRP cycles."""

    def __init__(self, bench: Bench, state_dir: Path, send: Send) -> None:
        self.bench = bench
        self.state_dir = state_dir
        self.send = send
        #: message ids the outbox took, by channel, in the order produced
        self.produced: dict[Channel, list[str]] = {Channel.FORECAST: [], Channel.VERIFICATION: []}
        self.activations = 0
        self.refusals: list[str] = []
        #: no new reservations while set (e.g. to restart between two cycles)
        self.hold = False
        self._cycle = 0
        self._next_notification = bench.now()
        self._due: tuple[sa.ReserveNotification, datetime] | None = None
        self.records = FlexRecords(state_dir / "flex.sqlite")
        self.service = self._service()
        self.handler = FlexReserveHandler(self.service)

    def _service(self) -> FlexService:
        publisher = NorthPublisher(self._publish, GATEWAY_IDENTITY, "demo-microgrid", self.now)
        b = self.bench
        return FlexService(
            b.config, b.table, b.controller, self.records, publisher, b.history, BenchClock(b)
        )

    def now(self) -> datetime:
        return self.bench.now()

    async def _publish(self, message: sa.FlexibilityForecast | sa.ReserveVerification) -> bool:
        fresh = await self.send(message)
        if fresh:
            channel = (
                Channel.FORECAST
                if isinstance(message, sa.FlexibilityForecast)
                else Channel.VERIFICATION
            )
            self.produced[channel].append(message.id)
        return fresh

    async def start(self) -> None:
        await self.records.open()
        await self.service.start()

    async def restart(self) -> None:
        """A gateway restart: a new service on the same records (call between cycles)."""
        await self.records.close()
        self.records = await FlexRecords(self.state_dir / "flex.sqlite").open()
        self.service = self._service()
        self.handler = FlexReserveHandler(self.service)
        await self.service.start()

    async def close(self) -> None:
        await self.records.close()

    async def quiesce(self, on_tick: Callable[[], None]) -> None:
        """Run on without new reservations until no activation is under way or closing."""
        self.hold = True
        while self._due is not None or self.service.running is not None:
            await self.run_until(self.now() + timedelta(minutes=1), on_tick)
        await self.run_until(self.now() + timedelta(minutes=1), on_tick)  # the final verification
        self.hold = False

    async def run_until(self, end: datetime, on_tick: Callable[[], None]) -> None:
        """Step the service once a simulated minute until `end`; `on_tick` after each."""
        while self.now() < end:
            await self._ams()
            await self.service.step()
            self.bench.advance(CONTROL_CYCLE_S, step=10.0)
            on_tick()

    async def _ams(self) -> None:
        """What the AMS would do now: reserve the next two intervals (alternately up and
        down), activate the reservation in full when it starts."""
        now = self.now()
        if self._due is None and now >= self._next_notification and not self.hold:
            self._cycle += 1
            k = self._cycle
            first = now.replace(minute=now.minute - now.minute % 15, second=0) + STEP
            up = k % 2 == 1
            band = sa.ReservedInterval(
                p_raise_kw=10.0 if up else 0.0, p_lower_kw=0.0 if up else 10.0
            )
            notification = sa.ReserveNotification(
                id=f"urn:uuid:n-{k}-{first:%Y%m%d%H%M}",
                sender=AMS_IDENTITY,
                generated_at=now,
                microgrid="demo-microgrid",
                start=first,
                step=STEP,
                purchase=f"purchase-{k}",
                intervals=(band, band),
            )
            self._next_notification = first + 2 * STEP
            try:
                await self.handler.apply_notification(notification)
                self._due = (notification, first)
            except ReserveRefused as exc:  # the service's answer, not a test failure
                self.refusals.append(f"{notification.id}: {exc}")
        if self._due is not None and now >= self._due[1]:
            notification, first = self._due
            self._due = None
            plan = self.service.plan
            assert plan is not None
            base = float(plan.pcc_p[plan.horizon.index(now) or 0])
            up = notification.intervals[0].p_raise_kw > 0
            activation = sa.ReserveActivation(
                id=f"urn:uuid:a-{self._cycle}-{first:%Y%m%d%H%M}",
                sender=AMS_IDENTITY,
                generated_at=now,
                microgrid="demo-microgrid",
                notification=notification.id,
                p_kw=base + (10.0 if up else -10.0),
                q_kvar=0.0,
                start=now,
                end=first + 2 * STEP,
            )
            try:
                await self.handler.apply_activation(activation)
                self.activations += 1
            except ReserveRefused as exc:
                self.refusals.append(f"{activation.id}: {exc}")


class Misbehaviour(enum.Enum):
    #: a TLS server that answers every request 503 Service Unavailable
    UNAVAILABLE = "503"
    #: accepts the TCP connection and never says a word (no TLS handshake)
    SILENT_TCP = "silent-tcp"
    #: completes the TLS handshake, reads the request, never answers
    SILENT_TLS = "silent-tls"
    #: starts a 200 answer and resets the connection in the middle of its body
    RESET = "reset"
    #: plain HTTP, no TLS at all
    PLAIN_HTTP = "plain-http"


class BadAms:
    """A misbehaving AMS on 127.0.0.1:`port` (the port the gateway's outbox posts to)."""

    def __init__(self, port: int, how: Misbehaviour, ssl_ctx: ssl.SSLContext) -> None:
        self.port = port
        self.how = how
        self._ssl = ssl_ctx
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Self:
        tls = self.how in (Misbehaviour.UNAVAILABLE, Misbehaviour.SILENT_TLS, Misbehaviour.RESET)
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, ssl=self._ssl if tls else None
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            await self._misbehave(reader, writer)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def _misbehave(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.how is Misbehaviour.SILENT_TCP:
            await reader.read()  # until the client gives up and closes
            return
        if self.how is Misbehaviour.PLAIN_HTTP:
            await reader.read(1024)  # a TLS ClientHello, which a plain server cannot parse
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        if self.how is Misbehaviour.SILENT_TLS:
            await reader.read()
            return
        if self.how is Misbehaviour.UNAVAILABLE:
            body = b"the AMS is in maintenance"
            writer.write(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            return
        # RESET: a 200 whose body never completes, then a TCP reset
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/turtle\r\nContent-Length: 500\r\n\r\n@"
        )
        await writer.drain()
        await asyncio.sleep(0.05)
        sock: Any = writer.get_extra_info("socket")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
