from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.errors import StoreError
from gateway.model import Quality, QualityFlag, Reading
from gateway.store import Store


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
