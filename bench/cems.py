"""CEMS read speed: a poll batched per resource against one request per point.

Starts `mgms sim` for the demo's building CEMS (HTTPS, bearer token) and measures with
the driver over one keep-alive TLS session:
- rest_per_point: one GET per REST point (the naive poll, the floor to beat);
- rest_batched: all REST points in one read() (one GET per path);
- smartapi_entity: the Smart API points in one read() (one Read request per entity, the
  message encoded and decoded by the gateway's Smart API codec on both sides).
Prints one JSON line; `batched_vs_per_point` is points/s of the batched poll over points/s
of the naive one.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "firmware-sim")]
DEMO_CONFIG = ROOT / "config" / "demo.yaml"

from drivers.cems.driver import CemsDriver  # noqa: E402
from drivers.cems.protocol import RestAddress  # noqa: E402
from fwsim.process import free_port, start_sim  # noqa: E402
from gateway.loader import load_config  # noqa: E402
from gateway.mapping import Point  # noqa: E402

DEVICE = "building2-cems"
ROUNDS = 100


async def _time(driver: CemsDriver, batches: list[list[Point]]) -> list[float]:
    samples = []
    for _ in range(ROUNDS):
        t = time.perf_counter()
        for batch in batches:
            readings = await driver.read(batch)
            assert all(r.quality.good for r in readings), [r.detail for r in readings]
        samples.append(time.perf_counter() - t)
    return samples


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 3),
    }


async def measure(ports: dict[str, int]) -> dict[str, object]:
    config = load_config(DEMO_CONFIG, port_overrides=ports)
    device = next(d for d in config.devices if d.id == DEVICE)
    readable = [p for p in device.points if p.direction.readable]
    rest = [p for p in readable if isinstance(device.address_of(p.id), RestAddress)]
    smart = [p for p in readable if p not in rest]
    driver = CemsDriver(device)
    await driver.connect()
    try:
        per_point = await _time(driver, [[p] for p in rest])
        batched = await _time(driver, [rest])
        entity = await _time(driver, [smart])
    finally:
        await driver.close()
    naive_per_s = len(rest) / statistics.median(per_point)
    batched_per_s = len(rest) / statistics.median(batched)
    return {
        "bench": "cems",
        "rounds": ROUNDS,
        "rest_points": len(rest),
        "rest_paths": len({str(device.address_of(p.id)).split("#")[0] for p in rest}),
        "rest_per_point": _ms(per_point),
        "rest_batched": _ms(batched),
        "smartapi_entity": {**_ms(entity), "points": len(smart)},
        "batched_vs_per_point": round(batched_per_s / naive_per_s, 2),
    }


def main() -> None:
    ports = {DEVICE: free_port()}
    sim = start_sim(DEMO_CONFIG, ports, devices=[DEVICE])
    try:
        print(json.dumps(asyncio.run(measure(ports))))
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
