"""Durable outbox: every outbound Smart API message is committed to SQLite before it is sent.

- `put` returns once the message is durable (or False when its message id is already
  known: duplicates are dropped, delivered ones included, for `keep_done_s`).
  Concurrent puts share one transaction (group commit): the first waiting caller commits
  the whole queue, the others find their row already written.
- `run(sender)` delivers: one worker per destination takes the oldest pending message,
  hands it to the sender and marks it delivered only when the sender returns (the HTTPS
  sender returns on a 2xx answer, the MQTT sender on the broker's PUBACK). A failure sets
  the next attempt by capped exponential backoff and the same message is retried, so a
  destination's messages leave strictly in order. A failure is logged when it starts or
  its error changes, and the return once; repeats go to DEBUG. A message still undelivered
  `give_up_after_s` after it was queued is marked expired (kept, logged at ERROR) and the
  next one goes.
- Restarting resumes with what is pending; `stats()` tells depth and age per destination.
- Time (time stamps, backoff waits, expiry, pruning) comes from one `OutboxClock`: the
  wall clock in the gateway, simulated time in tests of day-long outages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

from gateway.errors import DeliveryError
from gateway.north.config import RetryPolicy
from gateway.sqlite import Database

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id      TEXT NOT NULL UNIQUE,
    destination     TEXT NOT NULL,
    content_type    TEXT NOT NULL,
    body            BLOB NOT NULL,
    queued_at       REAL NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',  -- pending | delivered | expired
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error      TEXT,
    done_at         REAL
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (destination, state, seq);
"""

_PRUNE_EVERY_S = 3600.0


@dataclass(frozen=True)
class OutboundMessage:
    """A serialized message for one destination (a logical channel such as `forecast`;
    the sender maps it to a URL or a topic)."""

    message_id: str
    destination: str
    content_type: str
    body: bytes


@dataclass(frozen=True)
class QueuedMessage:
    message: OutboundMessage
    seq: int
    queued_at: float
    attempts: int


class OutboxClock(Protocol):
    """The outbox's time: seconds since the epoch, and waiting in those seconds."""

    def time(self) -> float: ...

    async def wait(self, event: asyncio.Event, seconds: float) -> None:
        """Return when `event` is set or `seconds` have passed, whichever is first."""
        ...


class WallClock:
    def time(self) -> float:
        return time.time()

    async def wait(self, event: asyncio.Event, seconds: float) -> None:
        # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await event.wait()


class Sender(Protocol):
    """Hands one message to the peer; returns only when the peer took it, else raises
    DeliveryError."""

    async def deliver(self, item: QueuedMessage) -> None: ...


@dataclass(frozen=True)
class DestinationStats:
    depth: int
    oldest_age_s: float | None
    head_attempts: int
    last_error: str | None


@dataclass(frozen=True)
class OutboxStats:
    pending: int
    delivered: int
    expired: int
    oldest_age_s: float | None
    destinations: dict[str, DestinationStats]


class Outbox:
    """The outbox file `path` with `policy`; use as `async with Outbox(...) as outbox`."""

    def __init__(
        self, path: Path, policy: RetryPolicy, *, clock: OutboxClock | None = None
    ) -> None:
        # FULL: "stored before sent" must hold across a power cut, or a message is lost
        self._db = Database(path, _SCHEMA, synchronous="FULL", label="outbox")
        self._policy = policy
        self._time: OutboxClock = clock or WallClock()
        self._clock = self._time.time
        self._queue: list[tuple[OutboundMessage, asyncio.Future[bool]]] = []
        self._commit_lock = asyncio.Lock()
        self._wake: dict[str, asyncio.Event] = {}
        self._kicks: dict[str, asyncio.Event] = {}
        self._spawn: Callable[[str], None] | None = None
        #: destination -> the error of its last failed attempt, while it keeps failing
        self._failing: dict[str, str] = {}

    @property
    def path(self) -> Path:
        return self._db.path

    async def __aenter__(self) -> Outbox:
        await self._db.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._db.close()

    # -- queueing ---------------------------------------------------------------------------

    async def put(self, message: OutboundMessage) -> bool:
        """Store `message`; True once it is durable, False if its id was already queued."""
        result = await self.put_many([message])
        return result[0]

    async def put_many(self, messages: Sequence[OutboundMessage]) -> list[bool]:
        loop = asyncio.get_running_loop()
        mine: list[tuple[OutboundMessage, asyncio.Future[bool]]] = [
            (m, loop.create_future()) for m in messages
        ]
        self._queue.extend(mine)
        try:
            async with self._commit_lock:
                if not all(f.done() for _, f in mine):
                    batch, self._queue = self._queue, []
                    await self._commit(batch)
        except asyncio.CancelledError:
            # not yet taken by a commit: withdraw, so nothing is stored behind our back
            self._queue = [entry for entry in self._queue if entry not in mine]
            raise
        # a commit cancelled midway still settles its futures when the thread finishes
        results = [await f for _, f in mine]
        for (m, _), fresh in zip(mine, results, strict=True):
            if fresh:
                self._notify(m.destination)
        return results

    async def _commit(self, batch: list[tuple[OutboundMessage, asyncio.Future[bool]]]) -> None:
        now = self._clock()
        rows = [(m.message_id, m.destination, m.content_type, m.body, now, now) for m, _ in batch]
        done = self._db.submit(lambda conn: _insert(conn, rows))

        def settle(fut: asyncio.Future[list[bool]]) -> None:
            # runs even when the committing caller was cancelled: nobody waits forever
            exc = None if fut.cancelled() else fut.exception()
            for i, (_, waiter) in enumerate(batch):
                if waiter.done():
                    continue
                if fut.cancelled():
                    waiter.cancel()
                elif exc is not None:
                    waiter.set_exception(exc)
                else:
                    waiter.set_result(fut.result()[i])

        done.add_done_callback(settle)
        with contextlib.suppress(Exception):  # each waiter gets the error via its future
            await asyncio.shield(done)

    def _notify(self, destination: str) -> None:
        self._event(self._wake, destination).set()
        if self._spawn is not None:
            self._spawn(destination)

    def kick(self, destination: str | None = None) -> None:
        """Retry now instead of waiting out the backoff (e.g. the link just came back)."""
        targets = [destination] if destination else list(self._kicks)
        for name in targets:
            self._event(self._kicks, name).set()

    @staticmethod
    def _event(events: dict[str, asyncio.Event], destination: str) -> asyncio.Event:
        return events.setdefault(destination, asyncio.Event())

    # -- delivery ---------------------------------------------------------------------------

    async def run(self, sender: Sender) -> None:
        """Deliver until cancelled; one worker per destination, in order."""
        workers: set[str] = set()
        try:
            async with asyncio.TaskGroup() as tg:

                def spawn(destination: str) -> None:
                    if destination not in workers:
                        workers.add(destination)
                        tg.create_task(self._worker(destination, sender))

                self._spawn = spawn
                for destination in await self._db.call(_pending_destinations):
                    spawn(destination)
                tg.create_task(self._prune_loop())
        finally:
            self._spawn = None

    async def _worker(self, destination: str, sender: Sender) -> None:
        wake = self._event(self._wake, destination)
        kick = self._event(self._kicks, destination)
        while True:
            wake.clear()
            head = await self._db.call(lambda conn: _head(conn, destination))
            if head is None:
                await wake.wait()
                continue
            item, next_attempt_at = head
            now = self._clock()
            if now - item.queued_at >= self._policy.give_up_after_s:
                await self._db.call(partial(_finish, seq=item.seq, state="expired", now=now))
                log.error(
                    "outbox: gave up message %s to %s after %d attempts in %.0f s",
                    item.message.message_id,
                    destination,
                    item.attempts,
                    now - item.queued_at,
                )
                continue
            if next_attempt_at > now and not kick.is_set():
                # only a kick shortens the head's backoff, not a new message behind it
                await self._time.wait(kick, next_attempt_at - now)
                continue
            kick.clear()
            await self._attempt(destination, sender, item)

    async def _attempt(self, destination: str, sender: Sender, item: QueuedMessage) -> None:
        msg = item.message
        try:
            await sender.deliver(item)
        except DeliveryError as exc:
            attempts = item.attempts + 1
            delay = self._policy.delay(attempts)
            retry_at = self._clock() + delay
            error = str(exc)
            await self._db.call(
                lambda conn: _failed(conn, item.seq, attempts, retry_at, error),
            )
            # a long outage is one log line, not one per attempt: repeats of the same error
            # go to DEBUG, a new error is logged again
            level = logging.ERROR if exc.permanent else logging.WARNING
            if self._failing.get(destination) == error:
                level = logging.DEBUG
            self._failing[destination] = error
            log.log(
                level,
                "outbox: %s to %s failed (attempt %d), retry in %.3g s: %s",
                msg.message_id,
                destination,
                attempts,
                delay,
                exc,
            )
            return
        now = self._clock()
        await self._db.call(lambda conn: _finish(conn, item.seq, "delivered", now))
        if self._failing.pop(destination, None) is not None:
            log.info(
                "outbox: %s reachable again, %s delivered after %d failed attempts",
                destination,
                msg.message_id,
                item.attempts,
            )
        log.debug("outbox: delivered %s to %s", msg.message_id, destination)

    async def _prune_loop(self) -> None:
        never = asyncio.Event()
        while True:
            cutoff = self._clock() - self._policy.keep_done_s
            removed = await self._db.call(partial(_prune, cutoff=cutoff))
            if removed:
                log.info("outbox: pruned %d delivered/expired messages", removed)
            await self._time.wait(never, _PRUNE_EVERY_S)

    # -- observation ------------------------------------------------------------------------

    async def stats(self) -> OutboxStats:
        now = self._clock()
        return await self._db.call(lambda conn: _stats(conn, now))

    async def states(self) -> dict[str, str]:
        """message id -> state, for inspection and tests."""
        return await self._db.call(
            lambda conn: dict(conn.execute("SELECT message_id, state FROM outbox").fetchall())
        )


# -- SQL, run on the database thread ----------------------------------------------------------


def _insert(conn: sqlite3.Connection, rows: Sequence[tuple[object, ...]]) -> list[bool]:
    fresh = []
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        for row in rows:
            cur = conn.execute(
                "INSERT OR IGNORE INTO outbox"
                " (message_id, destination, content_type, body, queued_at, next_attempt_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                row,
            )
            fresh.append(cur.rowcount == 1)
    return fresh


def _pending_destinations(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT DISTINCT destination FROM outbox WHERE state = 'pending'")
    return [r[0] for r in rows]


def _head(conn: sqlite3.Connection, destination: str) -> tuple[QueuedMessage, float] | None:
    row = conn.execute(
        "SELECT seq, message_id, content_type, body, queued_at, attempts, next_attempt_at"
        " FROM outbox WHERE destination = ? AND state = 'pending' ORDER BY seq LIMIT 1",
        (destination,),
    ).fetchone()
    if row is None:
        return None
    seq, message_id, content_type, body, queued_at, attempts, next_attempt_at = row
    msg = OutboundMessage(message_id, destination, content_type, bytes(body))
    return QueuedMessage(msg, seq, queued_at, attempts), next_attempt_at


def _failed(conn: sqlite3.Connection, seq: int, attempts: int, retry_at: float, error: str) -> None:
    with conn:
        conn.execute(
            "UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE seq = ?",
            (attempts, retry_at, error[:2000], seq),
        )


def _finish(conn: sqlite3.Connection, seq: int, state: str, now: float) -> None:
    with conn:
        conn.execute("UPDATE outbox SET state = ?, done_at = ? WHERE seq = ?", (state, now, seq))


def _prune(conn: sqlite3.Connection, cutoff: float) -> int:
    with conn:
        cur = conn.execute("DELETE FROM outbox WHERE state != 'pending' AND done_at < ?", (cutoff,))
    return cur.rowcount


def _stats(conn: sqlite3.Connection, now: float) -> OutboxStats:
    counts = dict(conn.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall())
    per: dict[str, DestinationStats] = {}
    rows = conn.execute(
        "SELECT destination, COUNT(*), MIN(queued_at), MIN(seq) FROM outbox"
        " WHERE state = 'pending' GROUP BY destination"
    ).fetchall()
    for destination, depth, oldest, head_seq in rows:
        attempts, last_error = conn.execute(
            "SELECT attempts, last_error FROM outbox WHERE seq = ?", (head_seq,)
        ).fetchone()
        per[destination] = DestinationStats(depth, now - oldest, attempts, last_error)
    ages = [d.oldest_age_s for d in per.values() if d.oldest_age_s is not None]
    return OutboxStats(
        pending=counts.get("pending", 0),
        delivered=counts.get("delivered", 0),
        expired=counts.get("expired", 0),
        oldest_age_s=max(ages) if ages else None,
        destinations=per,
    )
