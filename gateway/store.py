"""SQLite store in the state directory: samples with retention and an append-only audit log.

The file is a `gateway.sqlite.Database` (WAL, its connection on its own thread) written
with synchronous=NORMAL: a crash of the process loses nothing committed, a power cut at
worst the last seconds of history. Samples are buffered on the event loop and written in
batches, because a commit per reading would cost a sync.

Samples are stored by exception, as IEC 61850 reports are sent (`gateway.mapping.Storage`):
a reading is kept when its value moved beyond the point's deadband from the last kept one,
when its quality changed, or when the integrity period passed; a flat signal so costs a
dictionary look-up per poll. `range` gives the held value back at the point's poll interval
between kept rows (and up to the last poll that confirmed it), so the history reads as if
every poll had been stored, within the deadband. A gap longer than one and a half
integrity periods (the gateway was not running) stays a gap, and nothing is held after a
row without a value (the link was down).
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from gateway.mapping import Device
from gateway.model import GOOD, Quality, QualityFlag, Reading, Validity
from gateway.sqlite import Database, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    point TEXT NOT NULL,
    ts REAL NOT NULL,          -- gateway time, unix seconds
    value REAL,
    quality TEXT NOT NULL,
    source_ts REAL
);
CREATE INDEX IF NOT EXISTS samples_point_ts ON samples (point, ts);
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


_INSERT_SAMPLE = "INSERT INTO samples VALUES (?,?,?,?,?)"

#: sample rows written per transaction
WRITE_CHUNK = 1000


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


def _quality_text(q: Quality) -> str:
    return str(q)


def _parse_quality(text: str) -> Quality:
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


@dataclass(frozen=True, slots=True)
class Policy:
    """When readings of a point are kept (from its `storage:`), and how often it is read."""

    deadband: float
    integrity_s: float
    poll_s: float


class _Kept:
    """The last kept reading of a point, and when the value was last confirmed."""

    __slots__ = ("quality", "seen", "stored", "value")

    def __init__(self, value: object, quality: Quality, stored: float) -> None:
        self.value = value
        self.quality = quality
        self.stored = stored
        self.seen = stored


_NUMBERS = (float, int)  # by exact type: a bool is compared as a state, not a number


def _unchanged(value: object, last: object, deadband: float) -> bool:
    if value == last:
        return True
    if type(value) in _NUMBERS and type(last) in _NUMBERS:
        return bool(abs(value - last) <= deadband)  # type: ignore[operator]
    return False


class Store:
    """Open with `await Store.open(path)`; close with `await store.close()`."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.path = db.path
        self._pending: list[Reading] = []
        #: points stored by exception; any other point keeps every reading
        self._policies: dict[str, Policy] = {}
        self._kept: dict[str, _Kept] = {}
        self._last_time: datetime | None = None
        self._last_ts = 0.0
        #: rows handed to the database so far (readings kept, and the tails kept at close)
        self.kept = 0

    @classmethod
    async def open(cls, path: Path) -> Store:
        # NORMAL: history and audit survive a crash of the process; a power cut may lose
        # the last commits, which a sync per batch would not be worth
        db = Database(path, SCHEMA, synchronous="NORMAL", label="store")
        await db.open()
        return cls(db)

    async def close(self) -> None:
        """Flush, keep the last confirmation of every held value (so history reaches the
        stop, not only the last kept row), close."""
        await self.flush()
        tails = [
            (point, k.seen, _numeric(k.value), _quality_text(k.quality), None)
            for point, k in self._kept.items()
            if k.seen > k.stored and k.value is not None
        ]
        self._kept.clear()
        self.kept += len(tails)
        if tails:
            await self._db.call(partial(_write, sql=_INSERT_SAMPLE, rows=tails))
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
        self._kept = {k: v for k, v in self._kept.items() if k in self._policies}

    def add(self, reading: Reading) -> None:
        """Buffer a reading if it is to be kept (event loop thread); `flush` writes the
        buffer in one commit."""
        policy = self._policies.get(reading.point)
        # a device's own time stamp makes a reading a record (a load profile entry): kept
        if policy is not None and reading.source_time is None:
            when = reading.gateway_time
            if when is not self._last_time:  # the readings of one poll share their time
                self._last_time, self._last_ts = when, when.timestamp()
            ts = self._last_ts
            kept = self._kept.get(reading.point)
            if kept is None:
                self._kept[reading.point] = _Kept(reading.value, reading.quality, ts)
            elif (
                ts - kept.stored < policy.integrity_s
                and (kept.quality is reading.quality or kept.quality == reading.quality)
                and _unchanged(reading.value, kept.value, policy.deadband)
            ):
                kept.seen = ts
                return
            else:
                kept.value, kept.quality, kept.stored, kept.seen = (
                    reading.value,
                    reading.quality,
                    ts,
                    ts,
                )
        self._pending.append(reading)
        self.kept += 1

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> int:
        batch, self._pending = self._pending, []
        # a transaction per chunk, each its own call on the database thread, not one per
        # batch: an audit event (a write's record) waits for one chunk (a few ms), not for
        # a whole second of 10,000 points
        for at in range(0, len(batch), WRITE_CHUNK):
            chunk = batch[at : at + WRITE_CHUNK]
            await self._db.call(partial(self._write_samples, batch=chunk))
        return len(batch)

    def _write_samples(self, conn: sqlite3.Connection, batch: Sequence[Reading]) -> None:
        """Insert `batch` in one transaction (on the database thread)."""
        rows = []
        when, ts = None, 0.0
        for r in batch:
            if r.gateway_time is not when:  # the readings of a poll share their time
                when, ts = r.gateway_time, r.gateway_time.timestamp()
            value = r.value
            rows.append(
                (
                    r.point,
                    ts,
                    value if type(value) is float else _numeric(value),
                    "good" if r.quality is GOOD else _quality_text(r.quality),
                    None if r.source_time is None else _ts(r.source_time),
                )
            )
        _write(conn, _INSERT_SAMPLE, rows)

    async def event(
        self,
        kind: str,
        *,
        device: str | None = None,
        point: str | None = None,
        **detail: Any,
    ) -> None:
        """Append one audit event (writes, refusals, link changes, errors)."""
        row = (
            _ts(datetime.now(UTC)),
            kind,
            device,
            point,
            json.dumps(detail, default=str, sort_keys=True),
        )
        await self._db.call(
            partial(
                _write,
                sql="INSERT INTO events (ts, kind, device, point, detail) VALUES (?,?,?,?,?)",
                rows=[row],
            )
        )

    async def prune(self, retention: timedelta) -> int:
        """Delete samples older than `retention`; returns how many."""
        cutoff = _ts(datetime.now(UTC) - retention)
        return await self._db.call(
            partial(_write, sql="DELETE FROM samples WHERE ts < ?", rows=[(cutoff,)])
        )

    # -- queries -----------------------------------------------------------------------

    async def latest(self, point: str) -> Sample | None:
        """The last stored row of a point: for a flat signal stored by exception, up to an
        integrity period old (the point table has the latest reading)."""
        rows = await self._db.call(
            partial(
                _query,
                sql="SELECT point, ts, value, quality, source_ts FROM samples "
                "WHERE point = ? ORDER BY ts DESC LIMIT 1",
                args=(point,),
            )
        )
        return _sample(rows[0]) if rows else None

    async def range(self, point: str, start: datetime, end: datetime) -> list[Sample]:
        """Samples of a point with start <= gateway time < end, oldest first; for a point
        stored by exception, with the held value at its poll interval between kept rows."""
        await self.flush()
        policy = self._policies.get(point)
        if policy is None or policy.integrity_s == 0:
            rows = await self._db.call(
                partial(
                    _query,
                    sql="SELECT point, ts, value, quality, source_ts FROM samples "
                    "WHERE point = ? AND ts >= ? AND ts < ? ORDER BY ts",
                    args=(point, _ts(start), _ts(end)),
                )
            )
            return [_sample(r) for r in rows]
        kept = self._kept.get(point)
        confirmed = None if kept is None else (kept.stored, kept.seen)
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
        before = _query(
            conn,
            "SELECT point, ts, value, quality, source_ts FROM samples "
            "WHERE point = ? AND ts < ? ORDER BY ts DESC LIMIT 1",
            (point, start),
        )
        rows = before + _query(
            conn,
            "SELECT point, ts, value, quality, source_ts FROM samples "
            "WHERE point = ? AND ts >= ? AND ts < ? ORDER BY ts",
            (point, start, end),
        )
        # the next row bounds the hold of the last one in the window
        after = _query(
            conn,
            "SELECT point, ts, value, quality, source_ts FROM samples "
            "WHERE point = ? AND ts >= ? ORDER BY ts LIMIT 1",
            (point, end),
        )
        step = policy.poll_s
        # rows of a point being read are no further apart; the margin covers polls that
        # run late (a slow line, a busy machine): a false gap would read as a hole
        longest = 1.5 * policy.integrity_s + 2 * step
        out: list[Sample] = []
        following = [*rows[1:], *after]
        for k, row in enumerate(rows):
            sample = _sample(row)
            ts = row[1]
            if ts >= start:
                out.append(sample)
            if sample.value is None or sample.source_time is not None:
                continue  # nothing to hold: the link was down, or a device-stamped record
            if k < len(following):
                until = following[k][1] - step / 2
                if following[k][1] - ts > longest:
                    continue  # the gateway stopped in between: a gap, not a hold
            elif confirmed is not None and confirmed[0] == ts:
                until = confirmed[1] + step / 2
            else:
                continue
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


def _sample(row: tuple[Any, ...]) -> Sample:
    point, ts, value, quality, source_ts = row
    return Sample(
        point, _dt(ts) or datetime.now(UTC), value, _parse_quality(quality), _dt(source_ts)
    )


# -- SQL, run on the database thread ----------------------------------------------------------


def _write(conn: sqlite3.Connection, sql: str, rows: Sequence[tuple[Any, ...]]) -> int:
    """`sql` once per row in one transaction; how many rows it changed."""
    with transaction(conn):
        return int(conn.executemany(sql, rows).rowcount)


def _query(conn: sqlite3.Connection, sql: str, args: Iterable[Any]) -> list[tuple[Any, ...]]:
    return list(conn.execute(sql, tuple(args)).fetchall())
