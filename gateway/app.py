"""The composition root: builds every part from the config and runs them in one task group."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine
from datetime import timedelta
from types import TracebackType
from typing import Any

from drivers.base import Driver
from drivers.registry import create_driver
from gateway.acquisition import DeviceSession
from gateway.config import LoadedConfig
from gateway.control import Controller
from gateway.mapping import Device
from gateway.points import PointTable
from gateway.store import Store

log = logging.getLogger(__name__)

STORE_FLUSH_S = 1.0
PRUNE_EVERY_S = 3600.0


class Gateway:
    """`async with Gateway(config) as gw:` runs acquisition and storage until the block ends."""

    def __init__(
        self,
        config: LoadedConfig,
        driver_factory: Callable[[Device], Driver] = create_driver,
    ) -> None:
        self.config = config
        self._driver_factory = driver_factory
        self.table = PointTable(config)
        self.sessions: dict[str, DeviceSession] = {}
        self.store: Store | None = None
        self.controller: Controller | None = None
        self._stack = contextlib.AsyncExitStack()
        self._group: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        assert self._group is not None, "gateway not started"
        task = self._group.create_task(coro, name=name)
        self._tasks.append(task)
        return task

    async def __aenter__(self) -> Gateway:
        cfg = self.config.gateway
        self.store = await Store.open(cfg.state_dir / "gateway.sqlite")
        self._stack.push_async_callback(self.store.close)
        self.table.listen(self.store.add)
        for device in self.config.devices:
            self.sessions[device.id] = DeviceSession(
                device,
                self._driver_factory(device),
                self.table,
                self.store.event,
                reconnect_max_s=cfg.reconnect_max_s,
            )
        self.controller = Controller(self.table, self.sessions, self.store)
        self._group = await self._stack.enter_async_context(asyncio.TaskGroup())
        for session in self.sessions.values():
            self.spawn(session.run(), f"device:{session.device.id}")
        self.spawn(self._housekeeping(), "store")
        await self.store.event("start", microgrid=cfg.microgrid.id, devices=len(self.sessions))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in self._tasks:
            task.cancel()
        if self.store is not None:
            with contextlib.suppress(Exception):
                await self.store.event("stop")
        await self._stack.aclose()

    async def wait_connected(self, within: float) -> bool:
        """True once every device's link came up at least once within `within` seconds."""
        results = await asyncio.gather(*(s.wait_up(within) for s in self.sessions.values()))
        return all(results)

    async def _housekeeping(self) -> None:
        assert self.store is not None
        retention = timedelta(days=self.config.gateway.retention_days)
        since_prune = PRUNE_EVERY_S
        while True:
            await asyncio.sleep(STORE_FLUSH_S)
            await self.store.flush()
            since_prune += STORE_FLUSH_S
            if since_prune >= PRUNE_EVERY_S:
                since_prune = 0.0
                removed = await self.store.prune(retention)
                if removed:
                    log.info("store: pruned %d samples older than %s", removed, retention)


async def serve(config: LoadedConfig, stop: asyncio.Event) -> None:
    async with Gateway(config):
        log.info("gateway %r running: %d devices", config.gateway.microgrid.id, len(config.devices))
        await stop.wait()
        log.info("stopping")


def run(config: LoadedConfig) -> int:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, stop)

    asyncio.run(main())
    return 0
