from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.errors import StoreError
from gateway.mapping import Device
from gateway.model import Quality, QualityFlag, Reading
from gateway.store import WRITE_CHUNK, Store


async def test_samples_round_trip_and_range(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "s.sqlite")
    t0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    for i in range(10):
        store.add(Reading("p", float(i), "KiloW", gateway_time=t0 + timedelta(seconds=i)))
    store.add(
        Reading(
            "p",
            None,
            "KiloW",
            Quality.invalid(QualityFlag.COMM_FAILURE),
            gateway_time=t0 + timedelta(seconds=20),
        )
    )
    assert await store.flush() == 11
    got = await store.range("p", t0 + timedelta(seconds=2), t0 + timedelta(seconds=5))
    assert [s.value for s in got] == [2.0, 3.0, 4.0]
    latest = await store.latest("p")
    assert latest is not None and latest.value is None
    assert latest.quality == Quality.invalid(QualityFlag.COMM_FAILURE)
    assert await store.latest("other") is None
    await store.close()


async def test_wal_and_persistence(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = await Store.open(path)
    store.add(Reading("p", True, "UNITLESS"))
    await store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    store = await Store.open(path)
    latest = await store.latest("p")
    assert latest is not None and latest.value == 1.0
    await store.close()


async def test_events_are_append_only(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = await Store.open(path)
    await store.event("write", device="d", point="p", value=3.5, status="confirmed")
    (ev,) = await store.events("write")
    assert (ev.device, ev.point, ev.detail) == ("d", "p", {"value": 3.5, "status": "confirmed"})
    await store.close()
    conn = sqlite3.connect(path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM events")
    conn.close()


async def test_retention_prunes_old_samples(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "s.sqlite")
    now = datetime.now(UTC)
    store.add(Reading("p", 1.0, "KiloW", gateway_time=now - timedelta(days=40)))
    store.add(Reading("p", 2.0, "KiloW", gateway_time=now))
    await store.flush()
    assert await store.prune(timedelta(days=30)) == 1
    got = await store.range("p", now - timedelta(days=50), now + timedelta(seconds=1))
    assert [s.value for s in got] == [2.0]
    await store.close()


async def test_unopenable_store_names_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match=str(blocker)):
        await Store.open(blocker / "s.sqlite")


# -- storing by exception ----------------------------------------------------------------

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _device(deadband: float = 0.0, integrity_s: float = 60.0, poll_s: float = 1.0) -> Device:
    return Device.model_validate(
        {
            "id": "d",
            "protocol": "modbus",
            "connection": {"host": "127.0.0.1", "port": 1502},
            "poll_interval": poll_s,
            "points": [
                {
                    "id": "p",
                    "address": "1/holding/0",
                    "type": "float32",
                    "unit": "KiloW",
                    "storage": {"deadband": deadband, "integrity_s": integrity_s},
                }
            ],
        }
    )


def _rows(store: Store) -> list[tuple[float, float | None]]:
    conn = sqlite3.connect(store.path)
    try:
        return list(
            conn.execute("SELECT ts - ?, value FROM samples ORDER BY ts", (T0.timestamp(),))
        )
    finally:
        conn.close()


def _at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


async def test_a_flat_signal_is_kept_once_per_integrity_period_and_read_back_held(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path / "s.sqlite")
    store.configure([_device(integrity_s=60)])
    for i in range(300):
        store.add(Reading("p", 5.0, "KiloW", gateway_time=_at(i)))
    await store.flush()
    assert [t for t, _ in _rows(store)] == [0.0, 60.0, 120.0, 180.0, 240.0]
    assert store.kept == 5
    got = await store.range("p", _at(10), _at(400))
    # every poll from 10 s to the last one (299 s), as if each had been kept
    assert [round((s.time - T0).total_seconds()) for s in got] == list(range(10, 300))
    assert {s.value for s in got} == {5.0}
    await store.close()


async def test_changes_beyond_the_deadband_and_quality_changes_are_kept(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "s.sqlite")
    store.configure([_device(deadband=0.5, integrity_s=3600)])
    values = [10.0, 10.2, 10.4, 10.6, 10.1, 9.0, 9.0]
    for i, v in enumerate(values):
        store.add(Reading("p", v, "KiloW", gateway_time=_at(i)))
    bad = Quality.invalid(QualityFlag.COMM_FAILURE)
    store.add(Reading("p", None, "KiloW", bad, gateway_time=_at(7)))
    store.add(Reading("p", None, "KiloW", bad, gateway_time=_at(8)))
    store.add(Reading("p", 9.0, "KiloW", gateway_time=_at(20)))
    questionable = Quality.questionable(QualityFlag.OLD)
    store.add(Reading("p", 9.0, "KiloW", questionable, gateway_time=_at(21)))
    await store.flush()
    # 10.6 moved 0.6 from the kept 10.0; 10.1 is within 0.5 of 10.6; 9.0 is not
    assert _rows(store) == [
        (0.0, 10.0),
        (3.0, 10.6),
        (5.0, 9.0),
        (7.0, None),
        (20.0, 9.0),
        (21.0, 9.0),
    ]
    got = await store.range("p", T0, _at(30))
    # held between kept rows, never after the row without a value (the link was down)
    assert [((s.time - T0).total_seconds(), s.value) for s in got] == [
        (0.0, 10.0),
        (1.0, 10.0),
        (2.0, 10.0),
        (3.0, 10.6),
        (4.0, 10.6),
        (5.0, 9.0),
        (6.0, 9.0),
        (7.0, None),
        (20.0, 9.0),
        (21.0, 9.0),
    ]
    assert got[-1].quality == questionable
    await store.close()


async def test_a_gap_longer_than_the_integrity_period_stays_a_gap(tmp_path: Path) -> None:
    """The gateway was stopped: nothing is held across it, nor after a restart until the
    value is confirmed again."""
    path = tmp_path / "s.sqlite"
    store = await Store.open(path)
    store.configure([_device(integrity_s=10)])
    for i in range(5):
        store.add(Reading("p", 1.0, "KiloW", gateway_time=_at(i)))
    await store.close()
    store = await Store.open(path)
    store.configure([_device(integrity_s=10)])
    # the stop kept the last confirmation (4 s): history reaches it, and no further
    got = await store.range("p", T0, _at(100))
    assert [(s.time - T0).total_seconds() for s in got] == [0.0, 1.0, 2.0, 3.0, 4.0]
    for i in range(50, 53):
        store.add(Reading("p", 1.0, "KiloW", gateway_time=_at(i)))
    got = await store.range("p", T0, _at(100))
    assert [(s.time - T0).total_seconds() for s in got] == [0, 1, 2, 3, 4, 50, 51, 52]
    await store.close()


async def test_device_stamped_readings_and_integrity_zero_keep_every_reading(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path / "s.sqlite")
    store.configure([_device(integrity_s=0)])
    for i in range(3):
        store.add(Reading("p", 1.0, "KiloW", gateway_time=_at(i)))
    await store.flush()
    assert len(_rows(store)) == 3
    store.configure([_device(integrity_s=600)])
    for i in range(3, 6):
        store.add(Reading("p", 1.0, "KiloW", source_time=_at(i), gateway_time=_at(i)))
    await store.flush()
    assert len(_rows(store)) == 6
    await store.close()


async def test_points_the_store_was_not_told_about_keep_every_reading(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "s.sqlite")
    store.configure([_device()])
    for i in range(4):
        store.add(Reading("other", 2.0, "KiloW", gateway_time=_at(i)))
    assert await store.flush() == 4
    await store.close()


async def test_the_hold_of_the_last_row_in_a_window_runs_to_the_next_row(tmp_path: Path) -> None:
    """A flat counter kept every 60 s, read over a window that ends between two kept rows:
    the held value reaches the end of the window."""
    store = await Store.open(tmp_path / "s.sqlite")
    store.configure([_device(integrity_s=60)])
    for i in range(200):
        store.add(Reading("p", 7.0, "KiloW", gateway_time=_at(i)))
    got = await store.range("p", _at(50), _at(100))
    assert [round((s.time - T0).total_seconds()) for s in got] == list(range(50, 100))
    await store.close()


async def test_a_flush_larger_than_a_chunk_writes_every_row(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "s.sqlite")
    n = 2 * WRITE_CHUNK + 7
    for i in range(n):
        store.add(Reading(f"p{i}", float(i), "KiloW", gateway_time=_at(0)))
    assert await store.flush() == n
    assert len(_rows(store)) == n
    await store.close()


async def test_a_flush_of_more_other_rows_than_a_chunk_writes_every_one(tmp_path: Path) -> None:
    """Rows that are not good floats (a device down: every point invalid) go in chunks of
    their own, point by point, with the good rows of the same flush."""
    store = await Store.open(tmp_path / "s.sqlite")
    bad = Quality.invalid(QualityFlag.COMM_FAILURE)
    n = WRITE_CHUNK + 3
    for t in range(2):
        for i in range(n):
            store.add(Reading(f"p{i}", None, "KiloW", bad, gateway_time=_at(t)))
    store.add(Reading("good", 1.0, "KiloW", gateway_time=_at(0)))
    assert await store.flush() == 2 * n + 1
    rows = [(p, t - T0.timestamp(), v) for p, t, v, *_ in _all_rows(tmp_path / "s.sqlite")]
    assert len(rows) == 2 * n + 1 and ("good", 0.0, 1.0) in rows
    others = [(p, t) for p, t, v in rows if p != "good"]
    assert others == [(f"p{i}", float(t)) for i in range(n) for t in range(2)]
    await store.close()


def _all_rows(path: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.execute("SELECT point, ts, value, quality, source_ts FROM samples"))
    finally:
        conn.close()


def _three_points(deadband: float, integrity_s: float) -> Device:
    device = _device(deadband=deadband, integrity_s=integrity_s)
    p = device.points[0]
    device.points = [p.model_copy(update={"id": name}) for name in ("a", "b", "c")]
    return device


async def test_a_polls_batch_keeps_what_reading_by_reading_keeps(tmp_path: Path) -> None:
    """The point table hands the store a poll at a time: deadband, quality changes, the
    integrity period and device-stamped records decide exactly as reading by reading,
    also when a batch carries a point twice."""
    bad = Quality.invalid(QualityFlag.COMM_FAILURE)
    polls: list[list[Reading]] = []
    for i in range(40):
        t = _at(i)
        polls.append(
            [
                Reading("a", 10.0 + (0.3 if i % 3 else 0.0) + i // 10, "KiloW", gateway_time=t),
                Reading("b", None, "KiloW", bad, gateway_time=t)
                if 12 <= i < 15
                else Reading("b", 5.0, "KiloW", gateway_time=t),
                Reading("c", float(i % 2), "KiloW", source_time=t, gateway_time=t),
                Reading("unmapped", float(i), "KiloW", gateway_time=t),
            ]
        )
    # two polls in one batch: the second decides against what the first kept
    polls[20] = polls[20] + polls.pop(21)
    one_by_one = await Store.open(tmp_path / "one.sqlite")
    batched = await Store.open(tmp_path / "batch.sqlite")
    for store in (one_by_one, batched):
        store.configure([_three_points(deadband=0.5, integrity_s=15)])
    for poll in polls:
        for reading in poll:
            one_by_one.add(reading)
        batched.add_all(poll)
    assert batched.pending == one_by_one.pending == batched.kept == one_by_one.kept
    for store in (one_by_one, batched):
        await store.close()
    want = sorted(_all_rows(tmp_path / "one.sqlite"))
    assert sorted(_all_rows(tmp_path / "batch.sqlite")) == want
    kept = [row[:3] for row in want if row[0] == "a"]
    # moves of 0.3 stay within the deadband; the steps of 1.0 every 10 s and the
    # integrity period (15 s) are kept, and the close keeps the last confirmation
    assert [t - T0.timestamp() for _, t, _ in kept] == [0.0, 10.0, 20.0, 30.0, 39.0]
    b = [(t - T0.timestamp(), q) for p, t, _, q, _ in want if p == "b"]
    assert b == [(0.0, "good"), (12.0, str(bad)), (15.0, "good"), (30.0, "good"), (39.0, "good")]
    assert sum(row[0] == "c" for row in want) == 40  # every device-stamped record


async def test_rows_are_written_point_by_point(tmp_path: Path) -> None:
    """A flush writes each point's rows together, in time order: one page of the
    (point, ts) index per point and flush, not one per row."""
    store = await Store.open(tmp_path / "s.sqlite")
    for i in range(4):
        for point in ("x", "y", "z"):
            store.add(Reading(point, float(i), "KiloW", gateway_time=_at(i)))
    assert await store.flush() == 12
    rows = [(p, t - T0.timestamp()) for p, t, *_ in _all_rows(tmp_path / "s.sqlite")]
    assert rows == [(p, float(i)) for p in ("x", "y", "z") for i in range(4)]
    await store.close()


async def test_the_periodic_flush_holds_readings_for_the_hold_time(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "s.sqlite")
    store.add(Reading("p", 1.0, "KiloW", gateway_time=_at(0)))
    store.add(Reading("p", 2.0, "KiloW", gateway_time=_at(1)))
    assert await store.flush_due(hold_s=3600) == 0
    assert store.pending == 2 and _rows(store) == []
    latest = await store.latest("p")  # a query writes what is held first
    assert latest is not None and latest.value == 2.0
    assert store.pending == 0
    store.add(Reading("p", 3.0, "KiloW", gateway_time=_at(2)))
    assert await store.flush_due(hold_s=0.0) == 1
    assert [v for _, v in _rows(store)] == [1.0, 2.0, 3.0]
    await store.close()


async def test_a_query_sees_the_rows_of_the_write_in_progress(tmp_path: Path) -> None:
    """The periodic flush is writing the buffer chunk by chunk in the database thread when
    queries come: a point whose rows a chunk in flight took, and a point whose chunk is
    not taken yet, both read their whole history, not one that ends seconds early; and
    every row is written once."""
    store = await Store.open(tmp_path / "s.sqlite")
    for i in range(20):
        store.add_all(
            [Reading(f"q{k}", float(i), "KiloW", gateway_time=_at(i)) for k in range(3000)]
        )
    periodic = asyncio.create_task(store.flush_due(hold_s=0.0))
    await asyncio.sleep(0)  # it has taken its first chunk; those rows are being written
    assert 0 < store.pending < 60000
    for point in ("q0", "q2999"):  # in the chunk in flight; in the last chunk
        got = await store.range(point, T0, _at(20))
        assert [s.value for s in got] == [float(i) for i in range(20)]
    assert await periodic == 60000 - 20  # the last point's rows were the query's to write
    assert store.pending == 0
    assert len(_all_rows(tmp_path / "s.sqlite")) == 60000
    await store.close()


async def test_a_query_writes_its_own_points_rows_not_the_whole_buffer(tmp_path: Path) -> None:
    """A verification reads a few meter points while 10,000 others hold seconds of rows:
    the query writes its point's rows and leaves the others to the periodic flush (a whole
    buffer's write took 190 ms, with the control path waiting)."""
    store = await Store.open(tmp_path / "s.sqlite")
    for i in range(3):
        store.add_all([Reading(p, float(i), "KiloW", gateway_time=_at(i)) for p in "abc"])
    got = await store.range("b", T0, _at(3))
    assert [s.value for s in got] == [0.0, 1.0, 2.0]
    assert store.pending == 6
    latest = await store.latest("c")
    assert latest is not None and latest.value == 2.0
    assert store.pending == 3
    assert await store.flush() == 3
    assert sorted(p for p, *_ in _all_rows(tmp_path / "s.sqlite")) == sorted("aaabbbccc")
    await store.close()


async def test_each_flush_writes_the_rows_held_since_the_last_exactly_once(
    tmp_path: Path,
) -> None:
    """A point's buffers stay with it across flushes, emptied at each: good floats and
    any other row (no value, an integer) of one point, over three flushes."""
    store = await Store.open(tmp_path / "s.sqlite")
    store.configure([_device(integrity_s=0)])
    bad = Quality.invalid(QualityFlag.COMM_FAILURE)
    written = []
    for flush in range(3):
        for i in range(3):
            t = 10 * flush + i
            store.add(Reading("p", float(t), "KiloW", gateway_time=_at(t)))
            written.append((float(t), float(t)))
        store.add(Reading("p", None, "KiloW", bad, gateway_time=_at(10 * flush + 5)))
        written.append((10.0 * flush + 5, None))
        assert await store.flush() == 4
        assert await store.flush() == 0
    assert _rows(store) == written
    await store.close()


async def test_a_reload_keeps_the_rows_held_and_applies_the_new_policy(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "s.sqlite")
    store.configure([_device(deadband=5.0, integrity_s=3600)])
    store.add(Reading("p", 1.0, "KiloW", gateway_time=_at(0)))
    store.add(Reading("p", 2.0, "KiloW", gateway_time=_at(1)))  # within the deadband
    store.configure([_device(deadband=0.5, integrity_s=3600)])
    store.add(Reading("p", 2.0, "KiloW", gateway_time=_at(2)))  # beyond the new one
    store.add(Reading("p", 2.2, "KiloW", gateway_time=_at(3)))
    store.configure([])  # the point leaves the mapping: its held rows are still written
    store.add(Reading("p", 2.2, "KiloW", gateway_time=_at(4)))  # and every reading kept
    assert await store.flush() == 3
    assert _rows(store) == [(0.0, 1.0), (2.0, 2.0), (4.0, 2.2)]
    await store.close()


async def test_a_reading_added_while_a_flush_writes_is_written_once_by_the_next(
    tmp_path: Path,
) -> None:
    """The flush hands the database thread what was held when it began; a row added while
    that write waits (here on another writer's lock) belongs to the next flush alone."""
    store = await Store.open(tmp_path / "s.sqlite")
    store.add(Reading("p", 1.0, "KiloW", gateway_time=_at(0)))
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the store's write waits for this lock
    try:
        flush = asyncio.create_task(store.flush())
        await asyncio.sleep(0.05)  # the flush took the buffer; its write is waiting
        bad = Quality.invalid(QualityFlag.COMM_FAILURE)
        store.add(Reading("p", None, "KiloW", bad, gateway_time=_at(1)))
    finally:
        other.execute("COMMIT")
        other.close()
    assert await flush == 1
    assert await store.flush() == 1
    assert _rows(store) == [(0.0, 1.0), (1.0, None)]
    await store.close()


async def test_a_device_stamped_record_reported_again_is_kept_once(tmp_path: Path) -> None:
    """An IEC 104 driver reports a point's latest value with its time tag at every poll
    until the next arrives: the same record is one row, a new time tag or value another."""
    store = await Store.open(tmp_path / "s.sqlite")
    record = Reading("p", 5.0, "KiloW", source_time=_at(-30), gateway_time=_at(0))
    for _ in range(3):
        store.add(record)
    store.add(Reading("p", 5.0, "KiloW", source_time=_at(-30), gateway_time=_at(1)))
    store.add(Reading("p", 5.0, "KiloW", source_time=_at(2), gateway_time=_at(2)))
    store.add(Reading("p", 6.0, "KiloW", source_time=_at(2), gateway_time=_at(3)))
    assert await store.flush() == 3
    assert _rows(store) == [(0.0, 5.0), (2.0, 5.0), (3.0, 6.0)]
    await store.close()
