"""The service lifecycle around a running Gateway, as systemd sees it.

READY=1 once the listeners are up and every device's first connection attempt has ended
(up or not: a dead meter must not hold the whole service in "activating"); STATUS= lines
as the picture changes; WATCHDOG=1 from the event loop while the gateway is alive (so a
hung loop or a stuck store gets the service restarted); RELOADING=1/READY=1 around a
reload; STOPPING=1 when a stop begins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Mapping
from typing import Any, Protocol

from gateway.acquisition import DeviceSession
from gateway.ops.health import Health
from gateway.ops.notify import Notifier
from gateway.ops.reload import Loader, Reconfigurable, reload
from gateway.points import PointTable

log = logging.getLogger(__name__)

STATUS_EVERY_S = 5.0


class Supervised(Reconfigurable, Protocol):
    """What the service lifecycle needs of the running gateway: its devices and points for
    the status line, its liveness for the watchdog, a task group for its own loops."""

    @property
    def sessions(self) -> Mapping[str, DeviceSession]: ...
    @property
    def table(self) -> PointTable: ...
    @property
    def health(self) -> Health: ...
    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]: ...


def summary(gw: Supervised) -> str:
    up = sum(s.up for s in gw.sessions.values())
    readable, good = gw.table.readable_good()
    return f"{up}/{len(gw.sessions)} devices up, {good}/{readable} points good"


async def _settle(gw: Supervised, within: float) -> None:
    sessions = list(gw.sessions.values())
    settled = await asyncio.gather(*(s.wait_settled(within) for s in sessions))
    slow = [s.device.id for s, ok in zip(sessions, settled, strict=True) if not ok]
    if slow:
        log.warning(
            "start: no connection result within %.0f s from %s; going on",
            within,
            ", ".join(slow),
        )


async def _watchdog(gw: Supervised, notifier: Notifier, interval: float) -> None:
    while True:
        report = gw.health.live()
        if report.ok:
            notifier.watchdog()
        else:  # withholding the ping lets systemd restart a gateway that stopped working
            log.error("watchdog: not alive, withholding WATCHDOG=1: %s", report.failing())
        await asyncio.sleep(interval)


async def _status_updates(gw: Supervised, notifier: Notifier) -> None:
    last = ""
    while True:
        await asyncio.sleep(STATUS_EVERY_S)
        text = "running: " + summary(gw)
        if text != last:
            notifier.status(text)
            last = text


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        for w in waiters:
            with contextlib.suppress(asyncio.CancelledError):
                await w


async def supervise(
    gw: Supervised,
    notifier: Notifier,
    stop: asyncio.Event,
    reload_requested: asyncio.Event | None = None,
    load: Loader | None = None,
) -> None:
    """Announce readiness, keep the watchdog fed, serve reloads; return when `stop` is set."""
    ops = gw.config.gateway.ops
    notifier.status(f"starting: connecting {len(gw.sessions)} devices")
    await _settle(gw, ops.ready_wait_s)
    text = summary(gw)
    notifier.ready("running: " + text)
    log.info("ready: %s", text)
    if notifier.watchdog_interval is not None:
        gw.spawn(_watchdog(gw, notifier, notifier.watchdog_interval), "watchdog")
    if notifier.enabled:
        gw.spawn(_status_updates(gw, notifier), "notify-status")
    reloads = reload_requested or asyncio.Event()
    while not stop.is_set():
        await _first(stop, reloads)
        if reloads.is_set() and not stop.is_set():
            reloads.clear()
            if load is None:
                log.warning("reload requested but this gateway was not started from files")
            else:
                await reload(gw, load, notifier)
    notifier.stopping("stopping")
    log.info("stopping")
