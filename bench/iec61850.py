"""IEC 61850: the driver (worker process, grouped reads) against the raw library.

Serves the demo IED (`bess2-ied`) with `mgms sim` in its own process and measures, one
client association at a time (the library's server slows every request when several are
open, which would blur the comparison):

- raw: the bindings called in this process, the naive way a script reads a point
  (value, q and t as three reads) and the library's best single request (one data object);
- driver: all readable points per poll as the mapping groups them (one data set read plus
  one read per remaining data object), through the worker process and its JSON channel;
  the same without the data set (one request per data object); and with the report
  association open, as the gateway runs with reports;
- writes: an SP set point and an SBO-enhanced APC control (select, operate, termination)
  through the driver, next to the raw write.

Prints one JSON line: latencies (median, p99, ms), points/s, and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pyiec61850.pyiec61850 as iec

from drivers.iec61850.driver import Iec61850Driver
from fwsim.process import free_port, start_sim
from gateway.loader import load_config
from gateway.mapping import Device, Point
from gateway.model import Command
from gateway.protocols.iec61850 import Iec61850Options

ROOT = Path(__file__).resolve().parent.parent

CONFIG = ROOT / "config" / "demo.yaml"
DEVICE = "bess2-ied"
WARM_UP = 10  # reads before timing: the first ones after a connect are slower
BLOCKS = 5


def figures(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"median_ms": round(statistics.median(ordered) * 1e3, 3), "p99_ms": round(p99 * 1e3, 3)}


def timed_sync(rounds: int, call: Callable[[], None]) -> list[float]:
    out = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        out.append(time.perf_counter() - started)
    return out


async def timed(rounds: int, call: Callable[[], Awaitable[Any]]) -> list[float]:
    out = []
    for _ in range(rounds):
        started = time.perf_counter()
        await call()
        out.append(time.perf_counter() - started)
    return out


def raw_connect(port: int) -> Any:
    """An association, probed and reopened if dead on arrival (see docs/iec61850.md)."""
    for _ in range(4):
        con = iec.IedConnection_create()
        _, err = iec.IedConnection_connect(con, "127.0.0.1", port)
        if err == 0:
            devices, err = iec.IedConnection_getLogicalDeviceList(con)
            if err == 0:
                iec.LinkedList_destroy(devices)
                return con
            iec.IedConnection_close(con)
        iec.IedConnection_destroy(con)
    raise RuntimeError(f"no association with the simulator: error {err}")


def raw(port: int, rounds: int) -> dict[str, Any]:
    con = raw_connect(port)
    mx = iec.IEC61850_FC_MX

    def read(reference: str) -> None:
        value, error = iec.IedConnection_readObject(con, reference, mx)
        assert error == 0, error
        iec.MmsValue_delete(value)

    def naive_point() -> None:
        for attribute in ("mag.f", "q", "t"):
            read(f"BESS2LD0/MMXU1.TotW.{attribute}")

    def write() -> None:
        value = iec.MmsValue_newFloat(0.0)
        _, error = iec.IedConnection_writeObject(
            con, "BESS2LD0/DRCC1.VarSpt.setMag.f", iec.IEC61850_FC_SP, value
        )
        assert error == 0, error
        iec.MmsValue_delete(value)

    def data_set() -> None:
        mms = iec.IedConnection_getMmsConnection(con)
        error = iec.MmsError_create()
        values = iec.MmsConnection_readNamedVariableListValues(
            mms, error, "BESS2LD0", "LLN0$Measurements", False
        )
        assert iec.MmsError_getValue(error) == 0
        iec.MmsErrror_destroy(error)
        iec.MmsValue_delete(values)

    naive_point()  # warm up
    try:
        return {
            "object": figures(timed_sync(rounds, lambda: read("BESS2LD0/MMXU1.TotW"))),
            "data_set_of_3": figures(timed_sync(rounds, data_set)),
            "naive_point": figures(timed_sync(rounds, naive_point)),
            "write": figures(timed_sync(rounds, write)),
        }
    finally:
        iec.IedConnection_close(con)
        iec.IedConnection_destroy(con)


def without_data_sets(device: Device) -> Device:
    copy = device.model_copy()
    copy._addresses = device._addresses
    copy._options = Iec61850Options(**{**device.options, "data_sets": []})
    return copy


async def connected(device: Device, points: list[Point]) -> Iec61850Driver:
    driver = Iec61850Driver(device)
    await driver.connect()
    for _ in range(WARM_UP):
        await driver.read(points)
    return driver


async def through_driver(device: Device, rounds: int) -> dict[str, Any]:
    points = [p for p in device.points if p.direction.readable]
    q_set = next(p for p in device.points if p.id == "bess2.q_set")
    p_set = next(p for p in device.points if p.id == "bess2.p_set")
    variants = {"grouped": device, "per_object": without_data_sets(device)}
    samples: dict[str, list[float]] = {name: [] for name in variants}
    out: dict[str, Any] = {"points": len(points)}
    # interleaved blocks, one association at a time, so both see the same machine load
    for _ in range(BLOCKS):
        for name, variant in variants.items():
            driver = await connected(variant, points)
            try:
                samples[name] += await timed(rounds // BLOCKS, lambda d=driver: d.read(points))
                out[f"requests_{name}"] = len(driver._plan(points).units)
            finally:
                await driver.close()
    for name, values in samples.items():
        out[f"read_{name}"] = figures(values)
    driver = await connected(device, points)
    try:
        out["write"] = figures(
            await timed(rounds, lambda: driver.write(q_set, Command(q_set.id, 0.0)))
        )
        out["control_sbo_enhanced"] = figures(
            await timed(rounds // 4, lambda: driver.write(p_set, Command(p_set.id, 0.0)))
        )
        assert await driver.subscribe(lambda reading: None)
        out["read_with_reports"] = figures(await timed(rounds // 4, lambda: driver.read(points)))
    finally:
        await driver.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    port = free_port()
    sim = start_sim(CONFIG, {DEVICE: port}, devices=[DEVICE])
    try:
        config = load_config(CONFIG, port_overrides={DEVICE: port})
        device = next(d for d in config.devices if d.id == DEVICE)
        raw_figures = raw(port, args.rounds)
        driver_figures = asyncio.run(through_driver(device, args.rounds))
    finally:
        sim.stop()
    n = driver_figures["points"]
    grouped = driver_figures["read_grouped"]["median_ms"]
    per_object = driver_figures["read_per_object"]["median_ms"]
    naive = raw_figures["naive_point"]["median_ms"] * n
    result = {
        "bench": "iec61850",
        "rounds": args.rounds,
        "raw": raw_figures,
        "driver": driver_figures,
        "points_per_s": {
            "driver_grouped": round(n / grouped * 1e3),
            "driver_per_object": round(n / per_object * 1e3),
            "raw_naive": round(n / naive * 1e3),
        },
        "ratios": {
            # > 1: the driver's whole poll is faster than reading point by point raw
            "naive_raw_over_driver_grouped": round(naive / grouped, 2),
            "driver_per_object_over_grouped": round(per_object / grouped, 2),
            # the cost of the process boundary per request
            "driver_request_over_raw_request": round(
                grouped / driver_figures["requests_grouped"] / raw_figures["object"]["median_ms"],
                2,
            ),
            "driver_write_over_raw_write": round(
                driver_figures["write"]["median_ms"] / raw_figures["write"]["median_ms"], 2
            ),
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
