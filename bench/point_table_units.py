"""Point table: the cost of converting readings into the canonical unit on the way in.

Builds two point tables of `--points` active-power points, one mapped in KiloW (readings
pass through unchanged: the floor) and one in W (every reading is converted to kW), and
feeds each the same number of readings per round, `--rounds` times, interleaved in blocks
so both see the same machine load. Prints one JSON line: readings per second of each and
the ratio (converted / unchanged).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml

from gateway.loader import load_config
from gateway.model import Reading
from gateway.points import PointTable

ROOT = Path(__file__).resolve().parent.parent

BLOCK = 5  # rounds per block; the two tables alternate


def table(folder: Path, unit: str, points: int) -> PointTable:
    devices = [
        {
            "id": f"dev{d}",
            "protocol": "modbus",
            "connection": {"host": "127.0.0.1", "port": 1502},
            "points": [
                {
                    "id": f"dev{d}.p{i}",
                    "address": f"1/holding/{2 * i}",
                    "type": "float32",
                    "unit": unit,
                    "quantity": "active_power",
                }
                for i in range(100)
            ],
        }
        for d in range(points // 100)
    ]
    (folder / f"{unit}.yaml").write_text(yaml.safe_dump({"devices": devices}))
    config = {
        "microgrid": {"id": "bench"},
        "state_dir": "state",
        "mappings": [f"{unit}.yaml"],
        "coupling_point": {"import_limit_kw": 100, "export_limit_kw": 100},
    }
    path = folder / f"{unit}-config.yaml"
    path.write_text(yaml.safe_dump(config))
    return PointTable(load_config(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tables = {unit: table(Path(tmp), unit, args.points) for unit in ("KiloW", "W")}
    batches = {
        unit: [Reading(m.point.id, 1234.5 + i, unit) for i, m in enumerate(t)]
        for unit, t in tables.items()
    }
    spent = dict.fromkeys(tables, 0.0)
    for _ in range(max(args.rounds // BLOCK, 1)):
        for unit, t in tables.items():
            started = time.perf_counter()
            for _ in range(BLOCK):
                t.update(batches[unit])
            spent[unit] += time.perf_counter() - started
    readings = len(batches["W"]) * max(args.rounds // BLOCK, 1) * BLOCK
    rate = {unit: readings / s for unit, s in spent.items()}
    assert tables["W"].latest("dev0.p0") is not None
    print(
        json.dumps(
            {
                "bench": "point_table_units",
                "points": len(batches["W"]),
                "rounds": readings // len(batches["W"]),
                "readings_per_s_kw_unchanged": round(rate["KiloW"]),
                "readings_per_s_w_converted": round(rate["W"]),
                "converted_over_unchanged_time": round(spent["W"] / spent["KiloW"], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
