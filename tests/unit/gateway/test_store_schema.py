"""The store's history table: clustered by an integer point number and time, a store file of
the former schema (a `samples` table keyed by the point's text id) migrated on open, and
two rows of one point at the same time."""

from __future__ import annotations

import logging
import sqlite3
import time
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.errors import StoreError
from gateway.model import Quality, QualityFlag, Reading
from gateway.store import Store, migrate, needs_migration
from tests.unit.gateway.test_store import T0, _at, _device

#: the store's schema before `history` (the tables as that version created them)
OLD_SCHEMA = """
CREATE TABLE samples (
    point TEXT NOT NULL, ts REAL NOT NULL, value REAL, quality TEXT NOT NULL, source_ts REAL
);
CREATE INDEX samples_point_ts ON samples (point, ts);
CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, opened REAL NOT NULL, alive_until REAL);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, kind TEXT NOT NULL,
    device TEXT, point TEXT, detail TEXT NOT NULL
);
"""

BAD = Quality.invalid(QualityFlag.COMM_FAILURE)


def old_store(path: Path) -> None:
    """A store file as the former schema wrote it: two points, a link failure, a
    device-stamped record, one row written twice at the same time, a run and an event."""
    t = T0.timestamp()
    conn = sqlite3.connect(path)
    with conn:
        conn.executescript(OLD_SCHEMA)
        conn.executemany(
            "INSERT INTO samples VALUES (?,?,?,?,?)",
            [
                ("a", t + 0, 1.0, "good", None),
                ("b", t + 0, 7.0, "good", t - 60),
                ("a", t + 1, 2.0, "good", None),
                ("a", t + 2, None, str(BAD), None),
                ("b", t + 3, 8.0, "questionable[old,substituted]", None),
                ("a", t + 3, 3.0, "good", None),
                ("a", t + 3, 3.5, "good", None),  # written later at the same time: kept
            ],
        )
        conn.execute("INSERT INTO runs (opened, alive_until) VALUES (?, ?)", (t, t + 3))
        conn.execute(
            "INSERT INTO events (ts, kind, device, point, detail) VALUES (?,?,?,?,?)",
            (t, "write", "d", "a", '{"value": 1}'),
        )
    conn.close()


def _tables(path: Path) -> dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        return dict(
            conn.execute("SELECT name, type FROM sqlite_master WHERE name NOT LIKE 'sqlite%'")
        )
    finally:
        conn.close()


async def test_a_store_of_the_former_schema_migrates_on_open_and_reads_the_same(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "old.sqlite"
    old_store(path)
    with caplog.at_level(logging.INFO, logger="gateway.store"):
        store = await Store.open(path)
    assert "7 samples moved to the clustered history table (6 rows" in caplog.text
    tables = _tables(path)
    assert tables["history"] == "table" and tables["points"] == "table"
    assert tables["samples"] == "view" and "samples_point_ts" not in tables
    a = await store.range("a", T0, _at(10))
    assert [(s.time, s.value, s.quality) for s in a] == [
        (_at(0), 1.0, Quality()),
        (_at(1), 2.0, Quality()),
        (_at(2), None, BAD),
        (_at(3), 3.5, Quality()),
    ]
    b = await store.range("b", T0, _at(10))
    assert [(s.time, s.value, s.source_time) for s in b] == [
        (_at(0), 7.0, _at(-60)),
        (_at(3), 8.0, None),
    ]
    assert b[1].quality == Quality.questionable(QualityFlag.OLD, QualityFlag.SUBSTITUTED)
    (event,) = await store.events("write")
    assert (event.point, event.detail) == ("a", {"value": 1})
    # new rows join the migrated history under the same point numbers
    store.add(Reading("a", 4.0, "KiloW", gateway_time=_at(4)))
    store.add(Reading("c", 9.0, "KiloW", gateway_time=_at(4)))
    await store.close()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="gateway.store"):
        store = await Store.open(path)  # nothing left to migrate
    assert "moved" not in caplog.text
    assert [s.value for s in await store.range("a", T0, _at(10))] == [1.0, 2.0, None, 3.5, 4.0]
    assert [s.value for s in await store.range("c", T0, _at(10))] == [9.0]
    await store.close()
    conn = sqlite3.connect(path)
    try:  # the view reads as the former table did
        rows = conn.execute(
            "SELECT point, ts - ?, value, quality FROM samples ORDER BY point, ts",
            (T0.timestamp(),),
        ).fetchall()
    finally:
        conn.close()
    assert rows[:4] == [
        ("a", 0.0, 1.0, "good"),
        ("a", 1.0, 2.0, "good"),
        ("a", 2.0, None, str(BAD)),
        ("a", 3.0, 3.5, "good"),
    ]
    assert len(rows) == 8


async def test_a_migration_that_fails_leaves_the_former_table(tmp_path: Path) -> None:
    """The migration is one transaction: a file it cannot finish is left as it was."""
    path = tmp_path / "old.sqlite"
    old_store(path)
    conn = sqlite3.connect(path)
    with conn:  # a history table the migration cannot fill (a value must be text)
        conn.execute(
            "CREATE TABLE history (pid INTEGER NOT NULL, ts REAL NOT NULL, value TEXT "
            "CHECK (typeof(value) = 'text'), quality TEXT, source_ts REAL, "
            "PRIMARY KEY (pid, ts)) WITHOUT ROWID"
        )
    conn.close()
    with pytest.raises(StoreError, match=str(path)):
        await Store.open(path)
    tables = _tables(path)
    assert tables["samples"] == "table" and "samples_point_ts" in tables
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT count(*) FROM samples").fetchone()[0] == 7
        assert conn.execute("SELECT count(*) FROM points").fetchone()[0] == 0
    finally:
        conn.close()


async def test_a_query_of_one_point_in_the_samples_view_searches_its_rows(
    tmp_path: Path,
) -> None:
    """The operators' view: a point's rows in a time range are found by its number in
    both tables, not by reading the whole history (1.3 s on 24 million rows); a store
    with the view's earlier definition gets this one when opened."""
    path = tmp_path / "s.sqlite"
    await (await Store.open(path)).close()
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("DROP VIEW samples")
        conn.execute(
            "CREATE VIEW samples (point, ts, value, quality, source_ts) AS SELECT points.id, ts, "
            "value, coalesce(quality, 'good'), source_ts FROM (SELECT * FROM history UNION ALL "
            "SELECT * FROM recent) JOIN points USING (pid)"
        )
    conn.close()
    await (await Store.open(path)).close()
    conn = sqlite3.connect(path)
    try:
        plan = " / ".join(
            row[3]
            for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT count(*) FROM samples WHERE point = ? AND ts > ?",
                ("pcc.p", 0.0),
            )
        )
    finally:
        conn.close()
    assert "SEARCH history USING PRIMARY KEY (pid=? AND ts>?)" in plan, plan
    assert "SEARCH recent USING PRIMARY KEY (pid=? AND ts>?)" in plan, plan
    assert "SCAN history" not in plan and "SCAN recent" not in plan, plan


async def test_a_migration_reports_its_progress_as_it_runs(tmp_path: Path) -> None:
    """What keeps systemd's start timeout extended (gateway.app.migrate_state): SQLite
    calls back while the migration's statements run, so a hung one stops the calls."""
    path = tmp_path / "old.sqlite"
    old_store(path)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000) "
            "INSERT INTO samples SELECT 'p' || (i % 10), 1.6e9 + i, i * 0.5, 'good', NULL FROM n"
        )
    conn.close()
    calls: list[float] = []
    assert await migrate(path, progress=lambda: calls.append(time.monotonic()))
    assert not needs_migration(path)
    assert len(calls) >= 10  # 100,007 rows: millions of SQLite steps


@pytest.mark.parametrize("first_good", [True, False])
async def test_two_readings_of_a_point_at_the_same_time_keep_the_later(
    tmp_path: Path, first_good: bool
) -> None:
    """A pushed reading with the time of a poll's (or two polls in one batch): the history
    has one row per point and time, the later reading's."""
    store = await Store.open(tmp_path / "s.sqlite")
    good = Reading("p", 5.0, "KiloW", gateway_time=_at(0))
    bad = Reading("p", None, "KiloW", BAD, gateway_time=_at(0))
    first, later = (good, bad) if first_good else (bad, good)
    store.add_all([first, later])
    await store.flush()
    # and across flushes: a row already written is replaced by a later one
    store.add(Reading("p", 6.0, "KiloW", gateway_time=_at(1)))
    await store.flush()
    store.add(Reading("p", 7.0, "KiloW", gateway_time=_at(1)))
    got = await store.range("p", T0, _at(5))
    assert [(s.time, s.value, s.quality) for s in got] == [
        (_at(0), later.value, later.quality),
        (_at(1), 7.0, Quality()),
    ]
    await store.close()


def _counts(path: Path) -> tuple[int, int]:
    conn = sqlite3.connect(path)
    try:
        return (
            conn.execute("SELECT count(*) FROM history").fetchone()[0],
            conn.execute("SELECT count(*) FROM recent").fetchone()[0],
        )
    finally:
        conn.close()


async def test_recent_rows_move_into_history_and_read_the_same(tmp_path: Path) -> None:
    """Flushes write `recent`; a move takes its rows into `history`, point range by point
    range; queries read both, before, during and after."""
    path = tmp_path / "s.sqlite"
    store = await Store.open(path)
    store.configure([_device(deadband=0.5, integrity_s=15)])
    for i in range(30):
        store.add(Reading("p", float(i // 10), "KiloW", gateway_time=_at(i)))
        store.add(Reading(f"q{i % 3}", float(i), "KiloW", gateway_time=_at(i)))
    await store.flush()
    assert _counts(path) == (0, 33)
    held = await store.range("p", T0, _at(30))
    before = [await store.range(f"q{k}", T0, _at(30)) for k in range(3)]
    assert await store.move() == 33
    assert _counts(path) == (33, 0)
    assert await store.range("p", T0, _at(30)) == held
    assert [await store.range(f"q{k}", T0, _at(30)) for k in range(3)] == before
    # rows at the same time in both tables: the recent (later) one is what reads back, and
    # the next move replaces the moved one
    store.add(Reading("q0", -1.0, "KiloW", BAD, gateway_time=_at(27)))
    store.add(Reading("q0", 99.0, "KiloW", gateway_time=_at(31)))
    await store.flush()
    got = await store.range("q0", _at(20), _at(40))
    assert [(s.time, s.value, s.quality.good) for s in got] == [
        (_at(21), 21.0, True),
        (_at(24), 24.0, True),
        (_at(27), -1.0, False),
        (_at(31), 99.0, True),
    ]
    latest = await store.latest("q0")
    assert latest is not None and latest.value == 99.0
    assert await store.move() == 2
    assert _counts(path) == (34, 0)
    assert await store.range("q0", _at(20), _at(40)) == got
    await store.close()


async def test_the_periodic_flush_moves_once_a_move_period_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.sqlite"
    store = await Store.open(path)
    store.add(Reading("p", 1.0, "KiloW", gateway_time=_at(0)))
    assert await store.flush_due(hold_s=0.0) == 1
    assert _counts(path) == (0, 1)  # within the move period: stays in `recent`
    monkeypatch.setattr("gateway.store.MOVE_S", 0.0)
    store.add(Reading("p", 2.0, "KiloW", gateway_time=_at(1)))
    assert await store.flush_due(hold_s=0.0) == 1
    assert _counts(path) == (2, 0)
    await store.close()


async def test_retention_prunes_both_tables(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = await Store.open(path)
    for i in range(3):
        store.add(Reading("p", float(i), "KiloW", gateway_time=_at(i)))
    await store.flush()
    await store.move()
    store.add(Reading("p", 3.0, "KiloW", gateway_time=_at(3)))
    await store.flush()
    assert _counts(path) == (3, 1)
    assert await store.prune(timedelta(days=1)) == 4  # T0 is long past
    assert _counts(path) == (0, 0)
    await store.close()
