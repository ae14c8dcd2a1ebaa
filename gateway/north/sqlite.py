"""One SQLite connection on its own thread, for the northbound state files.

SQLite calls block (a durable commit waits for fsync), so every call runs on one dedicated
thread that owns the connection; the asyncio loop only awaits. WAL mode lets readers (an
operator's `sqlite3` shell, the stats) run while we write; `synchronous=FULL` (the
default here) makes a committed row survive power loss, which is what "stored before sent"
means for the outbox; files that can do with surviving a process crash choose NORMAL.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from gateway.errors import StoreError

T = TypeVar("T")


class SqliteThread:
    """A connection to `path` used only from its own worker thread."""

    def __init__(self, path: Path, schema: str, *, synchronous: str = "FULL") -> None:
        self.path = path
        self._schema = schema
        self._synchronous = synchronous
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"db-{self.path.stem}")
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._connect)
        except BaseException:
            self._executor.shutdown(wait=True)
            self._executor = None
            raise

    def _connect(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None)  # explicit transactions
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(self._schema)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc
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

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Run `fn(connection)` on the database thread; the future carries its result
        (sqlite3 errors become StoreError naming the file)."""
        if self._executor is None:
            raise StoreError(f"{self.path}: database is not open")
        return asyncio.get_running_loop().run_in_executor(self._executor, self._guarded, fn)

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.submit(fn)

    def _guarded(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise StoreError(f"{self.path}: database is not open")
        try:
            return fn(conn)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.rollback()
            raise StoreError(f"{self.path}: {exc}") from exc
