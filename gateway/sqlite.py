"""SQLite state files, all opened and used one way.

Every file the gateway keeps in its state directory (the store, the flexibility records,
the north outbox and inbound ledger) is a `Database`: the file is opened once (its folder
made, WAL journal, the file's own `synchronous` level, a busy timeout, its schema) and its
one connection lives on one dedicated thread that runs every call; the event loop only
awaits (`call`, `submit`). SQLite calls block — a durable commit waits for fsync — so they
never run on the loop, and one thread per file keeps the connection's use serial without
a lock. WAL lets readers in other processes (an operator's `sqlite3` shell, `read_only`)
read while the gateway writes.

Durability is chosen per file and said where the file is opened: `FULL` syncs each commit
(the row survives a power cut), `NORMAL` syncs at checkpoints (a commit survives a crash of
the process; a power cut may lose the last ones).

Synchronous tools (the CLI, tests and benchmarks reading a state file, possibly while a
gateway runs) use `read_only`; the SQL itself is written once, as functions of a
connection, which both run.

Every sqlite3 error becomes a StoreError naming the file.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Literal, TypeVar

from gateway.errors import StoreError

T = TypeVar("T")

#: `FULL`: a committed row survives a power cut; `NORMAL`: it survives a crash of the process
Synchronous = Literal["FULL", "NORMAL"]

#: how long a statement waits for another connection's lock before failing
BUSY_TIMEOUT_MS = 5000


class Database:
    """The state file `path` (`label` names it in errors), its connection used only from
    its own thread; `async with Database(...)` or `open`/`close`."""

    def __init__(self, path: Path, schema: str, *, synchronous: Synchronous, label: str) -> None:
        self.path = path
        self.label = label
        self._schema = schema
        self._synchronous = synchronous
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    async def __aenter__(self) -> Database:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _error(self, exc: BaseException) -> StoreError:
        return StoreError(f"{self.label} {self.path}: {exc}")

    async def open(self) -> None:
        if self._executor is not None:
            raise StoreError(f"{self.label} {self.path}: already open")
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"db-{self.path.stem}")
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._connect)
        except BaseException:
            self._executor.shutdown(wait=True)
            self._executor = None
            raise

    def _connect(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # autocommit: transactions are explicit (`transaction`)
            conn = sqlite3.connect(self.path, isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open {self.label} {self.path}: {exc}") from exc
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.executescript(self._schema)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"cannot open {self.label} {self.path}: {exc}") from exc
        self._conn = conn

    async def close(self) -> None:
        if self._executor is None:
            return
        executor, self._executor = self._executor, None
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._disconnect)
        finally:
            executor.shutdown(wait=True)

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def interrupt(self) -> None:
        """Abort the statement running on the database thread (from any thread: SQLite
        allows it); its call fails with a StoreError saying `interrupted`, rolled back."""
        if self._conn is not None:
            self._conn.interrupt()

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Run `fn(connection)` on the database thread; the future carries its result
        (sqlite3 errors become StoreError naming the file, an open transaction is rolled
        back)."""
        if self._executor is None:
            raise StoreError(f"{self.label} {self.path}: database is not open")
        return asyncio.get_running_loop().run_in_executor(self._executor, self._guarded, fn)

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.submit(fn)

    def _guarded(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise StoreError(f"{self.label} {self.path}: database is not open")
        try:
            return fn(conn)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.rollback()
            raise self._error(exc) from exc


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction, taken at its start (`BEGIN IMMEDIATE`: no deadlock upgrading
    a read lock); committed at the end, rolled back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.rollback()
        raise
    conn.execute("COMMIT")


@contextmanager
def read_only(path: Path, label: str) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the state file `path` for a synchronous tool (the CLI, a
    test or benchmark reading what a gateway wrote, perhaps while it runs). The file must
    exist; nothing can be written through it; errors are StoreErrors naming the file."""
    if not path.is_file():
        raise StoreError(f"cannot open {label} {path}: no such file")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {label} {path}: {exc}") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        yield conn
    except sqlite3.Error as exc:
        raise StoreError(f"{label} {path}: {exc}") from exc
    finally:
        conn.close()


def limit_heap(limit: int) -> None:
    """Set SQLite's process-wide soft heap limit to `limit` bytes (every connection's page
    cache together; see gateway/allocator.py). The pragma acts on the library, not on a
    file: an in-memory connection is enough to set it."""
    with closing(sqlite3.connect(":memory:")) as conn:
        conn.execute(f"PRAGMA soft_heap_limit={int(limit)}")
