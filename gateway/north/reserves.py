"""The default reserve handler: a book of reserve notifications and activations in SQLite.

Good enough for tests, the demo and a gateway whose flexibility layer only records what it
was asked; the flexibility layer replaces it with one that also schedules and dispatches.

Checks (each refusal names the interval and the numbers):
- notification: its reserved period has not ended (`expired`); where a forecast we sent
  covers an interval, the reserved band fits the flexibility we offered
  (`exceeds-offered-flexibility`).
- activation: the notification it draws on is known (`unknown-notification`) and came from
  the same sender (`foreign-notification`); it lies inside the reserved period
  (`outside-window`) and has not ended (`expired`); in every interval it covers, the set
  point lies inside the reserved band around our forecast baseline
  (`outside-band`; `no-baseline` when no forecast covers the interval).

Written with synchronous=NORMAL (WAL): what was applied survives a crash of the process,
and the inbound ledger keeps the AMS from applying anything twice.

Sign convention of the coupling point: P > 0 imports. The band of an interval is
[baseline - down, baseline + up] for P and for Q.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

from gateway.errors import ReserveRefused
from gateway.north.sqlite import SqliteThread
from gateway.smartapi.flexibility import (
    FlexibilityForecast,
    ReserveActivation,
    ReservedInterval,
    ReserveNotification,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
    id          TEXT PRIMARY KEY,
    sender      TEXT NOT NULL,
    microgrid   TEXT NOT NULL,
    purchase    TEXT NOT NULL,
    start       REAL NOT NULL,   -- epoch seconds
    step_s      REAL NOT NULL,
    intervals   TEXT NOT NULL,   -- JSON [[p_up, p_down, q_up, q_down], ...]
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS activations (
    id           TEXT PRIMARY KEY,
    notification TEXT NOT NULL REFERENCES notifications (id),
    sender       TEXT NOT NULL,
    p_kw         REAL NOT NULL,
    q_kvar       REAL NOT NULL,
    start        REAL NOT NULL,
    end_         REAL,
    received_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS forecasts (
    id           TEXT PRIMARY KEY,
    start        REAL NOT NULL,
    step_s       REAL NOT NULL,
    intervals    TEXT NOT NULL,   -- JSON [[p, p_min, p_max, q, q_min, q_max], ...]
    generated_at REAL NOT NULL
);
"""

_EPS = 1e-6


@dataclass(frozen=True)
class StoredNotification:
    id: str
    sender: str
    start: datetime
    step: timedelta
    intervals: tuple[ReservedInterval, ...]

    @property
    def end(self) -> datetime:
        return self.start + self.step * len(self.intervals)


@dataclass(frozen=True)
class StoredActivation:
    id: str
    notification: str
    p_kw: float
    q_kvar: float
    start: datetime
    end: datetime | None
    received_at: float


@dataclass(frozen=True)
class Baseline:
    p_kw: float
    p_min_kw: float
    p_max_kw: float
    q_kvar: float
    q_min_kvar: float
    q_max_kvar: float


def _ts(value: datetime) -> float:
    return value.timestamp()


def _dt(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


class SqliteReserveBook:
    """ReserveHandler and ForecastSink on the file `path`; `async with` opens it."""

    def __init__(
        self, path: Path, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._db = SqliteThread(path, _SCHEMA, synchronous="NORMAL")
        self._clock = clock

    async def __aenter__(self) -> SqliteReserveBook:
        await self._db.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._db.close()

    # -- ForecastSink -----------------------------------------------------------------------

    async def record_forecast(self, forecast: FlexibilityForecast) -> None:
        rows = [
            [i.p_kw, i.p_min_kw, i.p_max_kw, i.q_kvar, i.q_min_kvar, i.q_max_kvar]
            for i in forecast.intervals
        ]
        row = (
            forecast.id,
            _ts(forecast.start),
            forecast.step.total_seconds(),
            json.dumps(rows),
            _ts(forecast.generated_at),
        )
        await self._db.call(
            partial(_execute, sql="INSERT OR IGNORE INTO forecasts VALUES (?, ?, ?, ?, ?)", row=row)
        )

    # -- ReserveHandler ---------------------------------------------------------------------

    async def check_notification(self, notification: ReserveNotification) -> None:
        end = notification.interval_start(len(notification.intervals))
        if end <= self._clock():
            raise ReserveRefused("expired", f"the reserved period ended at {end.isoformat()}")
        for index, band in enumerate(notification.intervals):
            at = notification.interval_start(index)
            base = await self.baseline(at)
            if base is None:
                continue
            for name, want, offered in (
                ("P up", band.p_raise_kw, base.p_max_kw - base.p_kw),
                ("P down", band.p_lower_kw, base.p_kw - base.p_min_kw),
                ("Q up", band.q_raise_kvar, base.q_max_kvar - base.q_kvar),
                ("Q down", band.q_lower_kvar, base.q_kvar - base.q_min_kvar),
            ):
                if want > offered + _EPS:
                    raise ReserveRefused(
                        "exceeds-offered-flexibility",
                        f"interval {at.isoformat()}: reserved {name} {want:g} exceeds the "
                        f"{offered:g} offered in our forecast",
                    )

    async def apply_notification(self, notification: ReserveNotification) -> None:
        rows = [
            [i.p_raise_kw, i.p_lower_kw, i.q_raise_kvar, i.q_lower_kvar]
            for i in notification.intervals
        ]
        row = (
            notification.id,
            notification.sender,
            notification.microgrid,
            notification.purchase,
            _ts(notification.start),
            notification.step.total_seconds(),
            json.dumps(rows),
            time.time(),
        )
        await self._db.call(
            partial(
                _execute,
                sql="INSERT OR IGNORE INTO notifications VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row=row,
            )
        )

    async def check_activation(self, activation: ReserveActivation) -> None:
        n = await self.notification(activation.notification)
        if n is None:
            raise ReserveRefused(
                "unknown-notification", f"no reserve notification {activation.notification}"
            )
        if n.sender != activation.sender:
            raise ReserveRefused(
                "foreign-notification",
                f"notification {n.id} was sent by {n.sender}, not {activation.sender}",
            )
        end = activation.end or n.end
        if activation.start < n.start or end > n.end:
            raise ReserveRefused(
                "outside-window",
                f"activation {activation.start.isoformat()}..{end.isoformat()} is outside the "
                f"reserved period {n.start.isoformat()}..{n.end.isoformat()}",
            )
        if end <= self._clock():
            raise ReserveRefused("expired", f"the activation ended at {end.isoformat()}")
        first = int((activation.start - n.start) / n.step)
        last = int((end - n.start - timedelta(microseconds=1)) / n.step)
        for index in range(first, last + 1):
            at = n.start + n.step * index
            base = await self.baseline(at)
            if base is None:
                raise ReserveRefused(
                    "no-baseline",
                    f"interval {at.isoformat()}: no forecast baseline to check against",
                )
            band = n.intervals[index]
            for name, value, low, high in (
                ("P", activation.p_kw, base.p_kw - band.p_lower_kw, base.p_kw + band.p_raise_kw),
                (
                    "Q",
                    activation.q_kvar,
                    base.q_kvar - band.q_lower_kvar,
                    base.q_kvar + band.q_raise_kvar,
                ),
            ):
                if not low - _EPS <= value <= high + _EPS:
                    raise ReserveRefused(
                        "outside-band",
                        f"interval {at.isoformat()}: {name} set point {value:g} is outside the "
                        f"reserved band {low:g}..{high:g}",
                    )

    async def apply_activation(self, activation: ReserveActivation) -> None:
        row = (
            activation.id,
            activation.notification,
            activation.sender,
            activation.p_kw,
            activation.q_kvar,
            _ts(activation.start),
            _ts(activation.end) if activation.end else None,
            time.time(),
        )
        await self._db.call(
            partial(
                _execute,
                sql="INSERT OR IGNORE INTO activations VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row=row,
            )
        )

    # -- queries ----------------------------------------------------------------------------

    async def notification(self, notification_id: str) -> StoredNotification | None:
        return await self._db.call(partial(_notification, notification_id=notification_id))

    async def activations(self) -> list[StoredActivation]:
        return await self._db.call(_activations)

    async def baseline(self, at: datetime) -> Baseline | None:
        """The interval of the latest forecast that covers `at`."""
        return await self._db.call(partial(_baseline, at=_ts(at)))


def _execute(conn: sqlite3.Connection, sql: str, row: tuple[object, ...]) -> None:
    conn.execute(sql, row)


def _notification(conn: sqlite3.Connection, notification_id: str) -> StoredNotification | None:
    row = conn.execute(
        "SELECT id, sender, start, step_s, intervals FROM notifications WHERE id = ?",
        (notification_id,),
    ).fetchone()
    if row is None:
        return None
    nid, sender, start, step_s, intervals = row
    bands = tuple(ReservedInterval(*band) for band in json.loads(intervals))
    return StoredNotification(nid, sender, _dt(start), timedelta(seconds=step_s), bands)


def _activations(conn: sqlite3.Connection) -> list[StoredActivation]:
    rows = conn.execute(
        "SELECT id, notification, p_kw, q_kvar, start, end_, received_at FROM activations"
        " ORDER BY received_at, id"
    ).fetchall()
    return [
        StoredActivation(
            aid, nid, p, q, _dt(start), _dt(end) if end is not None else None, received
        )
        for aid, nid, p, q, start, end, received in rows
    ]


def _baseline(conn: sqlite3.Connection, at: float) -> Baseline | None:
    rows = conn.execute(
        "SELECT start, step_s, intervals FROM forecasts WHERE start <= ?"
        " ORDER BY generated_at DESC",
        (at,),
    )
    for start, step_s, intervals in rows:
        index = int((at - start) // step_s)
        values = json.loads(intervals)
        if 0 <= index < len(values):
            return Baseline(*values[index])
    return None
