"""Store: what recording how long a run was alive costs a flush.

A store of `--points` points kept by exception (integrity 60 s, a poll a second) is fed
`--polls` polls of a flat signal: after the first poll nothing is kept, and each flush is
only the run's `alive_until` advanced (one UPDATE in one transaction). The same polls are
then fed moving values: each flush writes a row per point, which is what persisting every
held point's confirmation at each flush (the other way to bound a hold after a crash)
would cost. Also timed: adding a poll's readings (the work each poll does anyway) and a
`range` of one point over the history. Median per poll of each; prints one JSON line with
the ratio of the moving flush to the flat one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.mapping import Device
from gateway.model import Reading
from gateway.store import Store

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def device(points: int) -> Device:
    return Device.model_validate(
        {
            "id": "d",
            "protocol": "modbus",
            "connection": {"host": "127.0.0.1", "port": 1502},
            "poll_interval": 1.0,
            "points": [
                {
                    "id": f"p{i}",
                    "address": f"1/holding/{2 * i}",
                    "type": "float32",
                    "unit": "KiloW",
                    "storage": {"deadband": 0.0, "integrity_s": 60},
                }
                for i in range(points)
            ],
        }
    )


async def feed(store: Store, points: int, polls: int, first: int, moving: bool) -> dict[str, float]:
    """`polls` polls from second `first`; the median add and flush time per poll in ms."""
    adds, flushes = [], []
    for k in range(first, first + polls):
        when = T0 + timedelta(seconds=k)
        readings = [
            Reading(f"p{i}", float(k if moving else 1), "KiloW", gateway_time=when)
            for i in range(points)
        ]
        a = time.perf_counter()
        for r in readings:
            store.add(r)
        b = time.perf_counter()
        await store.flush()
        c = time.perf_counter()
        adds.append(b - a)
        flushes.append(c - b)
    return {
        "add_ms": round(statistics.median(adds) * 1e3, 3),
        "flush_ms": round(statistics.median(flushes) * 1e3, 3),
    }


async def run(points: int, polls: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(Path(tmp) / "s.sqlite")
        try:
            store.configure([device(points)])
            await feed(store, points, 1, 0, moving=False)  # the first poll is kept
            flat = await feed(store, points, polls, 1, moving=False)
            moving = await feed(store, points, polls, 1 + polls, moving=True)
            a = time.perf_counter()
            history = await store.range("p0", T0, T0 + timedelta(seconds=1 + 2 * polls))
            range_ms = (time.perf_counter() - a) * 1e3
        finally:
            await store.close()
    assert len(history) == 1 + 2 * polls, len(history)
    return {
        "bench": "store_runs",
        "points": points,
        "polls": polls,
        "flat_add_ms": flat["add_ms"],
        "flat_flush_ms": flat["flush_ms"],
        "moving_add_ms": moving["add_ms"],
        "moving_flush_ms": moving["flush_ms"],
        "moving_over_flat_flush": round(moving["flush_ms"] / flat["flush_ms"], 1),
        "range_ms": round(range_ms, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--polls", type=int, default=30)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.points, args.polls))))


if __name__ == "__main__":
    main()
