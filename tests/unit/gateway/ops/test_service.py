"""The lifecycle around a gateway: READY after the first connection attempts, the watchdog
fed only while alive, reloads on request, STOPPING, and shutdown hooks with links up."""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import store as store_module
from gateway.app import Gateway, migrate_state
from gateway.config import LoadedConfig
from gateway.loader import load_config
from gateway.model import Command, CommandStatus
from gateway.ops.health import CheckResult
from gateway.ops.notify import Notifier
from gateway.ops.service import supervise
from gateway.sqlite import Database
from gateway.store import STORE_FILE, needs_migration
from tests.support.memory_driver import MemoryDevice
from tests.support.waiting import until
from tests.unit.gateway.ops.conftest import CONFIG, MAPPING, Rig, field_factory
from tests.unit.gateway.test_store_schema import old_store


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[tuple[socket.socket, Notifier]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.setblocking(False)
    notifier = Notifier(str(tmp_path / "notify.sock"), watchdog_usec=100_000)
    try:
        yield sock, notifier
    finally:
        notifier.close()
        sock.close()


#: what systemd is told when a stop comes during the migration
STOPPING = "STOPPING=1\nSTATUS=stopping: ending the store's migration before start"


def drain(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


async def test_ready_watchdog_reload_stopping(
    rig: Rig, systemd: tuple[socket.socket, Notifier]
) -> None:
    sock, notifier = systemd
    stop, reload_requested = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(supervise(rig.gw, notifier, stop, reload_requested, rig.load))
    messages: list[str] = []
    await until(lambda: messages.extend(drain(sock)) or any("WATCHDOG" in m for m in messages))
    ready = next(m for m in messages if m.startswith("READY=1"))
    assert "STATUS=running: 2/2 devices up" in ready
    assert messages[0].startswith("STATUS=starting: connecting 2 devices")

    # not alive: no more pings, so systemd would restart the service
    alive = [False]
    rig.gw.health.add_liveness("test", lambda: CheckResult(alive[0], "stuck"))
    await asyncio.sleep(0.15)
    drain(sock)
    await asyncio.sleep(0.3)
    assert not any("WATCHDOG" in m for m in drain(sock))
    alive[0] = True
    await until(lambda: any("WATCHDOG" in m for m in drain(sock)))

    reload_requested.set()
    messages = []
    await until(lambda: messages.extend(drain(sock)) or any("reloaded" in m for m in messages))
    assert any(m.startswith("RELOADING=1") for m in messages)
    assert not reload_requested.is_set()

    stop.set()
    await asyncio.wait_for(task, 5)
    assert any(m.startswith("STOPPING=1") for m in drain(sock))


async def test_a_dead_device_does_not_hold_readiness_back(tmp_path: Path, rig: Rig) -> None:
    """READY comes once every first connection attempt ended, also a failed one."""
    dead = MemoryDevice()
    dead.link_up = False
    fields = {"dev-a": MemoryDevice(), "dev-b": dead}
    config = rig.load()
    config.gateway.ops.ready_wait_s = 120.0
    async with Gateway(config, driver_factory=field_factory(fields)) as gw:
        stop = asyncio.Event()
        started = time.monotonic()
        stop.set()  # return right after READY
        await supervise(gw, Notifier(None), stop)
        assert time.monotonic() - started < 60  # it did not sit out ready_wait_s
        assert not gw.sessions["dev-b"].up and gw.sessions["dev-a"].up


async def test_shutdown_hooks_run_last_first_while_links_are_up(tmp_path: Path, rig: Rig) -> None:
    fields: dict[str, MemoryDevice] = {}
    order: list[str] = []
    gw = Gateway(rig.load(), driver_factory=field_factory(fields))
    async with gw:
        assert await gw.wait_connected(2)

        async def finish_activation() -> None:  # registered last, so it runs first
            assert gw.controller is not None
            result = await gw.controller.write(Command("a.set", 0.0, origin="shutdown"))
            order.append(f"activation:{result.status.value}")

        async def flush_outbox() -> None:
            order.append("outbox")

        async def hangs() -> None:
            order.append("hangs")
            await asyncio.sleep(30)

        gw.on_shutdown("hangs", hangs)
        gw.on_shutdown("outbox", flush_outbox)
        gw.on_shutdown("activation", finish_activation)
        stopping = time.monotonic()
    took = time.monotonic() - stopping
    assert order == [f"activation:{CommandStatus.CONFIRMED.value}", "outbox", "hangs"]
    assert took < 15  # the hanging hook (30 s) was cut off after drain_s (1 s)
    assert fields["dev-a"].values["a.set"] == 0.0
    assert gw.store is not None


def former_site(tmp_path: Path, rows: int) -> tuple[LoadedConfig, Path]:
    """A site's config with a store of the former schema, grown by `rows` samples."""
    (tmp_path / "m.yaml").write_text(textwrap.dedent(MAPPING))
    (tmp_path / "gw.yaml").write_text(textwrap.dedent(CONFIG))
    config = load_config(tmp_path / "gw.yaml")
    config.gateway.state_dir.mkdir(parents=True)
    store = config.gateway.state_dir / STORE_FILE
    old_store(store)
    if not rows:
        return config, store
    conn = sqlite3.connect(store)
    with conn:
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO samples SELECT 'p' || (i % 40), 1.6e9 + i, i * 0.5, 'good', NULL FROM n",
            (rows,),
        )
    conn.close()
    return config, store


async def test_a_former_store_is_migrated_before_start_with_systemd_kept_waiting(
    tmp_path: Path, systemd: tuple[socket.socket, Notifier]
) -> None:
    """The one-time migration after an upgrade runs before the gateway opens the store,
    while systemd is told to extend the start timeout; a current store is left alone."""
    sock, notifier = systemd
    config, store = former_site(tmp_path, 0)
    assert needs_migration(store)
    await migrate_state(config, notifier)
    messages = drain(sock)
    assert messages[0] == "STATUS=starting: migrating the store's history"
    assert messages[1].startswith("EXTEND_TIMEOUT_USEC=")
    assert not needs_migration(store)
    await migrate_state(config, notifier)  # nothing left to do: nothing said
    assert drain(sock) == []


async def test_a_stop_during_the_migration_rolls_it_back_at_once(
    tmp_path: Path, systemd: tuple[socket.socket, Notifier]
) -> None:
    """`systemctl stop` during a long migration: its transaction is interrupted and rolled
    back, the store is left of the former schema with every row (the next start migrates
    it), and the gateway does not start. Before, the stop waited for the migration's end."""
    sock, notifier = systemd
    # a site's months of history: a migration of a second or more
    config, store = former_site(tmp_path, 1_000_000)
    conn = sqlite3.connect(store)
    rows = conn.execute("SELECT count(*) FROM samples").fetchone()[0]
    conn.close()
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stop.set)
    assert not await migrate_state(config, notifier, stop)
    told = drain(sock)
    assert told[0] == "STATUS=starting: migrating the store's history"
    # systemd learns of the stop when it comes, not only when the gateway exits
    assert STOPPING in told
    assert needs_migration(store)
    conn = sqlite3.connect(store)
    try:
        assert conn.execute("SELECT count(*) FROM samples").fetchone()[0] == rows
        assert conn.execute("SELECT type FROM sqlite_master WHERE name = 'samples'").fetchone() == (
            "table",
        )
    finally:
        conn.close()
    # a stop before it began: nothing is touched
    assert not await migrate_state(config, notifier, stop)
    assert needs_migration(store) and drain(sock) == []


async def test_a_stop_in_the_migrations_uninterruptible_end_lets_it_finish_but_not_start(
    tmp_path: Path,
    systemd: tuple[socket.socket, Notifier],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SQLite does not interrupt a commit (nor the drop of the former table): a stop that
    comes then lets the migration finish, and the gateway still does not start. systemd
    hears of the stop at once, and the journal says why the stop waits and how it ended
    (on a large store the wait was 39 s)."""
    sock, notifier = systemd
    config, store = former_site(tmp_path, 300_000)
    monkeypatch.setattr(Database, "interrupt", lambda self: None)  # as in the commit
    monkeypatch.setattr(store_module, "LATE_STOP_S", 0.0)  # the test's migration is short
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, stop.set)
    with caplog.at_level(logging.INFO, logger="gateway"):
        assert not await migrate_state(config, notifier, stop)
    assert not needs_migration(store)  # it finished: the next start has nothing to do
    told = drain(sock)
    assert STOPPING in told
    # the stop's timeout is extended when the stop comes, not at the next beat (10 s on);
    # systemctl status says what the stop waits for
    assert told[told.index(STOPPING) + 1].startswith("EXTEND_TIMEOUT_USEC=")
    assert told[-1] == (
        "STATUS=stopping: waiting for the store migration's last step, which cannot be interrupted"
    )
    said = [r.getMessage() for r in caplog.records]
    assert "store: stop received during the migration; the gateway will not start" in said
    assert any("which cannot be interrupted: the stop waits for it" in m for m in said), said
    # and what the silent seconds after it are (the log copied into the store at close)
    assert said[-2:] == [
        "store: the migration finished before the stop took hold; not starting",
        "store: writing the migrated store out of its write-ahead log",
    ]
