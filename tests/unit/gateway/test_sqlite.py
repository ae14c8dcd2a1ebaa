"""gateway.sqlite: how every state file is opened, threaded, written and read by tools."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from gateway.errors import StoreError
from gateway.flex.records import FlexRecords
from gateway.north.config import RetryPolicy
from gateway.north.ledger import Ledger
from gateway.north.outbox import Outbox
from gateway.sqlite import Database, read_only, transaction
from gateway.store import Store

SCHEMA = "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER NOT NULL);"

#: PRAGMA synchronous answers with a number
LEVEL = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def _pragmas(conn: sqlite3.Connection) -> tuple[str, str, int]:
    journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    synchronous = LEVEL[conn.execute("PRAGMA synchronous").fetchone()[0]]
    busy = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    return journal, synchronous, busy


async def test_a_file_opens_with_its_folder_wal_its_level_and_schema(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "x.sqlite"
    for level in ("FULL", "NORMAL"):
        async with Database(path, SCHEMA, synchronous=level, label="test file") as db:
            assert await db.call(_pragmas) == ("wal", level, 5000)
            await db.call(lambda c: c.execute("INSERT OR REPLACE INTO t VALUES ('a', 1)"))
    with read_only(path, "test file") as conn:
        assert conn.execute("SELECT k, v FROM t").fetchall() == [("a", 1)]


async def test_every_call_runs_on_the_one_database_thread(tmp_path: Path) -> None:
    loop_thread = threading.get_ident()
    async with Database(tmp_path / "x.sqlite", SCHEMA, synchronous="NORMAL", label="x") as db:
        threads = {await db.call(lambda _c: threading.get_ident()) for _ in range(5)}
        futures = [db.submit(lambda _c: threading.get_ident()) for _ in range(5)]
        for future in futures:
            threads.add(await future)
    assert len(threads) == 1 and loop_thread not in threads


async def test_a_failed_transaction_names_the_file_and_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite"

    def two_rows_second_bad(conn: sqlite3.Connection) -> None:
        with transaction(conn):
            conn.execute("INSERT INTO t VALUES ('a', 1)")
            conn.execute("INSERT INTO t VALUES ('b', NULL)")  # v is NOT NULL

    async with Database(path, SCHEMA, synchronous="NORMAL", label="test file") as db:
        with pytest.raises(StoreError, match=rf"test file {path}: NOT NULL constraint failed"):
            await db.call(two_rows_second_bad)
        assert await db.call(lambda c: c.execute("SELECT COUNT(*) FROM t").fetchone()[0]) == 0
        assert not await db.call(lambda c: c.in_transaction)


async def test_an_unusable_path_names_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    path = blocker / "x.sqlite"
    db = Database(path, SCHEMA, synchronous="FULL", label="test file")
    with pytest.raises(StoreError, match=f"cannot open test file {path}"):
        await db.open()
    with pytest.raises(StoreError, match=f"test file {path}: database is not open"):
        await db.call(lambda c: c.execute("SELECT 1"))


async def test_a_file_that_is_not_a_database_names_it(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite"
    path.write_bytes(b"this is no sqlite file, it only has the name of one" * 20)
    with pytest.raises(StoreError, match=f"cannot open test file {path}: file is not a database"):
        await Database(path, SCHEMA, synchronous="FULL", label="test file").open()


async def test_read_only_reads_while_the_owner_writes_and_never_writes(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite"
    async with Database(path, SCHEMA, synchronous="NORMAL", label="test file") as db:
        await db.call(lambda c: c.execute("INSERT INTO t VALUES ('a', 1)"))
        with read_only(path, "test file") as conn:
            assert conn.execute("SELECT v FROM t").fetchall() == [(1,)]
            await db.call(lambda c: c.execute("INSERT INTO t VALUES ('b', 2)"))
            assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 2
        with (
            pytest.raises(StoreError, match=rf"test file {path}: attempt to write a readonly"),
            read_only(path, "test file") as conn,
        ):
            conn.execute("DELETE FROM t")
        assert await db.call(lambda c: c.execute("SELECT COUNT(*) FROM t").fetchone()[0]) == 2


def test_read_only_of_a_missing_file_names_it_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "gone.sqlite"
    with (
        pytest.raises(StoreError, match=f"cannot open store {path}: no such file"),
        read_only(path, "store"),
    ):
        pass
    assert not path.exists()


async def test_each_state_file_keeps_its_durability(tmp_path: Path) -> None:
    """The outbox syncs every commit (stored before sent must survive a power cut); the
    store, the flexibility records and the inbound ledger survive a crash of the process."""
    store = await Store.open(tmp_path / "gateway.sqlite")
    try:
        assert (await store._db.call(_pragmas))[:2] == ("wal", "NORMAL")
    finally:
        await store.close()
    async with FlexRecords(tmp_path / "flex.sqlite") as records:
        assert (await records.db.call(_pragmas))[:2] == ("wal", "NORMAL")
    async with Ledger(tmp_path / "ledger.sqlite") as ledger:
        assert (await ledger._db.call(_pragmas))[:2] == ("wal", "NORMAL")
    async with Outbox(tmp_path / "outbox.sqlite", RetryPolicy()) as outbox:
        assert (await outbox._db.call(_pragmas))[:2] == ("wal", "FULL")
