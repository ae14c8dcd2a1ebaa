"""The status page of a 10,000-point site: what one refresh costs, as rendered (a summary
per device, the points not good, a filter) and the naive way (every point in one table).

Builds a snapshot of 20 devices with 500 points each (10 of them invalid) and renders it
`--rounds` times each way, interleaved so both see the same machine load. Prints one JSON
line: milliseconds per render and page size of each, the filtered views, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "firmware-sim")]

from gateway.ops import status_page  # noqa: E402
from gateway.ops.status import PointRow, Snapshot  # noqa: E402
from gateway.ops.status_page import PointQuery, render  # noqa: E402

DEVICES, POINTS = 20, 500


def site() -> Snapshot:
    points = [
        PointRow(
            f"site-{d:02}.p{i:03}",
            f"site-{d:02}",
            None,
            "other",
            "read",
            None if (d, i < 10) == (7, True) else float(i),
            "KiloW",
            "invalid[failure]" if (d, i < 10) == (7, True) else "good",
            (d, i < 10) != (7, True),
            0.4,
            "",
        )
        for d in range(DEVICES)
        for i in range(POINTS)
    ]
    return Snapshot("big-site", "", "bench", datetime.now(UTC), 1.0, True, "", [], points, [])


def timed(snap: Snapshot, query: PointQuery | None, rounds: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    for _ in range(rounds):
        page = render(snap, query)
    return (time.perf_counter() - t0) / rounds * 1000, len(page.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    snap = site()
    views = {
        "front": None,
        "device": PointQuery(device="site-03"),
        "filter_one": PointQuery(text="site-12.p042"),
        "filter_capped": PointQuery(text="site"),
    }
    ms: dict[str, float] = dict.fromkeys([*views, "naive_all_rows"], 0.0)
    size: dict[str, int] = {}
    cap = status_page.ALL_POINTS_UP_TO
    for _ in range(args.rounds):
        for name, query in views.items():
            t, size[name] = timed(snap, query, 1)
            ms[name] += t / args.rounds
        status_page.ALL_POINTS_UP_TO = len(snap.points)  # the naive page: one table of all
        try:
            t, size["naive_all_rows"] = timed(snap, None, 1)
        finally:
            status_page.ALL_POINTS_UP_TO = cap
        ms["naive_all_rows"] += t / args.rounds
    print(
        json.dumps(
            {
                "bench": "status_page",
                "points": len(snap.points),
                "rounds": args.rounds,
                "render_ms": {k: round(v, 2) for k, v in ms.items()},
                "page_kb": {k: round(v / 1024, 1) for k, v in size.items()},
                "naive_over_front_time": round(ms["naive_all_rows"] / ms["front"], 1),
                "naive_over_front_size": round(size["naive_all_rows"] / size["front"], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
