"""IEC 60870-5-104 driver: the gateway as controlling station of one outstation.

Connect opens the link (STARTDT), runs a general interrogation and, when counters are
mapped, a counter interrogation, and then repeats both on their configured cycles. Every
monitoring object the outstation sends updates a cache; `read` answers from it (no
request on the wire), flagging values that were not refreshed for too long as old.
Spontaneous, periodic and return-information objects also go to the subscriber at once.

Commands go out as the mapped command type, direct or select-before-execute, and the
outstation's answer becomes the CommandResult: positive confirmation, negative
confirmation, or no answer within the device timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from drivers.base import Driver, ReadingSink, invalid
from drivers.iec104 import codec
from drivers.iec104.codec import Sample
from drivers.iec104.confirm import Verdict
from drivers.iec104.link import Link
from gateway.errors import LinkError, RawRangeError
from gateway.mapping import Device, Point
from gateway.model import (
    Command,
    CommandMode,
    CommandResult,
    CommandStatus,
    Quality,
    Reading,
    Validity,
)
from gateway.model import QualityFlag as Flag
from gateway.protocols.iec104 import Iec104Address, Iec104Options, Kind, TypeId

log = logging.getLogger(__name__)

T = TypeVar("T")

#: a stale value is older than this many cycles of the interrogation that refreshes it
STALE_CYCLES = 2.5


@dataclass(frozen=True, slots=True)
class _Cached:
    reading: Reading
    received: float  # time.monotonic()


class Iec104Driver(Driver):
    def __init__(self, device: Device) -> None:
        super().__init__(device)
        options = device.typed_options
        assert isinstance(options, Iec104Options)
        self.options = options
        self._addresses: dict[str, Iec104Address] = {}
        self._monitored: dict[tuple[int, int], Point] = {}
        for point in device.points:
            addr = device.address_of(point.id)
            assert isinstance(addr, Iec104Address)
            self._addresses[point.id] = addr
            if addr.monitor is not None:
                self._monitored[(addr.common_address, addr.monitor.ioa)] = point
        self._stations = sorted({a.common_address for a in self._addresses.values()})
        self._counter_stations = sorted(
            {
                a.common_address
                for a in self._addresses.values()
                if a.monitor is not None and a.monitor.type_id.kind is Kind.COUNTER
            }
        )
        self._cache: dict[str, _Cached] = {}
        self._mismatch: dict[str, str] = {}
        self._sink: ReadingSink | None = None
        self._link: Link | None = None
        self._up = False
        self._down_reason = "not connected"
        self._opened: asyncio.Event | None = None
        self._cycles: asyncio.Task[None] | None = None
        self._io_lock = asyncio.Lock()
        self._inflight: set[asyncio.Future[Any]] = set()
        self._generation = 0  # which Link the callbacks on the loop belong to
        self.ignored = 0  # objects dropped: test flag, negative, or a cause not for data

    # -- contract ---------------------------------------------------------------------

    async def connect(self) -> None:
        await self.close()
        host, port = self.device.connection.host, self.device.connection.port or 2404
        if host is None:
            raise LinkError(self.device.id, "IEC 104 needs connection.host")
        ip = await self._ipv4(host)
        # values count only once this connection has reported them
        self._cache.clear()
        self._mismatch.clear()
        loop = asyncio.get_running_loop()
        opened = self._opened = asyncio.Event()
        link = Link(
            self.device.id,
            ip,
            port,
            list(self._addresses.values()),
            self.options,
            self.device.timeout,
            samples=self._handover(loop, self._on_sample),
            state=self._handover(loop, self._on_state),
        )
        self._link = link
        self._down_reason = "connecting"
        await asyncio.to_thread(link.start)
        if not await self._wait_opened(link, opened):
            t0 = f"within t0={self.options.t0} s"
            problem = (
                f"{ip}:{port} accepted the connection but did not confirm STARTDT {t0}"
                if link.awaiting_startdt
                else f"no connection to {ip}:{port} {t0}"
            )
            await self.close()
            raise LinkError(self.device.id, problem)
        if self._link is not link or not link.is_open:
            reason = self._down_reason
            await self.close()
            raise LinkError(self.device.id, f"connection to {ip}:{port} failed ({reason})")
        self._up = True
        try:
            await self._initialize()
        except LinkError:
            await self.close()
            raise
        self._cycles = asyncio.create_task(self._run_cycles(), name=f"iec104-{self.device.id}")

    async def _wait_opened(self, link: Link, opened: asyncio.Event) -> bool:
        """Wait up to t0 for the link to open or fail; repeat STARTDT when it stays
        unanswered for the device timeout."""
        deadline = time.monotonic() + self.options.t0
        while not opened.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(opened.wait(), min(remaining, self.device.timeout))
            except TimeoutError:
                if link.awaiting_startdt:
                    await asyncio.to_thread(link.start_data_transfer)
        return True

    async def read(self, points: Sequence[Point]) -> list[Reading]:
        if not self._up:
            raise LinkError(self.device.id, self._down_reason)
        now = time.monotonic()
        return [self._current(p, now) for p in points]

    async def write(self, point: Point, command: Command) -> CommandResult:
        addr = self._addresses.get(point.id)
        if addr is None or addr.command is None:
            return CommandResult(command, CommandStatus.REJECTED, "point has no command object")
        link = self._link
        if not self._up or link is None:
            return CommandResult(command, CommandStatus.LINK_DOWN, self._down_reason)
        cmd = addr.command
        try:
            raw = codec.encode(point, cmd.type_id, command.value)
        except RawRangeError as exc:
            return CommandResult(command, CommandStatus.REJECTED, f"not sent: {exc}")
        select = point.sbo or command.mode is CommandMode.SELECT_BEFORE_OPERATE
        how = f"{cmd} {'select-before-execute' if select else 'direct'}"
        try:
            verdict, why = await self._exclusive(
                link.command, addr.common_address, cmd.ioa, cmd.type_id, raw, select
            )
        except LinkError as exc:
            return CommandResult(command, CommandStatus.LINK_DOWN, f"{how}: {exc}")
        detail = f"{how}: {why or verdict.value}"
        if verdict is Verdict.CONFIRMED:
            return CommandResult(command, CommandStatus.CONFIRMED, detail)
        if verdict is Verdict.REJECTED:
            return CommandResult(command, CommandStatus.REJECTED, detail)
        if not self._up or not link.is_open:
            return CommandResult(command, CommandStatus.LINK_DOWN, f"{how}: link lost")
        return CommandResult(
            command,
            CommandStatus.TIMEOUT,
            f"{detail} within {self.device.timeout:g} s",
        )

    async def subscribe(self, sink: ReadingSink) -> bool:
        self._sink = sink
        return True

    async def close(self) -> None:
        self._up = False
        self._generation += 1  # callbacks still queued from the old link are dropped
        if self._down_reason in ("connecting", "connected"):
            self._down_reason = "closed"
        if self._cycles is not None:
            self._cycles.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._cycles
            self._cycles = None
        link, self._link = self._link, None
        if link is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(link.stop)
        # blocking calls still waiting in c104 end within the command timeout
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)

    @property
    def connected(self) -> bool:
        return self._up

    # -- connection life --------------------------------------------------------------

    async def _ipv4(self, host: str) -> str:
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            pass
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, None, family=socket.AF_INET, type=socket.SOCK_STREAM),
                self.options.t0,
            )
        except (OSError, TimeoutError) as exc:
            raise LinkError(self.device.id, f"cannot resolve {host!r} to IPv4: {exc}") from exc
        return str(infos[0][4][0])

    def _handover(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[..., None]
    ) -> Callable[..., None]:
        """A callable for c104's threads that runs `fn` on the loop thread, unless the
        link it came from has been replaced by then."""
        generation = self._generation

        def on_loop(*args: object) -> None:
            if generation == self._generation:
                fn(*args)

        def handover(*args: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
                loop.call_soon_threadsafe(on_loop, *args)

        return handover

    def _on_state(self, is_open: bool, state: str) -> None:
        if is_open:
            # c104 reopens a lost connection by itself; the driver stays down until the
            # session reconnects, and keeps saying why it went down
            if self._opened is not None and not self._opened.is_set():
                self._down_reason = "connected"
                self._opened.set()
            return
        if state in ("CLOSED_AWAIT_OPEN", "OPEN_MUTED"):
            return  # connecting, or connected and waiting for STARTDT con
        was_up = self._up
        self._up = False
        self._down_reason = f"connection lost ({state})"
        if self._opened is not None and not self._opened.is_set():
            self._opened.set()  # connect() sees the link is not open and fails fast
        if was_up:
            log.warning("device %r: IEC 104 link down (%s)", self.device.id, state)

    async def _initialize(self) -> None:
        link = self._link
        assert link is not None
        for ca in self._stations:
            if self.options.clock_sync:
                verdict, why = await self._exclusive(link.clock_sync, ca)
                if verdict is not Verdict.CONFIRMED:
                    log.warning(
                        "device %r: clock sync of CA %d: %s", self.device.id, ca, why or verdict
                    )
            await self._interrogate(link, ca, counters=False, at_connect=True)
        for ca in self._counter_stations:
            await self._interrogate(link, ca, counters=True, at_connect=True)

    async def _interrogate(self, link: Link, ca: int, counters: bool, at_connect: bool) -> None:
        """One (counter) interrogation; at connect a failure fails the connection."""
        if counters:
            verdict, why = await self._exclusive(
                link.interrogate_counters, ca, self.options.counter_freeze
            )
        else:
            verdict, why = await self._exclusive(link.interrogate, ca)
        if verdict is Verdict.CONFIRMED:
            return
        what = "counter interrogation" if counters else "general interrogation"
        problem = f"{what} of CA {ca}: {why or verdict.value}"
        if at_connect:
            raise LinkError(self.device.id, problem)
        log.warning("device %r: %s", self.device.id, problem)

    async def _run_cycles(self) -> None:
        gi, ci = self.options.interrogation_cycle, self.options.counter_interrogation_cycle
        now = time.monotonic()
        next_gi = now + gi if gi else float("inf")
        next_ci = now + ci if ci and self._counter_stations else float("inf")
        while self._up and min(next_gi, next_ci) < float("inf"):
            await asyncio.sleep(max(0.0, min(next_gi, next_ci) - time.monotonic()))
            link = self._link
            if not self._up or link is None:
                return
            try:
                if time.monotonic() >= next_gi:
                    next_gi += gi
                    for ca in self._stations:
                        await self._interrogate(link, ca, counters=False, at_connect=False)
                if time.monotonic() >= next_ci:
                    next_ci += ci
                    for ca in self._counter_stations:
                        await self._interrogate(link, ca, counters=True, at_connect=False)
            except LinkError as exc:
                log.warning("device %r: %s", self.device.id, exc)

    async def _exclusive(self, fn: Callable[..., T], *args: object) -> T:
        """Run a blocking c104 call in a thread, one at a time: c104 tracks only one
        interrogation or select-before-execute sequence per connection. If the caller is
        cancelled the call still completes (and keeps the lock) in the background."""
        await self._io_lock.acquire()
        try:
            fut: asyncio.Future[T] = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        except BaseException:
            self._io_lock.release()
            raise
        self._inflight.add(fut)

        def done(f: asyncio.Future[T]) -> None:
            self._io_lock.release()
            self._inflight.discard(f)
            if not f.cancelled():
                f.exception()  # retrieved here so a cancelled caller leaves no warning

        fut.add_done_callback(done)
        return await asyncio.shield(fut)

    # -- monitoring data --------------------------------------------------------------

    def _on_sample(self, sample: Sample) -> None:
        point = self._monitored.get((sample.common_address, sample.ioa))
        if point is None:
            self.ignored += 1
            return
        if sample.test or sample.negative or not codec.is_monitoring_cause(sample.cot):
            self.ignored += 1
            return
        addr = self._addresses[point.id]
        assert addr.monitor is not None
        mapped = addr.monitor.type_id
        if sample.type_id not in {t.value for t in mapped.family}:
            sent = _type_name(sample.type_id)
            self._mismatch[point.id] = (
                f"outstation sends {sent} for IOA {sample.ioa}, mapped {mapped.name}"
            )
            return
        self._mismatch.pop(point.id, None)
        reading = codec.decode(point, mapped, sample)
        self._cache[point.id] = _Cached(reading, time.monotonic())
        if self._sink is not None and sample.cot in codec.EVENT_CAUSES:
            try:
                self._sink(reading)
            except Exception:  # a subscriber's bug must not stop the data flow
                log.exception("device %r: subscriber failed on %s", self.device.id, point.id)

    def _current(self, point: Point, now: float) -> Reading:
        if point.id in self._mismatch:
            return invalid(point, self._mismatch[point.id])
        cached = self._cache.get(point.id)
        if cached is None:
            if not point.direction.readable:
                return invalid(point, "write-only point")
            return invalid(point, "no value from the outstation yet (not in its interrogation)")
        reading = cached.reading
        bound = self._stale_after(point)
        age = now - cached.received
        if bound is None or age <= bound:
            return reading
        q = reading.quality
        validity = Validity.QUESTIONABLE if q.good else q.validity
        detail = "; ".join(d for d in (reading.detail, f"not refreshed for {age:.0f} s") if d)
        return replace(reading, quality=Quality(validity, q.flags | {Flag.OLD}), detail=detail)

    def _stale_after(self, point: Point) -> float | None:
        if self.options.stale_after is not None:
            return self.options.stale_after
        addr = self._addresses[point.id]
        counter = addr.monitor is not None and addr.monitor.type_id.kind is Kind.COUNTER
        cycle = (
            self.options.counter_interrogation_cycle
            if counter
            else self.options.interrogation_cycle
        )
        return cycle * STALE_CYCLES if cycle else None


def _type_name(type_id: int) -> str:
    try:
        return TypeId(type_id).name
    except ValueError:
        return f"type {type_id}"
