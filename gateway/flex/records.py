"""Durable records of the flexibility functions in SQLite: reservations, activations (with
the baseline recorded at their start), the set points sent, the verifications and the
audit log of every decision with its reasons. They survive a restart, so an interrupted
activation can be resumed or closed out. A set point is recorded before it is sent
(`sending`) and settled with the device's answer, so a write the gateway was killed in
is known at the next start.

The file is a `gateway.sqlite.Database` (its connection on its own thread), written with
synchronous=NORMAL: a decision survives a crash of the process (what the crash tests
kill); a power cut may lose the last ones, which FULL would prevent at the cost of a sync
for every set point recorded. The SQL is `RecordTables`, over one
connection; `FlexRecords` runs each of its calls on the database thread for the event
loop, and a synchronous tool runs the same over `gateway.sqlite.read_only`.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from gateway.flex.model import (
    SENDING,
    Activation,
    ActivationRecord,
    Band,
    Reason,
    ReasonCode,
    Reservation,
    Verification,
    VerifiedInterval,
)
from gateway.sqlite import Database, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS flex_reservation (
    id TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    received_at TEXT NOT NULL,
    status TEXT NOT NULL,
    requested TEXT NOT NULL,
    accepted TEXT,
    reasons TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS flex_activation (
    id TEXT PRIMARY KEY,
    reservation_id TEXT,
    received_at TEXT NOT NULL,
    requested TEXT NOT NULL,
    status TEXT NOT NULL,
    p_kw REAL,
    q_kvar REAL,
    reasons TEXT NOT NULL,
    baseline TEXT,
    state TEXT NOT NULL,
    ended_at TEXT,
    note TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS flex_setpoint (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    activation_id TEXT NOT NULL,
    at TEXT NOT NULL,
    der TEXT NOT NULL,
    point TEXT NOT NULL,
    value REAL NOT NULL,
    meaning REAL NOT NULL,
    status TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS flex_pcc_setpoint (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    activation_id TEXT NOT NULL,
    start TEXT NOT NULL,
    p_kw REAL,
    q_kvar REAL
);
CREATE TABLE IF NOT EXISTS flex_verification (
    activation_id TEXT NOT NULL,
    interval_start TEXT NOT NULL,
    body TEXT NOT NULL,
    final INTEGER NOT NULL,
    PRIMARY KEY (activation_id, interval_start)
);
CREATE TABLE IF NOT EXISTS flex_audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    decision TEXT NOT NULL,
    reasons TEXT NOT NULL
);
"""


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def _time(s: str | None) -> datetime | None:
    return None if s is None else datetime.fromisoformat(s)


def reservation_to_json(r: Reservation) -> str:
    return json.dumps(
        {
            "id": r.id,
            "service": r.service,
            "bands": [{**asdict(b), "start": _iso(b.start), "end": _iso(b.end)} for b in r.bands],
        }
    )


def reservation_from_json(text: str) -> Reservation:
    raw = json.loads(text)
    bands = tuple(
        Band(
            start=datetime.fromisoformat(b["start"]),
            end=datetime.fromisoformat(b["end"]),
            p_up_kw=b["p_up_kw"],
            p_down_kw=b["p_down_kw"],
            q_up_kvar=b["q_up_kvar"],
            q_down_kvar=b["q_down_kvar"],
        )
        for b in raw["bands"]
    )
    return Reservation(raw["id"], bands, raw["service"])


def activation_to_json(a: Activation) -> str:
    return json.dumps({**asdict(a), "start": _iso(a.start), "end": _iso(a.end)})


def activation_from_json(text: str) -> Activation:
    raw = json.loads(text)
    start = _time(raw["start"])
    assert start is not None
    return Activation(
        raw["id"], start, _time(raw["end"]), raw["p_kw"], raw["q_kvar"], raw["reservation_id"]
    )


def reasons_to_json(reasons: tuple[Reason, ...]) -> str:
    return json.dumps(
        [{"code": r.code.value, "subject": r.subject, "message": r.message} for r in reasons]
    )


def reasons_from_json(text: str) -> tuple[Reason, ...]:
    return tuple(
        Reason(ReasonCode(r["code"]), r["subject"], r["message"]) for r in json.loads(text)
    )


def interval_to_json(v: VerifiedInterval) -> str:
    return json.dumps({**asdict(v), "start": _iso(v.start), "end": _iso(v.end)})


def interval_from_json(text: str) -> VerifiedInterval:
    raw: dict[str, Any] = json.loads(text)
    raw["start"] = datetime.fromisoformat(raw["start"])
    raw["end"] = datetime.fromisoformat(raw["end"])
    return VerifiedInterval(**raw)


#: names the records file in errors
LABEL = "flexibility records"


class RecordTables:
    """The records' SQL over one connection: the database thread's (through `FlexRecords`)
    or a synchronous tool's `read_only` one."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self._conn)

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return list(self._conn.execute(sql, args))

    # -- writes ---------------------------------------------------------------------------

    def audit(
        self, at: datetime, kind: str, subject: str, decision: str, reasons: tuple[Reason, ...]
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO flex_audit (at, kind, subject, decision, reasons) VALUES (?,?,?,?,?)",
                (_iso(at), kind, subject, decision, reasons_to_json(reasons)),
            )

    def save_reservation(
        self,
        at: datetime,
        requested: Reservation,
        status: str,
        accepted: Reservation | None,
        reasons: tuple[Reason, ...],
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO flex_reservation VALUES (?,?,?,?,?,?,?)",
                (
                    requested.id,
                    requested.service,
                    _iso(at),
                    status,
                    reservation_to_json(requested),
                    None if accepted is None else reservation_to_json(accepted),
                    reasons_to_json(reasons),
                ),
            )
            db.execute(
                "INSERT INTO flex_audit (at, kind, subject, decision, reasons) VALUES (?,?,?,?,?)",
                (_iso(at), "reservation", requested.id, status, reasons_to_json(reasons)),
            )

    def save_activation(
        self,
        at: datetime,
        act: Activation,
        status: str,
        p_kw: float | None,
        q_kvar: float | None,
        reasons: tuple[Reason, ...],
        baseline: dict[str, Any] | None,
        state: str,
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO flex_activation "
                "(id, reservation_id, received_at, requested, status, p_kw, q_kvar, reasons,"
                " baseline, state) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    act.id,
                    act.reservation_id,
                    _iso(at),
                    activation_to_json(act),
                    status,
                    p_kw,
                    q_kvar,
                    reasons_to_json(reasons),
                    None if baseline is None else json.dumps(baseline),
                    state,
                ),
            )
            db.execute(
                "INSERT INTO flex_audit (at, kind, subject, decision, reasons) VALUES (?,?,?,?,?)",
                (_iso(at), "activation", act.id, status, reasons_to_json(reasons)),
            )

    def end_activation(self, activation_id: str, at: datetime, state: str, note: str = "") -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE flex_activation SET state = ?, ended_at = ?, note = ? WHERE id = ?",
                (state, _iso(at), note, activation_id),
            )

    def pcc_setpoint(
        self, activation_id: str, start: datetime, p_kw: float | None, q_kvar: float | None
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO flex_pcc_setpoint (activation_id, start, p_kw, q_kvar)"
                " VALUES (?,?,?,?)",
                (activation_id, _iso(start), p_kw, q_kvar),
            )

    def setpoints(
        self, activation_id: str, at: datetime, rows: list[tuple[str, str, float, float, str, str]]
    ) -> None:
        """rows: (der, point, value, meaning, status, detail)."""
        if not rows:
            return
        with self._tx() as db:
            db.executemany(
                "INSERT INTO flex_setpoint (activation_id, at, der, point, value, meaning, status,"
                " detail) VALUES (?,?,?,?,?,?,?,?)",
                [(activation_id, _iso(at), *row) for row in rows],
            )

    def intend_setpoints(
        self, activation_id: str, at: datetime, rows: list[tuple[str, str, float, float]]
    ) -> list[int]:
        """Record writes before they are sent (status `sending`), in one transaction;
        rows: (der, point, value, meaning). Their seqs, in order, for `settle`."""
        seqs = []
        with self._tx() as db:
            for der, point, value, meaning in rows:
                cur = db.execute(
                    "INSERT INTO flex_setpoint (activation_id, at, der, point, value, meaning,"
                    " status, detail) VALUES (?,?,?,?,?,?,?,?)",
                    (activation_id, _iso(at), der, point, value, meaning, SENDING, ""),
                )
                assert cur.lastrowid is not None
                seqs.append(cur.lastrowid)
        return seqs

    def settle_setpoints(self, rows: list[tuple[int, str, str]]) -> None:
        """rows: (seq, status, detail) of writes recorded by `intend_setpoints`."""
        if not rows:
            return
        with self._tx() as db:
            db.executemany(
                "UPDATE flex_setpoint SET status = ?, detail = ? WHERE seq = ?",
                [(status, detail, seq) for seq, status, detail in rows],
            )

    def unsettled_setpoints(self) -> list[tuple[int, str, str, str, float]]:
        """(seq, activation id, der, point, value) of writes the gateway stopped in."""
        rows = self._query(
            "SELECT seq, activation_id, der, point, value FROM flex_setpoint WHERE status = ?"
            " ORDER BY seq",
            (SENDING,),
        )
        return [(q, a, d, p, float(v)) for q, a, d, p, v in rows]

    def save_verification(self, v: Verification) -> None:
        with self._tx() as db:
            for item in v.intervals:
                db.execute(
                    "INSERT OR REPLACE INTO flex_verification VALUES (?,?,?,?)",
                    (v.activation_id, _iso(item.start), interval_to_json(item), int(v.final)),
                )

    # -- reads ----------------------------------------------------------------------------

    def accepted_reservations(self, since: datetime) -> list[Reservation]:
        out = []
        for (accepted,) in self._query(
            "SELECT accepted FROM flex_reservation WHERE accepted IS NOT NULL ORDER BY received_at"
        ):
            res = reservation_from_json(accepted)
            if res.end > since:
                out.append(res)
        return out

    def reservation_status(
        self, reservation_id: str
    ) -> tuple[str, Reservation | None, tuple[Reason, ...]] | None:
        rows = self._query(
            "SELECT status, accepted, reasons FROM flex_reservation WHERE id = ?", (reservation_id,)
        )
        if not rows:
            return None
        status, accepted, reasons = rows[0]
        return (
            status,
            None if accepted is None else reservation_from_json(accepted),
            reasons_from_json(reasons),
        )

    def activation(self, activation_id: str) -> ActivationRecord | None:
        rows = self._query(
            "SELECT requested, status, p_kw, q_kvar, reasons, baseline, state, ended_at, note"
            " FROM flex_activation WHERE id = ?",
            (activation_id,),
        )
        if not rows:
            return None
        req, status, p, q, reasons, baseline, state, ended, note = rows[0]
        return ActivationRecord(
            activation_from_json(req),
            status,
            p,
            q,
            reasons_from_json(reasons),
            None if baseline is None else json.loads(baseline),
            state,
            _time(ended),
            note,
        )

    def open_activations(self) -> list[ActivationRecord]:
        ids = self._query(
            "SELECT id FROM flex_activation WHERE state = 'active' ORDER BY received_at"
        )
        out = []
        for (aid,) in ids:
            rec = self.activation(aid)
            if rec is not None:
                out.append(rec)
        return out

    def pcc_setpoints(
        self, activation_id: str
    ) -> list[tuple[datetime, float | None, float | None]]:
        rows = self._query(
            "SELECT start, p_kw, q_kvar FROM flex_pcc_setpoint WHERE activation_id = ?"
            " ORDER BY seq",
            (activation_id,),
        )
        return [(datetime.fromisoformat(s), p, q) for s, p, q in rows]

    def sent_setpoints(self, activation_id: str) -> list[tuple[datetime, str, str, float, str]]:
        rows = self._query(
            "SELECT at, der, point, value, status FROM flex_setpoint WHERE activation_id = ?"
            " ORDER BY seq",
            (activation_id,),
        )
        return [(datetime.fromisoformat(a), d, p, v, s) for a, d, p, v, s in rows]

    def verification(self, activation_id: str) -> list[VerifiedInterval]:
        rows = self._query(
            "SELECT body FROM flex_verification WHERE activation_id = ? ORDER BY interval_start",
            (activation_id,),
        )
        return [interval_from_json(b) for (b,) in rows]

    def final_verification(self, activation_id: str) -> list[VerifiedInterval]:
        """The final verification's intervals, if it was computed."""
        rows = self._query(
            "SELECT body FROM flex_verification WHERE activation_id = ? AND final = 1"
            " ORDER BY interval_start",
            (activation_id,),
        )
        return [interval_from_json(b) for (b,) in rows]

    def audit_log(
        self, kind: str | None = None
    ) -> list[tuple[datetime, str, str, str, tuple[Reason, ...]]]:
        sql = "SELECT at, kind, subject, decision, reasons FROM flex_audit"
        args: tuple[Any, ...] = ()
        if kind is not None:
            sql += " WHERE kind = ?"
            args = (kind,)
        rows = self._query(sql + " ORDER BY seq", args)
        return [
            (datetime.fromisoformat(a), k, s, d, reasons_from_json(r)) for a, k, s, d, r in rows
        ]


P = ParamSpec("P")
T = TypeVar("T")


def _on_db_thread(
    method: Callable[Concatenate[RecordTables, P], T],
) -> Callable[Concatenate[FlexRecords, P], asyncio.Future[T]]:
    """The method as a call queued on the database thread when it is made (not when it is
    awaited): calls run in the order they were made, so the control path queues a write
    and goes on, and the next awaited call finds it done (gateway.flex.ports)."""

    def call(self: FlexRecords, /, *args: P.args, **kwargs: P.kwargs) -> asyncio.Future[T]:
        return self.db.submit(lambda conn: method(RecordTables(conn), *args, **kwargs))

    call.__doc__ = method.__doc__
    return call


class FlexRecords:
    """The records file as the event loop uses them, each call on the database thread;
    `async with FlexRecords(path) as records` (or `open`/`close`)."""

    def __init__(self, path: Path) -> None:
        # NORMAL: survives a crash of the process; FULL would sync for every set point
        self.db = Database(path, SCHEMA, synchronous="NORMAL", label=LABEL)

    @property
    def path(self) -> Path:
        return self.db.path

    async def open(self) -> FlexRecords:
        await self.db.open()
        return self

    async def close(self) -> None:
        await self.db.close()

    async def __aenter__(self) -> FlexRecords:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    audit = _on_db_thread(RecordTables.audit)
    reservation_status = _on_db_thread(RecordTables.reservation_status)
    save_reservation = _on_db_thread(RecordTables.save_reservation)
    accepted_reservations = _on_db_thread(RecordTables.accepted_reservations)
    activation = _on_db_thread(RecordTables.activation)
    save_activation = _on_db_thread(RecordTables.save_activation)
    open_activations = _on_db_thread(RecordTables.open_activations)
    end_activation = _on_db_thread(RecordTables.end_activation)
    pcc_setpoint = _on_db_thread(RecordTables.pcc_setpoint)
    pcc_setpoints = _on_db_thread(RecordTables.pcc_setpoints)
    setpoints = _on_db_thread(RecordTables.setpoints)
    intend_setpoints = _on_db_thread(RecordTables.intend_setpoints)
    settle_setpoints = _on_db_thread(RecordTables.settle_setpoints)
    unsettled_setpoints = _on_db_thread(RecordTables.unsettled_setpoints)
    sent_setpoints = _on_db_thread(RecordTables.sent_setpoints)
    save_verification = _on_db_thread(RecordTables.save_verification)
    verification = _on_db_thread(RecordTables.verification)
    final_verification = _on_db_thread(RecordTables.final_verification)
    audit_log = _on_db_thread(RecordTables.audit_log)
