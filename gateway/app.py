"""The composition root: builds every part from the config and runs them in one task group."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

from drivers.base import Driver
from drivers.registry import create_driver
from gateway.acquisition import DeviceSession, PollListener
from gateway.allocator import bound_the_allocator, trim_forever
from gateway.config import LoadedConfig
from gateway.control import Controller
from gateway.errors import GatewayError, ReloadRefused
from gateway.listeners import ensure_fd_budget
from gateway.mapping import Device
from gateway.ops.health import Health
from gateway.ops.instruments import instrument
from gateway.ops.metrics import Registry
from gateway.ops.notify import EXTEND_S, Notifier
from gateway.ops.reload import Commit, Loader, PrepareReload, ReloadPlan
from gateway.ops.server import OpsServer
from gateway.ops.service import supervise
from gateway.ops.status import StatusBoard
from gateway.points import PointTable
from gateway.store import STORE_FILE, Store, migrate, needs_migration

if TYPE_CHECKING:  # the market side (rdflib, numpy, highspy, ...) loads only with `north:`
    from gateway.market import Market

log = logging.getLogger(__name__)

STORE_FLUSH_S = 1.0
PRUNE_EVERY_S = 3600.0
#: how long a thread may hold the interpreter lock while another waits for it (s)
SWITCH_INTERVAL_S = 0.001
RECANCEL_S = 0.5


class _ProcessTuning:
    """What a running gateway sets for its whole process, undone when the last gateway in
    it stops (tests and benches run several, one after the other or side by side)."""

    def __init__(self) -> None:
        self.running = 0
        self.switch_interval = sys.getswitchinterval()

    def enter(self) -> None:
        if self.running == 0:
            # worker threads (parsing, signing, the databases) hold the interpreter lock
            # for up to the switch interval (5 ms by default) each time the event loop
            # wants it back, and the control path wants it back at every await of a
            # thread or a socket
            self.switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        self.running += 1

    def exit(self) -> None:
        self.running -= 1
        if self.running == 0:
            gc.unfreeze()  # what the gateways built is garbage now: the collector may take it
            sys.setswitchinterval(self.switch_interval)


_TUNING = _ProcessTuning()


async def _cancel_and_wait(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel and wait until every task ended. On Python 3.11 `asyncio.wait_for` (used
    inside libraries, e.g. pymodbus' connect) can swallow a cancellation that arrives as
    its operation completes, so a task still running is cancelled again."""
    pending = {t for t in tasks if not t.done()}
    for task in pending:
        task.cancel()
    while pending:
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_S)
        for task in pending:
            log.debug("stop: cancelling %s again", task.get_name())
            task.cancel()


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
        self._store: Store | None = None
        self._controller: Controller | None = None
        self.market: Market | None = None
        self._stack = contextlib.AsyncExitStack()
        self._group: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # operations: metrics, health checks, status page sources, lifecycle hooks
        self.metrics = Registry()
        self.health = Health()
        self.status = StatusBoard()
        self.poll_listeners: list[PollListener] = []
        self.started_at = time.time()
        self.started_monotonic = time.monotonic()
        self.last_flush = time.monotonic()
        self._device_tasks: dict[str, asyncio.Task[None]] = {}
        self._shutdown_hooks: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        self._tuned = False
        self._reload_parts: list[tuple[str, PrepareReload]] = []

    @property
    def store(self) -> Store:
        """The sample and event store (open while the gateway runs)."""
        if self._store is None:
            raise RuntimeError("gateway not started: no store yet")
        return self._store

    @property
    def controller(self) -> Controller:
        """Writes to devices (built when the gateway starts)."""
        if self._controller is None:
            raise RuntimeError("gateway not started: no controller yet")
        return self._controller

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        assert self._group is not None, "gateway not started"
        task = self._group.create_task(coro, name=name)
        self._tasks = [t for t in self._tasks if not t.done()]
        self._tasks.append(task)
        return task

    def on_shutdown(self, name: str, hook: Callable[[], Awaitable[None]]) -> None:
        """Run `hook` when the gateway stops, before links close (finish an activation,
        flush an outbox). Hooks run last-registered first, bounded by `ops.drain_s` in all."""
        self._shutdown_hooks.append((name, hook))

    def on_reload(self, name: str, prepare: PrepareReload) -> None:
        """A part that takes a reloaded config: `await prepare(new_config)` builds what the
        part needs (raising GatewayError, ValueError or OSError refuses the whole reload)
        and returns the commit, which swaps it in and must not fail. Every part prepares
        before any commits, so a reload is applied everywhere or nowhere."""
        self._reload_parts.append((name, prepare))

    def _session(
        self, device: Device, driver: Driver, config: LoadedConfig | None = None
    ) -> DeviceSession:
        return DeviceSession(
            device,
            driver,
            self.table,
            self.store.event,
            reconnect_max_s=(config or self.config).gateway.reconnect_max_s,
            on_poll=self._poll_done,
        )

    def _poll_done(self, device: str, seconds: float) -> None:
        for listener in self.poll_listeners:
            listener(device, seconds)

    def _start(self, session: DeviceSession) -> None:
        self.sessions[session.device.id] = session
        self._device_tasks[session.device.id] = self.spawn(
            session.run(), f"device:{session.device.id}"
        )

    async def _stop(self, device_id: str) -> None:
        session = self.sessions.pop(device_id)
        task = self._device_tasks.pop(device_id)
        async with session.lock:  # let an in-flight poll or write finish first
            task.cancel()
        await _cancel_and_wait([task])

    async def reconfigure(self, plan: ReloadPlan) -> None:
        """Apply a reload: only sessions of added, changed or removed devices restart.
        Drivers for new definitions and every part's new state are built before anything
        stops or changes, so a device the drivers cannot serve, or a part that cannot take
        the new config, leaves the running gateway untouched (ReloadRefused)."""
        new = plan.config
        fresh = [
            self._session(d, self._driver_factory(d), new) for d in (*plan.added, *plan.changed)
        ]
        commits: list[tuple[str, Commit]] = []
        for name, prepare in self._reload_parts:
            try:
                commits.append((name, await prepare(new)))
            except (GatewayError, ValueError, OSError) as exc:
                raise ReloadRefused(f"{name} cannot take the new config: {exc}") from exc
            except Exception as exc:  # a bug must not stop a running gateway over a reload
                log.exception("reload: %s failed to prepare the new config", name)
                raise ReloadRefused(f"{name} cannot take the new config: {exc!r}") from exc
        # from here on nothing is refused
        for device_id in (*plan.removed, *(d.id for d in plan.changed)):
            await self._stop(device_id)
        self.config = new
        self.table.remap(new)
        if self.store is not None:
            self.store.configure(new.devices)
        for session in self.sessions.values():
            session.set_reconnect_cap(new.gateway.reconnect_max_s)
        for session in fresh:
            self._start(session)
        for name, commit in commits:
            try:
                await commit()
            except Exception:  # a commit must not fail; if one does, say so loudly
                log.exception("reload: %s failed to apply the new config", name)

    async def __aenter__(self) -> Gateway:
        cfg = self.config.gateway
        store = self._store = await Store.open(cfg.state_dir / STORE_FILE)
        store.configure(self.config.devices)
        self._stack.push_async_callback(store.close)
        self.table.listen(store.add_all)
        try:
            sessions = [self._session(d, self._driver_factory(d)) for d in self.config.devices]
        except BaseException:
            await self._stack.aclose()
            raise
        self._controller = Controller(self.table, self.sessions, store)
        instrument(self)
        self._group = await self._stack.enter_async_context(asyncio.TaskGroup())
        for session in sessions:
            self._start(session)
        self.spawn(self._housekeeping(), "store")
        try:
            if cfg.north is not None:
                from gateway.market import attach_market  # only a site with north: loads it

                self.market = await attach_market(self)
        except BaseException:
            await _cancel_and_wait(self._tasks)
            await self._stack.aclose()
            raise
        await store.event("start", microgrid=cfg.microgrid.id, devices=len(self.sessions))
        # what start-up built (the mapping's models, ~15 objects a point; the libraries of
        # each part) lives as long as the gateway: out of the collector's sight, a full
        # collection no longer walks it. The polls' readings promote a full collection
        # every few seconds, and each walked about a million objects: a 100-340 ms pause
        # of everything, the control path's answers with it
        gc.freeze()
        _TUNING.enter()
        self._tuned = True
        return self

    @property
    def stack(self) -> contextlib.AsyncExitStack:
        """Closed when the gateway stops, after its tasks ended (parts register here)."""
        return self._stack

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._drain()
        await _cancel_and_wait(self._tasks)
        if self._store is not None:
            with contextlib.suppress(Exception):
                await self._store.event("stop")
        await self._stack.aclose()
        if self._tuned:
            self._tuned = False
            _TUNING.exit()

    async def wait_connected(self, within: float) -> bool:
        """True once every device's link came up at least once within `within` seconds."""
        results = await asyncio.gather(*(s.wait_up(within) for s in self.sessions.values()))
        return all(results)

    async def _drain(self) -> None:
        deadline = time.monotonic() + self.config.gateway.ops.drain_s
        for name, hook in reversed(self._shutdown_hooks):
            try:
                async with asyncio.timeout(max(deadline - time.monotonic(), 0.05)):
                    await hook()
            except TimeoutError:
                log.warning("stop: %s did not finish in time", name, extra={"hook": name})
            except Exception:
                log.exception("stop: %s failed", name, extra={"hook": name})

    async def _housekeeping(self) -> None:
        since_prune = PRUNE_EVERY_S
        while True:
            await asyncio.sleep(STORE_FLUSH_S)
            await self.store.flush_due()
            self.last_flush = time.monotonic()
            since_prune += STORE_FLUSH_S
            if since_prune >= PRUNE_EVERY_S:
                since_prune = 0.0
                retention = timedelta(days=self.config.gateway.retention_days)  # reloadable
                removed = await self.store.prune(retention)
                if removed:
                    log.info("store: pruned %d samples older than %s", removed, retention)


async def migrate_state(
    config: LoadedConfig, notifier: Notifier, stop: asyncio.Event | None = None
) -> bool:
    """Migrate a store written by an earlier release before the gateway opens it: once,
    after an upgrade, minutes on a large store, which the unit's start timeout must not cut
    (systemd would restart the service, and the migration would begin again, for ever).
    False when `stop` came: the migration was rolled back (or finished, when the stop came
    in its end) and the gateway must not start."""
    history = config.gateway.state_dir / STORE_FILE
    if stop is not None and stop.is_set():
        return False
    if not needs_migration(history):
        return True
    log.info("store: migrating the former history table before start (once, after an upgrade)")
    moved = [time.monotonic()]  # when SQLite last reported the migration's progress

    def progress() -> None:
        moved[0] = time.monotonic()

    async def stopping() -> None:
        # systemd and the journal learn of the stop now, not when the migration let go
        assert stop is not None
        await stop.wait()
        notifier.stopping("stopping: ending the store's migration before start")
        # the stop's timeout runs from now: extended at once, then as the start's was
        notifier.extend_timeout(EXTEND_S)
        log.info("store: stop received during the migration; the gateway will not start")

    def waiting() -> None:
        notifier.status(
            "stopping: waiting for the store migration's last step, which cannot be interrupted"
        )

    told = asyncio.ensure_future(stopping()) if stop is not None else None
    try:
        async with notifier.extending(
            "starting: migrating the store's history", progressed=lambda: moved[0]
        ):
            return await migrate(history, stop, progress, waiting)
    finally:
        if told is not None:
            told.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await told


async def serve(
    config: LoadedConfig,
    stop: asyncio.Event,
    *,
    reload_requested: asyncio.Event | None = None,
    load: Loader | None = None,
) -> None:
    """Run the gateway as a service until `stop` is set; `reload_requested` re-reads the
    files through `load`."""
    notifier = Notifier.from_env()
    bound_the_allocator()
    north = config.gateway.north
    ensure_fd_budget(
        north.server.max_connections if north is not None else 0,
        config.gateway.ops.max_connections,
    )
    try:
        if not await migrate_state(config, notifier, stop):
            log.info("stopped before start")
            return
        async with Gateway(config) as gw, OpsServer(gw, config.gateway.ops):
            gw.spawn(trim_forever(), "malloc-trim")
            log.info(
                "gateway %r running: %d devices", config.gateway.microgrid.id, len(config.devices)
            )
            await supervise(gw, notifier, stop, reload_requested, load)
        log.info("stopped")
    finally:
        notifier.close()


def run(config: LoadedConfig, load: Loader | None = None) -> int:
    """`mgms run`: SIGTERM/SIGINT stop the gateway cleanly (exit 0), SIGHUP reloads."""

    async def main() -> None:
        stop = asyncio.Event()
        reload_requested = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, reload_requested.set)
        await serve(config, stop, reload_requested=reload_requested, load=load)

    asyncio.run(main())
    return 0
