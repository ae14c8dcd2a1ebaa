"""State files: what the one SQLite pattern (gateway.sqlite.Database, the connection on
its own thread) costs against the pattern it replaced (a shared connection under a lock,
each call through `asyncio.to_thread`), on the same SQL, in the same run.

Three loads, each timed both ways on fresh files:
- `records`: `--calls` flexibility record writes (a set point recorded before it is sent,
  then settled), awaited one after the other, as the control cycle does;
- `reads`: `--calls` record reads (an activation by id);
- `samples`: `--samples` readings written as the store flushes them (chunks of 1,000, a
  transaction each), with an audit event queued behind the first chunk, and how long
  that event waited.

Calls per second both ways (the best of three alternating rounds) and the ratio (new / old;
above 1 the new pattern is faster); the event's wait, the least of the rounds.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from gateway.flex.model import Activation
from gateway.flex.records import SCHEMA as RECORDS_SCHEMA
from gateway.flex.records import FlexRecords, RecordTables
from gateway.model import Reading
from gateway.sqlite import Database
from gateway.store import SCHEMA as STORE_SCHEMA
from gateway.store import WRITE_CHUNK as CHUNK

T = TypeVar("T")
#: runs a function of the connection and gives its result: `Database.call` or the old way
Call = Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ROUNDS = 3
ACT = Activation("act-1", T0, T0 + timedelta(minutes=15), p_kw=10.0, reservation_id="r1")


class LockedConnection:
    """The replaced pattern: one connection shared by worker threads under a lock."""

    def __init__(self, path: Path, schema: str) -> None:
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(schema)
        self._lock = threading.Lock()

    def _locked(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            return fn(self._conn)

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.to_thread(self._locked, fn)

    def close(self) -> None:
        self._conn.close()


async def record_writes(call: Call, calls: int) -> float:
    started = time.perf_counter()
    for i in range(calls):
        (seq,) = await call(
            lambda c, i=i: RecordTables(c).intend_setpoints("act-1", T0, [("bess1", "p", i, i)])
        )
        await call(lambda c, s=seq: RecordTables(c).settle_setpoints([(s, "confirmed", "")]))
    return calls / (time.perf_counter() - started)


async def record_reads(call: Call, calls: int) -> float:
    await call(
        lambda c: RecordTables(c).save_activation(
            T0, ACT, "accepted", 10.0, None, (), None, "active"
        )
    )
    started = time.perf_counter()
    for _ in range(calls):
        assert await call(lambda c: RecordTables(c).activation("act-1")) is not None
    return calls / (time.perf_counter() - started)


def readings(n: int) -> list[Reading]:
    """A poll of 500 points a second."""
    return [
        Reading(f"p{i % 500}", float(i), "KiloW", gateway_time=T0 + timedelta(seconds=i // 500))
        for i in range(n)
    ]


def rows_of(batch: list[Reading]) -> list[tuple[object, ...]]:
    """History rows (the point numbered by its id: p7 is 7)."""
    return [(int(r.point[1:]), r.gateway_time.timestamp(), r.value, None, None) for r in batch]


EVENT_SQL = "INSERT INTO events (ts, kind, point, detail) VALUES (0,?,?,?)"
EVENT = ("write", "p1", "{}")


async def samples_new(path: Path, n: int) -> tuple[float, float]:
    """The store's write path now: each 1,000-reading chunk one call on the database
    thread (rows built and inserted there, one transaction), an event queued behind the
    first chunk."""
    batch = readings(n)
    async with Database(path, STORE_SCHEMA, synchronous="NORMAL", label="store") as db:

        async def flush() -> None:
            for at in range(0, len(batch), CHUNK):
                chunk = batch[at : at + CHUNK]
                await db.call(lambda c, chunk=chunk: _insert(c, rows_of(chunk)))

        started = time.perf_counter()
        flushing = asyncio.ensure_future(flush())
        await asyncio.sleep(0)  # the flush has queued its first chunk
        queued = time.perf_counter()
        await db.call(lambda c: _tx(c, EVENT_SQL, EVENT))
        event_wait = time.perf_counter() - queued
        await flushing
        return n / (time.perf_counter() - started), event_wait


async def samples_old(path: Path, n: int) -> tuple[float, float]:
    """The store's former write path: the rows built in a worker thread, one transaction
    per 1,000-row chunk under the lock, so an event can get in between two chunks."""
    db = LockedConnection(path, STORE_SCHEMA)
    batch = readings(n)

    def write_all() -> None:
        rows = rows_of(batch)
        for at in range(0, len(rows), CHUNK):
            chunk = rows[at : at + CHUNK]
            db._locked(lambda c, chunk=chunk: _insert(c, chunk))

    try:
        started = time.perf_counter()
        flushing = asyncio.ensure_future(asyncio.to_thread(write_all))
        await asyncio.sleep(0)
        queued = time.perf_counter()
        await db.call(lambda c: _tx(c, EVENT_SQL, EVENT))
        event_wait = time.perf_counter() - queued
        await flushing
        return n / (time.perf_counter() - started), event_wait
    finally:
        db.close()


def _tx(conn: sqlite3.Connection, sql: str, args: tuple[object, ...]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(sql, args)
    conn.execute("COMMIT")


def _insert(conn: sqlite3.Connection, rows: list[tuple[object, ...]]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO history VALUES (?,?,?,?,?)", rows)
    conn.execute("COMMIT")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=20000)
    args = parser.parse_args()
    out: dict[str, object] = {"calls": args.calls, "sample_rows": args.samples, "rounds": ROUNDS}
    with tempfile.TemporaryDirectory(prefix="mgms-bench-") as tmp:
        work = Path(tmp)
        # each way ROUNDS times, alternating, on fresh files: the best of each (the machine
        # is shared, so single runs swing)
        for name, load in (("records", record_writes), ("reads", record_reads)):
            new, old = 0.0, 0.0
            for n in range(ROUNDS):
                old_db = LockedConnection(work / f"{name}-old{n}.sqlite", RECORDS_SCHEMA)
                try:
                    old = max(old, await load(old_db.call, args.calls))
                finally:
                    old_db.close()
                async with FlexRecords(work / f"{name}-new{n}.sqlite") as records:
                    new = max(new, await load(records.db.call, args.calls))
            out[name] = {
                "new_per_s": round(new),
                "old_per_s": round(old),
                "ratio": round(new / old, 2),
            }
        new_rate, new_wait, old_rate, old_wait = 0.0, float("inf"), 0.0, float("inf")
        for n in range(ROUNDS):
            rate, wait = await samples_old(work / f"store-old{n}.sqlite", args.samples)
            old_rate, old_wait = max(old_rate, rate), min(old_wait, wait)
            rate, wait = await samples_new(work / f"store-new{n}.sqlite", args.samples)
            new_rate, new_wait = max(new_rate, rate), min(new_wait, wait)
        out["samples"] = {
            "new_rows_per_s": round(new_rate),
            "old_rows_per_s": round(old_rate),
            "ratio": round(new_rate / old_rate, 2),
            "event_wait_ms_new": round(1000 * new_wait, 1),
            "event_wait_ms_old": round(1000 * old_wait, 1),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
