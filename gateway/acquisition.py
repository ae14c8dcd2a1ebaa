"""Acquisition: one session per device that connects, polls on the device's interval,
takes spontaneous data, and reconnects with capped exponential backoff.

A device that fails never stops another: each session is its own task and only a
DriverError (the link failed, the device refused the association, an answer did not
decode) or an unexpected driver bug (logged with its traceback) ends a connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Awaitable, Callable

from drivers.base import Driver
from gateway.backoff import Backoff
from gateway.errors import DriverError, LinkError
from gateway.mapping import Device
from gateway.model import Batch
from gateway.points import PointTable

log = logging.getLogger(__name__)

EventSink = Callable[..., Awaitable[None]]
PollListener = Callable[[str, float], None]
"""Told (device id, seconds) after every completed poll; metrics hook in here."""

#: points of a poll handed to the point table (and the store) in one piece, about
UPDATE_SLICE = 100


def poll_phase(device_id: str, interval: float) -> float:
    """Where in each poll period (seconds after a multiple of `interval` on the monotonic
    clock) the device is polled: spread evenly by a hash of its id, the same at every
    reconnect and restart."""
    return zlib.crc32(device_id.encode()) / 2**32 * interval


class DeviceSession:
    """Owns one driver. `lock` serializes requests so a write and a poll never interleave
    on protocols whose clients are not safe for concurrent use."""

    def __init__(
        self,
        device: Device,
        driver: Driver,
        table: PointTable,
        events: EventSink,
        reconnect_max_s: float = 30.0,
        on_poll: PollListener | None = None,
    ) -> None:
        self.device = device
        self.driver = driver
        self.table = table
        self.lock = asyncio.Lock()
        self.up = False  # connected: writes may go out
        self._announced = False  # the device answered on this connection
        self.reconnects = 0
        self.polls = 0
        self.last_poll_s = 0.0
        self._events = events
        self._backoff = Backoff(initial=0.2, cap=reconnect_max_s)
        self._points = [p for p in device.points if p.direction.readable]
        self._went_up = asyncio.Event()
        self._settled = asyncio.Event()  # the first connection attempt has ended either way
        self._on_poll = on_poll

    def set_reconnect_cap(self, seconds: float) -> None:
        """A reload changed `reconnect_max_s`: later waits follow it, the link is kept."""
        self._backoff.cap = seconds
        self._backoff.initial = min(self._backoff.initial, seconds)

    async def wait_up(self, within: float) -> bool:
        try:
            async with asyncio.timeout(within):
                await self._went_up.wait()
        except TimeoutError:
            return False
        return True

    async def wait_settled(self, within: float) -> bool:
        """True once the first connection attempt succeeded or failed, within `within` s."""
        try:
            async with asyncio.timeout(within):
                await self._settled.wait()
        except TimeoutError:
            return False
        return True

    async def run(self) -> None:
        """Connect, poll, reconnect; forever (until cancelled)."""
        try:
            while True:
                try:
                    await self._connect()
                    await self._poll_forever()
                except DriverError as exc:  # the device's fault, said in the message
                    await self._down(str(exc))
                except Exception as exc:  # a driver bug must not end acquisition
                    log.exception(
                        "device %r: unexpected driver error",
                        self.device.id,
                        extra={"device": self.device.id},
                    )
                    await self._down(f"driver error: {exc!r}")
                await self.driver.close()
                await asyncio.sleep(self._backoff.next_delay())
                self.reconnects += 1
        finally:
            await self.driver.close()

    async def _connect(self) -> None:
        async with self.lock:
            try:
                async with asyncio.timeout(self.device.timeout * 5):
                    await self.driver.connect()
            except TimeoutError:
                raise LinkError(self.device.id, "connect timed out") from None
        await self.driver.subscribe(lambda r: self.table.update((r,)))
        self.up = True
        self._went_up.set()
        self._settled.set()
        if not self._points:  # nothing to poll: the connection is all there is to know
            await self._answered()

    async def _answered(self) -> None:
        """The device answered on this connection: only now is the link logged up and the
        backoff reset. A device (or a Modbus TCP gateway with dead units behind it) may
        accept every connection and never answer; that is one link down, not a link up
        and down per attempt with no backoff."""
        self._announced = True
        self._backoff.reset()
        log.info("device %r: link up", self.device.id, extra={"device": self.device.id})
        await self._events("link_up", device=self.device.id)

    async def _down(self, detail: str) -> None:
        if self._announced or self.reconnects == 0:
            log.warning(
                "device %r: link down: %s", self.device.id, detail, extra={"device": self.device.id}
            )
            await self._events("link_down", device=self.device.id, reason=detail)
        self.up = self._announced = False
        self._went_up.clear()
        self._settled.set()
        self.table.mark_device_down(self.device, detail)

    async def _poll_forever(self) -> None:
        interval = self.device.poll_interval
        # the first poll at once, then on this device's own phase of the period: devices
        # that connected together would otherwise poll together for good, and the event
        # loop would take all their answers in one burst each period, which an activation
        # arriving then waits behind
        phase = poll_phase(self.device.id, interval)
        while True:
            if self._points:
                await self.poll_once()
                if not self._announced:
                    await self._answered()
            # the next slot of the phase: a poll that overran skips missed ticks rather
            # than bursting
            now = time.monotonic()
            await asyncio.sleep((phase - now) % interval)

    async def poll_once(self) -> None:
        started = time.perf_counter()
        async with self.lock:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that arrives as the read completes, and the session would outlive a stop
            try:
                async with asyncio.timeout(self.driver.read_budget(self._points)):
                    items = await self.driver.poll(self._points)
            except TimeoutError:
                raise LinkError(self.device.id, "poll timed out") from None
        self.last_poll_s = time.perf_counter() - started
        self.polls += 1
        if self._on_poll is not None:
            self._on_poll(self.device.id, self.last_poll_s)
        # a slice at a time (batches whole), with the event loop's other work between
        # slices: a poll of a few hundred points is milliseconds of table and store work,
        # which an activation arriving meanwhile would otherwise wait behind as one piece
        start = size = 0
        for end, item in enumerate(items, 1):
            size += len(item) if isinstance(item, Batch) else 1
            if size >= UPDATE_SLICE or end == len(items):
                if start:
                    await asyncio.sleep(0)
                self.table.update(items[start:end])
                start, size = end, 0
