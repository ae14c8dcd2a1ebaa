"""Inbound ledger: the first answer to every authenticated inbound message, by message id.

A repeat of a message gets the recorded answer again and nothing is applied twice, on the
channel it first came in on (the pipeline refuses a repeat elsewhere as wrong-channel). Only
messages that passed signature and authorization are recorded, so a forged message cannot
claim an id ahead of the genuine one. Each entry keeps the sha256 of the body as received
(`digest`: an exact repeat is found before parsing) and of the message's content
(`fingerprint`: the same message signed again is found after verifying). Entries older
than `keep_s` are pruned at open.

Written with synchronous=NORMAL (WAL): an entry survives a crash of the process; one lost
to a power cut at worst lets a repeat reach the handler again, whose apply is idempotent.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from gateway.north.wire import Answer
from gateway.sqlite import Database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS inbound (
    message_id   TEXT PRIMARY KEY,
    digest       TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    channel      TEXT NOT NULL,
    sender       TEXT NOT NULL,
    status       INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    answer       BLOB NOT NULL,
    received_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS inbound_digest ON inbound (digest);
"""

_COLUMNS = "message_id, fingerprint, channel, status, content_type, answer"


@dataclass(frozen=True)
class Record:
    """What identifies an inbound message in the ledger."""

    message_id: str
    digest: str
    fingerprint: str
    channel: str
    sender: str


@dataclass(frozen=True)
class Entry:
    message_id: str
    fingerprint: str
    #: the channel the message came in on; its answer is given again only there
    channel: str
    answer: Answer


class Ledger:
    """The ledger file; `async with Ledger(path) as ledger`."""

    def __init__(
        self, path: Path, *, keep_s: float = 7 * 86400.0, clock: Callable[[], float] = time.time
    ) -> None:
        # NORMAL: an entry lost to a power cut only lets an idempotent apply run again
        self._db = Database(path, _SCHEMA, synchronous="NORMAL", label="inbound ledger")
        self._keep_s = keep_s
        self._clock = clock

    async def __aenter__(self) -> Ledger:
        await self._db.open()
        await self._db.call(partial(_prune, cutoff=self._clock() - self._keep_s))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._db.close()

    async def get(self, message_id: str) -> Entry | None:
        return await self._db.call(partial(_one, where="message_id", value=message_id))

    async def by_digest(self, digest: str) -> Entry | None:
        """The entry of a message received with exactly these bytes (sha256 hex)."""
        return await self._db.call(partial(_one, where="digest", value=digest))

    async def record(self, record: Record, answer: Answer) -> None:
        row = (
            record.message_id,
            record.digest,
            record.fingerprint,
            record.channel,
            record.sender,
            answer.status,
            answer.content_type,
            answer.body,
            self._clock(),
        )
        await self._db.call(partial(_insert, row=row))

    async def count(self) -> int:
        return await self._db.call(_count)


def _one(conn: sqlite3.Connection, where: str, value: str) -> Entry | None:
    column = {"message_id": "message_id", "digest": "digest"}[where]  # never user text in SQL
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM inbound WHERE {column} = ? LIMIT 1", (value,)
    ).fetchone()
    if row is None:
        return None
    message_id, fingerprint, channel, status, content_type, body = row
    return Entry(message_id, fingerprint, channel, Answer(status, content_type, bytes(body)))


def _insert(conn: sqlite3.Connection, row: tuple[object, ...]) -> None:
    # the first answer wins; the pipeline serializes by id, so a conflict is not expected
    conn.execute("INSERT OR IGNORE INTO inbound VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row)


def _prune(conn: sqlite3.Connection, cutoff: float) -> None:
    conn.execute("DELETE FROM inbound WHERE received_at < ?", (cutoff,))


def _count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM inbound").fetchone()[0])
