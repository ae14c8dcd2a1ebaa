"""A hold ends where the run that stored it ended: a killed gateway's down time is a gap.

Points stored by exception are read back held between kept rows. The first reading after a
restart is always kept, so a restart within one and a half integrity periods leaves two
rows close enough to be held across; only the store's record of how long each run was
alive tells the time nobody was reading from a flat signal.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
from collections.abc import Iterable, Sequence
from datetime import timedelta
from pathlib import Path

from gateway.model import Reading
from gateway.store import Sample, Store
from tests.unit.gateway.test_store import T0, _at, _device

#: a run killed with SIGKILL after `flushed` of its `polls` (one a second from T0) were
#: flushed: nothing is closed, no tail is written, the unflushed readings are lost
KILLED_RUN = """
import asyncio, os, signal, sys
from pathlib import Path
from tests.unit.gateway.test_store_runs import _opened, _read

async def run(path: Path, polls: int, flushed: int) -> None:
    store = await _opened(path)
    _read(store, range(flushed))
    await store.flush()
    _read(store, range(flushed, polls))
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(run(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
"""


async def _killed_run(path: Path, polls: int, flushed: int) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED_RUN, str(path), str(polls), str(flushed)
    )
    assert await proc.wait() == -signal.SIGKILL


async def _opened(path: Path) -> Store:
    """A new run of the store at `path`, its point `p` kept by exception (integrity 60 s,
    a poll a second)."""
    store = await Store.open(path)
    store.configure([_device(integrity_s=60)])
    return store


def _read(store: Store, seconds: Iterable[int]) -> None:
    """Point `p` read as a flat 5 kW at each of `seconds` after T0."""
    for i in seconds:
        store.add(Reading("p", 5.0, "KiloW", gateway_time=_at(i)))


def _seconds(samples: Sequence[Sample]) -> list[float]:
    return [round((s.time - T0).total_seconds(), 3) for s in samples]


async def test_a_killed_run_is_not_held_across_the_time_the_gateway_was_down(
    tmp_path: Path,
) -> None:
    """A flat 5 kW kept at 0 s, confirmed every second and flushed up to 20 s, the process
    killed at 23 s (21-23 s were never written), restarted at 40 s: nobody read the point
    from 21 s to 39 s, and the history must not say it stayed 5 kW."""
    path = tmp_path / "s.sqlite"
    await _killed_run(path, polls=24, flushed=21)
    store = await _opened(path)
    _read(store, range(40, 50))
    got = await store.range("p", T0, _at(50))
    # held up to the last confirmation the killed run wrote, then the restarted run
    assert _seconds(got) == [*range(0, 21), *range(40, 50)]
    # and over the down time alone: no measurement
    assert await store.range("p", _at(22), _at(40)) == []
    await store.close()


async def test_a_clean_stop_holds_up_to_its_last_confirmation_however_soon_the_restart(
    tmp_path: Path,
) -> None:
    """The tail a clean stop keeps ends the hold there, even when the next run starts
    within one and a half integrity periods."""
    path = tmp_path / "s.sqlite"
    store = await _opened(path)
    _read(store, range(10))
    await store.close()
    store = await _opened(path)
    _read(store, range(30, 35))
    got = await store.range("p", T0, _at(40))
    assert _seconds(got) == [*range(0, 10), *range(30, 35)]
    await store.close()


async def test_the_running_store_holds_to_its_last_confirmation_between_flushes(
    tmp_path: Path,
) -> None:
    """The run in progress is alive: its last kept row is held to the last poll that
    confirmed it, and a flush with nothing to write still records that the run was alive
    (a flat signal writes no rows between integrity periods)."""
    path = tmp_path / "s.sqlite"
    store = await _opened(path)
    for at in range(0, 30, 5):
        _read(store, range(at, at + 5))
        await store.flush()
    # every flush advanced the run's record, though only the row at 0 s was written
    assert _runs(path) == [T0.timestamp() + 29]
    assert _seconds(await store.range("p", T0, _at(60))) == list(range(30))
    await store.close()


async def test_a_run_that_read_nothing_does_not_bound_a_hold(tmp_path: Path) -> None:
    """A start that died before its first poll, between two runs that were reading."""
    path = tmp_path / "s.sqlite"
    await _killed_run(path, polls=5, flushed=5)
    await _killed_run(path, polls=0, flushed=0)
    store = await _opened(path)
    _read(store, range(30, 32))
    assert _seconds(await store.range("p", T0, _at(32))) == [0, 1, 2, 3, 4, 30, 31]
    await store.close()


async def test_history_from_before_runs_were_recorded_is_held_as_before(tmp_path: Path) -> None:
    """A store file written before runs were recorded: no run bounds its rows."""
    path = tmp_path / "s.sqlite"
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "CREATE TABLE samples (point TEXT NOT NULL, ts REAL NOT NULL, value REAL, "
            "quality TEXT NOT NULL, source_ts REAL)"
        )
        conn.executemany(
            "INSERT INTO samples VALUES ('p', ?, ?, 'good', NULL)",
            [(_at(0).timestamp(), 5.0), (_at(20).timestamp(), 25.0)],
        )
    conn.close()
    store = await _opened(path)
    got = await store.range("p", T0, _at(21))
    assert [(t, s.value) for t, s in zip(_seconds(got), got, strict=True)] == [
        *((float(t), 5.0) for t in range(20)),
        (20.0, 25.0),
    ]
    await store.close()


async def test_retention_prunes_the_runs_it_no_longer_needs(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    await _killed_run(path, polls=3, flushed=3)
    store = await _opened(path)
    _read(store, [100])
    await store.flush()
    assert len(_runs(path)) == 2
    # T0 is in the past: everything older than a day goes, the run in progress stays
    await store.prune(timedelta(days=1))
    assert _runs(path) == [T0.timestamp() + 100]
    await store.close()


def _runs(path: Path) -> list[float | None]:
    """Until when each run was alive, oldest first."""
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT alive_until FROM runs ORDER BY id")]
    finally:
        conn.close()
