"""Modbus acquisition: the coalesced read plan against one request per point.

Starts the simulated demo microgrid in its own process, then reads every point of every
demo Modbus device `--rounds` times with (a) the coalesced plan of the mapping and (b) the
naive plan (one request per point), interleaved in blocks so both see the same machine
load. Prints one JSON line: points per second and Modbus requests per point of each, and
the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from drivers.modbus.driver import ModbusDriver
from fwsim.process import free_port, start_sim
from gateway.loader import load_config
from gateway.protocols.modbus import ModbusOptions

ROOT = Path(__file__).resolve().parent.parent

CONFIG = ROOT / "config" / "demo.yaml"
BLOCK = 20  # rounds per block; blocks of (a) and (b) alternate


async def _round(drivers: list[ModbusDriver]) -> int:
    good = 0
    for driver in drivers:
        readings = await driver.read(driver.device.points)
        good += sum(r.quality.good for r in readings)
    return good


async def measure(ports: dict[str, int], rounds: int) -> dict[str, object]:
    config = load_config(CONFIG, port_overrides=ports)
    devices = [d for d in config.devices if d.protocol == "modbus"]
    plans: dict[str, list[ModbusDriver]] = {"coalesced": [], "naive": []}
    for device in devices:
        options = device.typed_options
        assert isinstance(options, ModbusOptions)
        plans["coalesced"].append(ModbusDriver(device, options=options))
        naive = options.model_copy(update={"coalesce": False})
        plans["naive"].append(ModbusDriver(device, options=naive))
    points = sum(len(d.points) for d in devices)
    elapsed = {name: 0.0 for name in plans}
    good = {name: 0 for name in plans}
    try:
        for drivers in plans.values():
            for driver in drivers:
                await driver.connect()
            await _round(drivers)  # warm up: connections, plans
            for driver in drivers:
                driver.requests_sent = 0
        done = 0
        while done < rounds:
            block = min(BLOCK, rounds - done)
            for name, drivers in plans.items():
                started = time.perf_counter()
                for _ in range(block):
                    good[name] += await _round(drivers)
                elapsed[name] += time.perf_counter() - started
            done += block
    finally:
        for drivers in plans.values():
            for driver in drivers:
                await driver.close()
    read = points * rounds
    figures: dict[str, dict[str, float]] = {}
    for name, drivers in plans.items():
        if good[name] != read:
            raise SystemExit(f"{name}: only {good[name]} of {read} readings were good")
        figures[name] = {
            "points_per_s": round(read / elapsed[name], 1),
            "requests_per_point": round(sum(d.requests_sent for d in drivers) / read, 4),
        }
    return {
        "bench": "modbus_acquisition",
        "devices": len(devices),
        "points": points,
        "rounds": rounds,
        **figures,
        "speedup": round(
            figures["coalesced"]["points_per_s"] / figures["naive"]["points_per_s"], 2
        ),
        "request_ratio": round(
            figures["naive"]["requests_per_point"] / figures["coalesced"]["requests_per_point"], 2
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="reads of every point per plan")
    args = parser.parse_args()
    config = load_config(CONFIG)
    ports = {d.id: free_port() for d in config.devices if d.protocol == "modbus"}
    sim = start_sim(CONFIG, ports, devices=list(ports))
    try:
        result = asyncio.run(measure(ports, args.rounds))
    finally:
        sim.stop()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
