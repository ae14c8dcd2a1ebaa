"""SQLite store in the state directory: samples with retention and an append-only audit log.

The file is a `gateway.sqlite.Database` (WAL, its connection on its own thread) written
with synchronous=NORMAL: a crash of the process loses nothing committed, a power cut at
worst the last seconds of history. Samples are buffered on the event loop and written in
batches, because a commit per reading would cost a sync.

The history is one B-tree clustered by (point number, time) (`history`, a WITHOUT ROWID
table; `points` numbers the point ids; the `samples` view reads it by point id as the
former table did): a row is one insert of about 30 bytes, not a table row plus an index
entry keyed by the point's text. A point has one row per time: a second reading of it at
the same gateway time replaces the first (the later one is what the point read then). A
store file of the former schema (a `samples` table) is migrated on open, in one
transaction.

The buffer is written point by point, several seconds at a time (`flush_due`, every
`HOLD_S`): the clustering keeps each point's rows together, so a write of one row per
point dirties one page per point (a page write, and a page copy at the checkpoint), and
that page, not the row, is what a stored row costs. Holding `HOLD_S` seconds of a point's
rows puts them on one page in one write. To go further without holding more in memory
(a crash loses what is held), flushes write `recent`, a table of the same shape that stays
small (`MOVE_S` of rows: a few rows of many points per page), and every `MOVE_S` its rows
move into `history` in one INSERT ... SELECT per range of points: a page of `history` per
point a minute instead of one per flush. Queries read both tables (a row of `recent` wins
over one of `history` at the same time: it is the later).
A query (`range`, `latest`) writes the rows of its point first, and `close` the whole
buffer; a crash loses at most `HOLD_S` seconds of history.

Samples are stored by exception, as IEC 61850 reports are sent (`gateway.mapping.Storage`):
a reading is kept when its value moved beyond the point's deadband from the last kept one,
when its quality changed, or when the integrity period passed; a flat signal so costs a
dictionary look-up per poll. `range` gives the held value back at the point's poll interval
between kept rows (and up to the last poll that confirmed it), so the history reads as if
every poll had been stored, within the deadband. A gap longer than one and a half
integrity periods (the gateway was not running) stays a gap, and nothing is held after a
row without a value (the link was down).

A hold never outlives the run that stored its row. Each start of the store is a row of
`runs`, and every flush advances its `alive_until` (the newest reading it committed or
confirmed) in the same transaction as the samples, or alone when nothing changed; a clean
stop also keeps each held value's last confirmation as a row. A killed process (crash,
OOM, SIGKILL) learns nothing of its end, so without this a restart within one and a half
integrity periods would hold the last value across the time nobody read it: flat energy
counters, 0 kW measured, in a verification. The bound: a killed run's holds end at its
last flush, within one flush period (`HOLD_S`) before the kill (readings after that flush are lost
with the process) and at most half a poll after it; a power cut may also lose the last
commits, and the hold ends earlier still, with them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import sqlite3
import time
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from gateway.errors import StoreError
from gateway.mapping import Device
from gateway.model import GOOD, Acquired, PointSet, Quality, QualityFlag, Reading, Validity, Value
from gateway.sqlite import Database, read_only, transaction

log = logging.getLogger(__name__)

# (a store written before `history` has a `samples` table: `_migrate` replaces it by this)
# a join in each arm of the union: a query of one point then searches each table by its pid
# (a join with the union of both tables scanned the whole history for a filter on time)
_SAMPLES_VIEW = """CREATE VIEW IF NOT EXISTS samples (point, ts, value, quality, source_ts) AS
    SELECT points.id, ts, value, coalesce(quality, 'good'), source_ts
    FROM points JOIN history USING (pid)
    UNION ALL
    SELECT points.id, ts, value, coalesce(quality, 'good'), source_ts
    FROM points JOIN recent USING (pid)"""

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS points (  -- a number for each point id: history is keyed by it
    pid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS history (  -- clustered by point and time: one B-tree, no index
    pid INTEGER NOT NULL,      -- points.pid
    ts REAL NOT NULL,          -- gateway time, unix seconds
    value REAL,
    quality TEXT,              -- NULL: good; else as Quality's str, e.g. invalid[comm_failure]
    source_ts REAL,
    PRIMARY KEY (pid, ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS recent (  -- the newest rows, moved into history every MOVE_S
    pid INTEGER NOT NULL,
    ts REAL NOT NULL,
    value REAL,
    quality TEXT,
    source_ts REAL,
    PRIMARY KEY (pid, ts)
) WITHOUT ROWID;
-- the history by point id, as an operator's sqlite3 shell or a tool reads it
{_SAMPLES_VIEW};
CREATE TABLE IF NOT EXISTS runs (  -- each start of the store
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    opened REAL NOT NULL,      -- wall clock, unix seconds
    alive_until REAL           -- gateway time of the newest reading it committed or
                               -- confirmed (NULL: none); a hold ends there
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,        -- write, write_refused, link_up, link_down, error, ...
    device TEXT,
    point TEXT,
    detail TEXT NOT NULL       -- JSON object
);
CREATE TRIGGER IF NOT EXISTS events_append_only_u BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_append_only_d BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
"""


# a second row of a point at the same time replaces the first: the later reading (a pushed
# one after a poll's, the confirmation kept at close) is what the point read then
_INSERT_SAMPLE = "INSERT OR REPLACE INTO recent VALUES (?,?,?,?,?)"
_INSERT_GOOD = "INSERT OR REPLACE INTO recent VALUES (?,?,?,NULL,NULL)"
_COLUMNS = "ts, value, quality, source_ts"

#: the store's file in the state directory
STORE_FILE = "gateway.sqlite"

#: sample rows written per transaction
WRITE_CHUNK = 1000

#: seconds of readings `flush_due` holds before it writes them
HOLD_S = 5.0

#: seconds of rows `recent` gathers before they move into `history`
MOVE_S = 60.0

#: seconds a stop's interrupt may go unheeded before the migration is said to be in its
#: last step (SQLite interrupts a running statement within milliseconds)
LATE_STOP_S = 1.0

#: points whose recent rows move in one transaction (about MOVE_S rows each; 10-15 ms of
#: the database thread, which an audit event or a query may wait for)
MOVE_CHUNK = 100


@dataclass(frozen=True)
class Sample:
    point: str
    time: datetime
    value: float | None
    quality: Quality
    source_time: datetime | None


@dataclass(frozen=True)
class Event:
    id: int
    time: datetime
    kind: str
    device: str | None
    point: str | None
    detail: dict[str, Any]


def _ts(t: datetime) -> float:
    return t.timestamp()


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def _quality_text(q: Quality) -> str | None:
    """The quality column: NULL for good (nearly every row), else the quality's text."""
    return None if q is GOOD or q == GOOD else str(q)


def _parse_quality(text: str | None) -> Quality:
    if text is None:
        return GOOD
    validity, _, flags = text.partition("[")
    return Quality(
        Validity(validity),
        frozenset(QualityFlag(f) for f in flags.rstrip("]").split(",") if f),
    )


def _numeric(value: object) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return None


Row = tuple[str, float, float | None, str | None, float | None]


def _good_rows(pid: int, pairs: bytes) -> Iterator[tuple[int, float, float]]:
    """(pid, ts, value) of a point's good pairs, without a Python step per row."""
    values = iter(memoryview(pairs).cast("d"))
    return zip(itertools.repeat(pid), values, values)


@dataclass(frozen=True, slots=True)
class Policy:
    """When readings of a point are kept (from its `storage:`), and how often it is read."""

    deadband: float
    integrity_s: float
    poll_s: float


#: a point's last kept value before it has one (a reading is always kept then)
_NOTHING: Any = object()


class _Track:
    """What the store knows of one point stored by exception, kept across flushes: its
    policy, the last kept reading and when it was last confirmed, and its rows waiting for
    the write. Good float rows without a device time (nearly every row) are (ts, value)
    pairs in an array, 16 bytes a row, emptied in place at each flush; any other row as
    its row. One look-up per reading finds all of it."""

    __slots__ = (
        "deadband",
        "integrity_s",
        "pairs",
        "point",
        "quality",
        "record",
        "rows",
        "seen",
        "stored",
        "value",
    )

    def __init__(self, point: str) -> None:
        """A track that keeps every reading (a point without a policy) until
        `configure` gives it its policy."""
        self.point = point
        self.deadband, self.integrity_s = 0.0, -1.0  # no time since the last is below
        self.value: Any = _NOTHING
        self.quality: Quality = GOOD
        self.stored = self.seen = -math.inf
        self.pairs = array("d")
        self.rows: list[Row] = []
        #: the last device-stamped record kept: (device time, value, quality)
        self.record: tuple[float, Any, Quality] | None = None

    @property
    def kept(self) -> bool:
        return self.value is not _NOTHING

    def keep_all(self) -> _Track:
        """From now on every reading is kept, as for a point without a policy."""
        self.deadband, self.integrity_s = 0.0, -1.0
        self.value, self.stored, self.seen = _NOTHING, -math.inf, -math.inf
        return self

    def take_pairs(self) -> bytes:
        """The good pairs waiting for the write, as bytes of doubles; the array emptied
        in place for the next (what is handed over is never the live buffer: a reading
        added while the write runs is the next flush's)."""
        pairs = self.pairs.tobytes()
        del self.pairs[:]
        return pairs

    def take_rows(self) -> list[Row]:
        """The other rows waiting for the write; a new list for the next."""
        rows, self.rows = self.rows, []
        return rows


_NUMBERS = (float, int)  # by exact type: a bool is compared as a state, not a number


def _unchanged(value: object, last: object, deadband: float) -> bool:
    if value == last:
        return True
    if type(value) in _NUMBERS and type(last) in _NUMBERS:
        return bool(abs(value - last) <= deadband)  # type: ignore[operator]
    return False


class Store:
    """Open with `await Store.open(path)`; close with `await store.close()`."""

    def __init__(self, db: Database, run: int, pids: dict[str, int]) -> None:
        self._db = db
        #: each point id's number in `points` (used on the database thread only)
        self._pids = pids
        #: this start's row in `runs`, and the `alive_until` written there last (written
        #: on the database thread)
        self._run = run
        self._alive = 0.0
        self.path = db.path
        #: every point's track (its rows waiting for the write among them), and the tracks
        #: that hold rows, by point, in the order they got them (written point by point:
        #: see the module's docstring)
        self._tracks: dict[str, _Track] = {}
        #: the tracks of each point set of more than one point, in its order
        self._sets: WeakKeyDictionary[PointSet, list[_Track]] = WeakKeyDictionary()
        self._dirty: dict[str, _Track] = {}
        self._pending_count = 0
        #: monotonic time of the last move of `recent` into `history`
        self._moved_at = time.monotonic()
        #: monotonic time of the last flush: `flush_due` writes `HOLD_S` after it
        self._flushed_at = time.monotonic()
        #: held by a flush until its rows are written: one flush at a time
        self._flushing = asyncio.Lock()
        #: points stored by exception; any other point keeps every reading
        self._policies: dict[str, Policy] = {}
        self._last_time: datetime | None = None
        self._last_ts = 0.0
        #: the newest poll time seen: this run read up to there (its `alive_until`)
        self._newest_ts = 0.0
        #: rows handed to the database so far (readings kept, and the tails kept at close)
        self.kept = 0

    @classmethod
    async def open(cls, path: Path) -> Store:
        # NORMAL: history and audit survive a crash of the process; a power cut may lose
        # the last commits, which a sync per batch would not be worth
        db = Database(path, SCHEMA, synchronous="NORMAL", label="store")
        await db.open()
        try:
            await db.call(_migrate)
            run = await db.call(_start_run)
            pids = await db.call(_load_pids)
        except BaseException:
            await db.close()
            raise
        return cls(db, run, pids)

    async def close(self) -> None:
        """Flush, keep the last confirmation of every held value (so history reaches the
        stop, not only the last kept row), close."""
        await self.flush()
        tails = [
            (t.point, t.seen, _numeric(t.value), _quality_text(t.quality), None)
            for t in self._tracks.values()
            if t.seen > t.stored and t.kept and t.value is not None
        ]
        self._tracks.clear()
        self._sets = WeakKeyDictionary()
        self.kept += len(tails)
        if tails:
            await self._db.call(partial(self._commit, rows=tails, alive=self._newest_ts))
        await self._db.close()

    # -- writing -----------------------------------------------------------------------

    def configure(self, devices: Iterable[Device]) -> None:
        """Store the readable points of `devices` by exception, each by its `storage:`
        (at start and on every reload; what is kept of points still mapped stays)."""
        self._policies = {
            p.id: Policy(p.storage.deadband, p.storage.integrity_s, d.poll_interval)
            for d in devices
            for p in d.points
            if p.direction.readable
        }
        old, tracks = self._tracks, {}
        for point, policy in self._policies.items():
            track = tracks[point] = old.pop(point) if point in old else _Track(point)
            track.deadband, track.integrity_s = policy.deadband, policy.integrity_s
        # points no longer stored by exception: their rows still wait for the write
        for point, track in old.items():
            if track.pairs or track.rows:
                tracks[point] = track.keep_all()
        self._tracks = tracks
        self._sets = WeakKeyDictionary()

    def add(self, reading: Reading) -> None:
        """Buffer one reading if it is to be kept (see `add_all`)."""
        self._add_batch(reading)

    def add_all(self, items: Iterable[Acquired]) -> None:
        """Buffer what is to be kept of batches (and readings, each the batch of one
        point) on the event loop thread: the point table's listener, once per poll;
        `flush` writes the buffer."""
        for item in items:
            self._add_batch(item)

    def _tracks_of(self, points: PointSet) -> list[_Track]:
        """The tracks of a batch's points, in order (kept per point set: a driver's block,
        the same object every poll)."""
        found = self._sets.get(points)
        if found is None:
            tracks = self._tracks
            found = self._sets[points] = [tracks.get(p) or self._new_track(p) for p in points.ids]
        return found

    def _new_track(self, point: str) -> _Track:
        """The track of a point not stored by exception: every reading is kept."""
        track = self._tracks[point] = _Track(point)
        return track

    def _add_batch(self, batch: Acquired) -> None:
        """The per-point work is one loop over the batch's values and its points' tracks;
        a Python object is made only for what is kept."""
        if type(batch) is Reading:  # one point: its track without a point set looked up
            tracks = [self._tracks.get(batch.point) or self._new_track(batch.point)]
            values: Sequence[Value] = (batch.value,)
        else:
            tracks, values = self._tracks_of(batch.points), batch.values
        when = batch.gateway_time
        if when is not self._last_time:  # the batches of a poll share their time
            self._last_time, self._last_ts = when, when.timestamp()
            self._newest_ts = max(self._newest_ts, self._last_ts)
        ts, quality, dirty = self._last_ts, batch.quality, self._dirty
        added = 0
        if batch.source_time is not None:
            # a device's own time stamp makes a reading a record (a load profile entry):
            # kept, and not what later readings are compared with
            # kept once: a driver that reports its latest record at every poll (an IEC 104
            # value with its time tag, until the next arrives) hands the same one again
            source = _ts(batch.source_time)
            rest = (_quality_text(quality), source)
            for track, value in zip(tracks, values, strict=True):
                record = (source, value, quality)
                if track.record == record:
                    continue
                track.record = record
                if not track.pairs and not track.rows:
                    dirty[track.point] = track
                track.rows.append((track.point, ts, _numeric(value), *rest))
                added += 1
        else:
            good = quality is GOOD or quality == GOOD
            for track, value in zip(tracks, values, strict=True):
                last = track.value
                if (
                    # the value first: a moving one is decided with the fewest tests
                    (
                        value == last
                        # no deadband: equal or changed, as just compared
                        or (track.deadband and _unchanged(value, last, track.deadband))
                    )
                    and ts - track.stored < track.integrity_s
                    and (track.quality is quality or track.quality == quality)
                ):
                    track.seen = ts
                    continue
                track.value, track.quality, track.stored, track.seen = value, quality, ts, ts
                added += 1
                # a pair only while the track holds no other row: a point's rows are
                # written in the order read (at the same time, the later replaces)
                if good and type(value) is float and not track.rows:
                    pairs = track.pairs
                    if not pairs:
                        dirty[track.point] = track
                    pairs.append(ts)
                    pairs.append(value)
                    continue
                if not track.pairs and not track.rows:
                    dirty[track.point] = track
                track.rows.append((track.point, ts, _numeric(value), _quality_text(quality), None))
        self._pending_count += added
        self.kept += added

    @property
    def pending(self) -> int:
        return self._pending_count

    async def flush(self) -> int:
        """Write the buffered readings (after any flush in progress), and that this run
        was alive up to its newest poll (also when there is nothing to write: a flat
        signal confirmed but not kept); how many readings."""
        async with self._flushing:
            self._flushed_at = time.monotonic()
            alive = self._newest_ts
            # a transaction per chunk of about WRITE_CHUNK rows, each its own call on the
            # database thread, not one per batch: an audit event (a write's record) waits
            # for one chunk (a few ms), not for seconds of 10,000 points. Each chunk's
            # tracks are emptied just before its call goes to the database thread, so a
            # query's call, queued behind it, sees their rows (`_write_point`)
            order = list(self._dirty)
            count = at = 0
            wrote = False
            while at < len(order):
                chunk: list[_Track] = []
                size = 0
                while at < len(order) and size < WRITE_CHUNK:
                    track = self._dirty.pop(order[at], None)
                    at += 1
                    if track is not None:  # else a query wrote it meanwhile
                        chunk.append(track)
                        size += len(track.pairs) // 2 + len(track.rows)
                if chunk:
                    count += size
                    wrote = True
                    await self._db.call(self._chunk_write(chunk, alive))
            if not wrote and alive > self._alive:
                await self._db.call(partial(self._commit, rows=(), alive=alive))
        return count

    def _chunk_write(
        self, tracks: list[_Track], alive: float
    ) -> Callable[[sqlite3.Connection], None]:
        """The write of `tracks`' rows, taken from them now (their buffers emptied in place
        for the next readings; in flat lists, not an object per point: what lives through
        the write is few objects for the collector, whatever the number of points)."""
        self._pending_count -= sum(len(t.pairs) // 2 + len(t.rows) for t in tracks)
        points = [track.point for track in tracks]
        pairs = [track.take_pairs() for track in tracks]
        rows = list(itertools.chain.from_iterable(t.take_rows() for t in tracks if t.rows))
        return partial(self._write_chunk, points=points, pairs=pairs, rows=rows, alive=alive)

    async def _write_point(self, point: str) -> None:
        """Write the rows of one point waiting for the write, for a query of that point:
        not the whole buffer (seconds of 10,000 points), nor after a flush in progress
        (the query's call runs after the chunk that took this point's rows)."""
        track = self._dirty.pop(point, None)
        if track is not None:
            await self._db.call(self._chunk_write([track], self._newest_ts))

    async def flush_due(self, hold_s: float = HOLD_S) -> int:
        """The periodic flush: write the buffer (and this run's `alive_until`) once
        `hold_s` seconds passed since the last flush; how many readings were written."""
        if time.monotonic() - self._flushed_at < hold_s:
            return 0
        written = await self.flush()
        if time.monotonic() - self._moved_at >= MOVE_S:
            await self.move()
        return written

    async def move(self) -> int:
        """Move the rows of `recent` into `history`, `MOVE_CHUNK` points a transaction
        (each its own call on the database thread: an audit event waits for one chunk);
        how many rows."""
        self._moved_at = time.monotonic()
        rows = await self._db.call(partial(_query, sql="SELECT DISTINCT pid FROM recent", args=()))
        moved = 0
        for at in range(0, len(rows), MOVE_CHUNK):
            chunk = rows[at : at + MOVE_CHUNK]  # in key order: a range of points each
            moved += await self._db.call(partial(_move, first=chunk[0][0], last=chunk[-1][0]))
        return moved

    def _write_chunk(
        self,
        conn: sqlite3.Connection,
        points: list[str],
        pairs: list[bytes],
        rows: Sequence[Row],
        alive: float,
    ) -> None:
        """Insert the good pairs of `points` and the other `rows` (each point's pairs are
        older than its other rows), and advance `alive_until`, in one transaction (on the
        database thread): no committed row is newer than its run's end."""
        pids = self._pids_of(conn, points)
        row_pids = self._pids_of(conn, [row[0] for row in rows])
        with transaction(conn):
            conn.executemany(
                _INSERT_GOOD, itertools.chain.from_iterable(map(_good_rows, pids, pairs))
            )
            if rows:
                conn.executemany(
                    _INSERT_SAMPLE,
                    ((pid, *row[1:]) for pid, row in zip(row_pids, rows, strict=True)),
                )
            self._advance(conn, alive)
        self._alive = max(self._alive, alive)

    def _commit(self, conn: sqlite3.Connection, rows: Sequence[Row], alive: float) -> None:
        """Insert sample `rows` (none older than `alive`) and advance `alive_until`, in one
        transaction (on the database thread)."""
        pids = self._pids_of(conn, [row[0] for row in rows])
        with transaction(conn):
            if rows:
                conn.executemany(
                    _INSERT_SAMPLE, ((pid, *row[1:]) for pid, row in zip(pids, rows, strict=True))
                )
            self._advance(conn, alive)
        self._alive = max(self._alive, alive)

    def _pids_of(self, conn: sqlite3.Connection, points: Sequence[str]) -> list[int]:
        """The numbers of `points`, a new point numbered (and committed) on first sight, before
        the transaction of its rows (on the database thread)."""
        pids = self._pids
        missing = [point for point in dict.fromkeys(points) if point not in pids]
        if missing:
            with transaction(conn):
                conn.executemany("INSERT OR IGNORE INTO points (id) VALUES (?)", zip(missing))
            pids.update(_load_pids(conn))
        return [pids[point] for point in points]

    def _select(
        self,
        conn: sqlite3.Connection,
        point: str,
        where: str,
        args: Iterable[Any],
        *,
        newest_first: bool = False,
        limit: int | None = None,
    ) -> list[tuple[Any, ...]]:
        """(ts, value, quality, source_ts) of the rows of `point` that `where` (SQL after
        the point's own condition) selects, in time order, from `history` and `recent`
        (on the database thread)."""
        pid = self._pids.get(point)
        if pid is None:
            return []  # never stored
        tail = "ORDER BY ts DESC" if newest_first else "ORDER BY ts"
        if limit is not None:
            tail += f" LIMIT {int(limit)}"
        found: dict[float, tuple[Any, ...]] = {}
        for table in ("history", "recent"):  # at the same time, the recent row (later) wins
            sql = f"SELECT {_COLUMNS} FROM {table} WHERE pid = ? {where} {tail}"
            found.update((row[0], row) for row in conn.execute(sql, (pid, *args)))
        rows = sorted(found.values(), key=lambda row: float(row[0]), reverse=newest_first)
        return rows if limit is None else rows[:limit]

    def _advance(self, conn: sqlite3.Connection, alive: float) -> None:
        """This run's `alive_until` to `alive` if later, inside the caller's transaction
        (the caller advances `_alive` once it committed)."""
        if alive > self._alive:
            conn.execute("UPDATE runs SET alive_until = ? WHERE id = ?", (alive, self._run))

    async def event(
        self,
        kind: str,
        *,
        device: str | None = None,
        point: str | None = None,
        **detail: Any,
    ) -> None:
        """Append one audit event (writes, refusals, link changes, errors)."""
        await self._db.submit(_event_write(kind, device, point, detail))

    def event_soon(
        self,
        kind: str,
        *,
        device: str | None = None,
        point: str | None = None,
        **detail: Any,
    ) -> None:
        """Append one audit event without waiting for its commit (the record of a command
        sent: the command's answer does not wait behind a write of samples in progress).
        The database thread writes it in turn, so any later query sees it, and a close
        writes it first; a failure is logged."""
        try:
            written = self._db.submit(_event_write(kind, device, point, detail))
        except StoreError as exc:
            log.error("store: event %s not recorded: %s", kind, exc)
            return
        written.add_done_callback(partial(_log_failure, kind))

    async def prune(self, retention: timedelta) -> int:
        """Delete samples older than `retention`, and the earlier runs that ended before
        them; returns how many samples."""
        cutoff = _ts(datetime.now(UTC) - retention)
        return await self._db.call(partial(_prune, cutoff=cutoff, run=self._run))

    # -- queries -----------------------------------------------------------------------

    async def latest(self, point: str) -> Sample | None:
        """The last stored row of a point: for a flat signal stored by exception, up to an
        integrity period old (the point table has the latest reading)."""
        await self._write_point(point)
        rows = await self._db.call(
            partial(self._select, point=point, where="", args=(), newest_first=True, limit=1)
        )
        return _sample(point, rows[0]) if rows else None

    async def range(self, point: str, start: datetime, end: datetime) -> list[Sample]:
        """Samples of a point with start <= gateway time < end, oldest first; for a point
        stored by exception, with the held value at its poll interval between kept rows."""
        await self._write_point(point)
        policy = self._policies.get(point)
        if policy is None or policy.integrity_s == 0:
            rows = await self._db.call(
                partial(
                    self._select,
                    point=point,
                    where="AND ts >= ? AND ts < ?",
                    args=(_ts(start), _ts(end)),
                )
            )
            return [_sample(point, r) for r in rows]
        track = self._tracks.get(point)
        confirmed = None if track is None or not track.kept else (track.stored, track.seen)
        return await self._db.call(
            lambda conn: self._held_range(conn, point, _ts(start), _ts(end), policy, confirmed)
        )

    def _held_range(
        self,
        conn: sqlite3.Connection,
        point: str,
        start: float,
        end: float,
        policy: Policy,
        confirmed: tuple[float, float] | None,
    ) -> list[Sample]:
        """`confirmed`: (time of the last kept row, time of the last poll that read the same)."""
        before = self._select(conn, point, "AND ts < ?", (start,), newest_first=True, limit=1)
        rows = before + self._select(conn, point, "AND ts >= ? AND ts < ?", (start, end))
        # the next row bounds the hold of the last one in the window
        after = self._select(conn, point, "AND ts >= ?", (end,), limit=1)
        step = policy.poll_s
        # rows of a point being read are no further apart; the margin covers polls that
        # run late (a slow line, a busy machine): a false gap would read as a hole
        longest = 1.5 * policy.integrity_s + 2 * step
        out: list[Sample] = []
        following = [*rows[1:], *after]
        # where the earlier runs stopped reading: a hold ends at the end of its row's run
        # (the first end at or after the row; runs follow each other in time). The run in
        # progress is bounded by `confirmed`, as it may be ahead of its last flush.
        ends = (
            [
                r[0]
                for r in conn.execute(
                    "SELECT alive_until FROM runs WHERE id != ? AND alive_until >= ? "
                    "AND alive_until < ? ORDER BY alive_until",
                    (self._run, rows[0][0], end),
                )
            ]
            if rows
            else []
        )
        for k, row in enumerate(rows):
            sample = _sample(point, row)
            ts = row[0]
            if ts >= start:
                out.append(sample)
            if sample.value is None or sample.source_time is not None:
                continue  # nothing to hold: the link was down, or a device-stamped record
            if k < len(following):
                until = following[k][0] - step / 2
                if following[k][0] - ts > longest:
                    continue  # the gateway stopped in between: a gap, not a hold
            elif confirmed is not None and confirmed[0] == ts:
                until = confirmed[1] + step / 2
            else:
                continue
            stopped = bisect_left(ends, ts)
            if stopped < len(ends):
                until = min(until, ends[stopped] + step / 2)
            value, quality = sample.value, sample.quality
            n = max(1, math.ceil((start - ts) / step))
            t = ts + n * step
            while t < until and t < end:
                out.append(Sample(point, datetime.fromtimestamp(t, UTC), value, quality, None))
                n += 1
                t = ts + n * step
        return out

    async def events(self, kind: str | None = None, limit: int = 1000) -> list[Event]:
        sql = "SELECT id, ts, kind, device, point, detail FROM events"
        args: tuple[Any, ...] = ()
        if kind is not None:
            sql += " WHERE kind = ?"
            args = (kind,)
        rows = await self._db.call(
            partial(_query, sql=sql + " ORDER BY id LIMIT ?", args=(*args, limit))
        )
        return [
            Event(r[0], _dt(r[1]) or datetime.now(UTC), r[2], r[3], r[4], json.loads(r[5]))
            for r in rows
        ]


def _sample(point: str, row: tuple[Any, ...]) -> Sample:
    """A sample of `point` from its (ts, value, quality, source_ts) row."""
    ts, value, quality, source_ts = row
    return Sample(
        point, _dt(ts) or datetime.now(UTC), value, _parse_quality(quality), _dt(source_ts)
    )


# -- SQL, run on the database thread ----------------------------------------------------------


def needs_migration(path: Path) -> bool:
    """Whether `path` is a store of the former schema (a `samples` table), which its next
    open migrates (before READY: `gateway.app.serve` keeps systemd's start timeout ahead)."""
    if not path.is_file():
        return False
    with read_only(path, "store") as conn:
        found = conn.execute("SELECT type FROM sqlite_master WHERE name = 'samples'").fetchone()
    return found is not None and found[0] == "table"


#: SQLite virtual machine steps between two calls of a migration's progress callback
PROGRESS_STEPS = 100_000


async def migrate(
    path: Path,
    stop: asyncio.Event | None = None,
    progress: Callable[[], None] | None = None,
    waiting: Callable[[], None] | None = None,
) -> bool:
    """Migrate a store of the former schema (`_migrate`), without starting a run; False
    when `stop` was set: the migration's transaction is interrupted and rolled back, the
    store left as it was (a stop of the service does not wait minutes for it), or, when the
    stop came in its end (the commit and the drop of the former table, which SQLite does
    not interrupt), it finishes. `progress` is called (on the database thread) as the
    migration's statements run; `waiting` once, when a stop waits for the migration's end.
    A migration that finished is written out of the write-ahead log as the store closes
    (seconds on a large store: the log says so)."""
    db = Database(path, SCHEMA, synchronous="NORMAL", label="store")
    await db.open()
    migrated = False
    try:
        if progress is not None:
            await db.call(partial(_watch, progress=progress))
        migrating: asyncio.Future[Any] = db.submit(_migrate)
        if stop is None:
            await migrating
            migrated = True
            return True
        stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({migrating, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if not stop.is_set():
            await migrating
            migrated = True
            return True
        asked = time.monotonic()
        warned = False
        while not migrating.done():  # until its statement runs: interrupting none is a no-op
            db.interrupt()
            await asyncio.wait({migrating}, timeout=0.05)
            if not warned and time.monotonic() - asked > LATE_STOP_S:
                warned = True
                log.warning(
                    "store: the migration is in its last step (the commit, or the removal "
                    "of the former table), which cannot be interrupted: the stop waits for it"
                )
                if waiting is not None:
                    waiting()
        try:
            migrating.result()
        except StoreError as exc:
            if "interrupted" not in str(exc):
                raise
            log.warning(
                "store: migration stopped, the store is as it was; the next start migrates it"
            )
            return False
        log.info("store: the migration finished before the stop took hold; not starting")
        migrated = True
        return False  # it ended as the stop came: migrated, and not to be started
    finally:
        if migrated:  # closing the last connection copies the log into the store
            log.info("store: writing the migrated store out of its write-ahead log")
        await db.close()


def _watch(conn: sqlite3.Connection, progress: Callable[[], None]) -> None:
    def step() -> int:
        progress()
        return 0  # go on

    conn.set_progress_handler(step, PROGRESS_STEPS)


def _migrate(conn: sqlite3.Connection) -> None:
    """A store written before `history`: its `samples` table becomes `history` (each point
    numbered in `points`) and the `samples` view, in one transaction; rows of a point at
    the same time keep the later written, as `history` does. A `samples` view of an
    earlier definition is defined again."""
    found = conn.execute("SELECT type FROM sqlite_master WHERE name = 'samples'").fetchone()
    if found is not None and found[0] == "view":  # as this release defines it (cheap)
        with transaction(conn):
            conn.execute("DROP VIEW samples")
            conn.execute(_SAMPLES_VIEW)
    if found is None or found[0] != "table":
        return
    started = time.perf_counter()
    with transaction(conn):
        conn.execute("INSERT OR IGNORE INTO points (id) SELECT DISTINCT point FROM samples")
        read = conn.execute("SELECT count(*) FROM samples").fetchone()[0]
        conn.execute(
            "INSERT OR REPLACE INTO history SELECT points.pid, ts, value, "
            "nullif(quality, 'good'), source_ts FROM samples JOIN points ON points.id = point "
            "ORDER BY samples.rowid"
        )
        kept = conn.execute("SELECT count(*) FROM history").fetchone()[0]
        conn.execute("DROP TABLE samples")
        conn.execute(_SAMPLES_VIEW)
    log.info(
        "store: %d samples moved to the clustered history table (%d rows: one per point and"
        " time) in %.1f s",
        read,
        kept,
        time.perf_counter() - started,
    )


def _move(conn: sqlite3.Connection, first: int, last: int) -> int:
    """The recent rows of points `first`..`last` into `history`, in one transaction (a row
    at the time of one there replaces it, as in `recent`); how many."""
    with transaction(conn):
        moved = conn.execute(
            "INSERT OR REPLACE INTO history SELECT * FROM recent WHERE pid BETWEEN ? AND ?",
            (first, last),
        ).rowcount
        conn.execute("DELETE FROM recent WHERE pid BETWEEN ? AND ?", (first, last))
    return int(moved)


def _load_pids(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT id, pid FROM points"))


def _start_run(conn: sqlite3.Connection) -> int:
    """This start's row in `runs`; its id."""
    with transaction(conn):
        cur = conn.execute("INSERT INTO runs (opened) VALUES (?)", (_ts(datetime.now(UTC)),))
    assert cur.lastrowid is not None
    return cur.lastrowid


def _prune(conn: sqlite3.Connection, cutoff: float, run: int) -> int:
    """Samples older than `cutoff` and the runs they were held by go (not run `run`, the
    one in progress); how many samples."""
    with transaction(conn):
        # point by point (the key's order): the old rows of each, not a scan of all
        deleted = sum(
            int(
                conn.execute(
                    f"DELETE FROM {table} WHERE pid IN (SELECT pid FROM points) AND ts < ?",
                    (cutoff,),
                ).rowcount
            )
            for table in ("history", "recent")
        )
        conn.execute(
            "DELETE FROM runs WHERE id != ? AND coalesce(alive_until, opened) < ?",
            (run, cutoff),
        )
    return deleted


def _event_write(
    kind: str, device: str | None, point: str | None, detail: dict[str, Any]
) -> Callable[[sqlite3.Connection], int]:
    """The database call that appends one audit event, stamped now."""
    row = (
        _ts(datetime.now(UTC)),
        kind,
        device,
        point,
        json.dumps(detail, default=str, sort_keys=True),
    )
    return partial(
        _write,
        sql="INSERT INTO events (ts, kind, device, point, detail) VALUES (?,?,?,?,?)",
        rows=[row],
    )


def _log_failure(kind: str, written: asyncio.Future[int]) -> None:
    if not written.cancelled() and (exc := written.exception()) is not None:
        log.error("store: event %s not recorded: %s", kind, exc)


def _write(conn: sqlite3.Connection, sql: str, rows: Sequence[tuple[Any, ...]]) -> int:
    """`sql` once per row in one transaction; how many rows it changed."""
    with transaction(conn):
        return int(conn.executemany(sql, rows).rowcount)


def _query(conn: sqlite3.Connection, sql: str, args: Iterable[Any]) -> list[tuple[Any, ...]]:
    return list(conn.execute(sql, tuple(args)).fetchall())
