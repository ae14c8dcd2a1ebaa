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
  through the driver, next to the raw write;
- control round trip: the same SBO-enhanced control by a bare client (`RawControl`) and
  through the driver, in interleaved blocks with one association each; then the bare
  client's control again while 1 and 2 more associations are open and idle. The library's
  single-threaded server waits up to 10 ms on each idle association in every pass of its
  loop (docs/iec61850.md, "Control latency"), which this line shows.

Prints one JSON line: latencies (median, p99, ms), points/s, and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pyiec61850.pyiec61850 as iec

from drivers.iec61850.driver import Iec61850Driver
from drivers.iec61850.protocol import Iec61850Options
from fwsim.process import free_port, start_sim
from gateway.loader import load_config
from gateway.mapping import Device, Point
from gateway.model import Command

ROOT = Path(__file__).resolve().parent.parent

CONFIG = ROOT / "config" / "demo.yaml"
DEVICE = "bess2-ied"
P_SET = "BESS2LD0/DRCC1.WSpt"  # bess2.p_set: APC, select-before-operate, enhanced security
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


class Refused(Exception):
    """The IED did not confirm a control."""


class _Termination(iec.CommandTermHandler):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.done = threading.Event()

    def trigger(self) -> None:  # on the connection's receive thread
        self.done.set()


class RawControl:
    """A bare client's SBO-enhanced control as the driver makes it: select with value,
    operate, then wait for the CommandTermination (the event is set by the library's
    receive thread; waiting on it frees the GIL for that thread).

    The bindings register termination subscribers in one table per process, keyed by the
    control's reference: `close()` (before the association closes) releases the
    subscriber, which frees the handler it owns, so the next one can register."""

    def __init__(self, con: Any, reference: str, originator: str = "raw") -> None:
        self.client = iec.ControlObjectClient_create(reference, con)
        if not self.client:
            raise Refused(f"{reference} is not a control object")
        iec.ControlObjectClient_setOrigin(self.client, originator, iec.CONTROL_ORCAT_REMOTE_CONTROL)
        self.handler = _Termination()
        self.subscriber: Any = iec.CommandTermSubscriber()
        self.subscriber.setLibiec61850ControlObjectClient(self.client)
        self.subscriber.setEventHandler(self.handler.__disown__())  # the subscriber frees it
        if not self.subscriber.subscribe():
            raise Refused(f"{reference}: a termination subscriber is already registered")

    def close(self) -> None:
        self.subscriber = None  # unregisters and frees the handler
        iec.ControlObjectClient_destroy(self.client)

    def __call__(self, value: float, termination_timeout: float = 2.0) -> None:
        mms = iec.MmsValue_newFloat(float(value))
        self.handler.done.clear()
        try:
            if not iec.ControlObjectClient_selectWithValue(self.client, mms):
                raise Refused("select refused")
            if not iec.ControlObjectClient_operate(self.client, mms, 0):
                raise Refused("operate refused")
        finally:
            iec.MmsValue_delete(mms)
        if not self.handler.done.wait(termination_timeout):
            raise Refused(f"no CommandTermination within {termination_timeout} s")
        error = iec.ControlObjectClient_getLastApplError(self.client)
        if error.error != 0:
            raise Refused(f"CommandTermination-: AddCause {error.addCause}")


def closed(con: Any) -> None:
    iec.IedConnection_close(con)
    iec.IedConnection_destroy(con)


def raw_control(port: int, rounds: int, idle: int = 0) -> list[float]:
    """Seconds of each bare SBO-enhanced control, with `idle` more associations open."""
    others = [raw_connect(port) for _ in range(idle)]
    con = raw_connect(port)
    control = RawControl(con, P_SET)
    try:
        control(0.0)  # warm up
        return timed_sync(rounds, lambda: control(0.0))
    finally:
        control.close()
        closed(con)
        for other in others:
            closed(other)


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
    out["control"] = await control_round_trips(device, p_set, rounds)
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


async def control_round_trips(device: Device, p_set: Point, rounds: int) -> dict[str, Any]:
    """The same SBO-enhanced control through the driver and by a bare client, in
    interleaved blocks, one association at a time; then the driver with its report
    association open (as the gateway runs) and the bare client with idle associations
    beside it."""
    port = device.connection.port
    assert port is not None
    points = [p for p in device.points if p.direction.readable]
    command = Command(p_set.id, 0.0)
    samples: dict[str, list[float]] = {"raw": [], "driver": []}
    for _ in range(BLOCKS):
        samples["raw"] += raw_control(port, rounds // BLOCKS)  # nothing else runs meanwhile
        driver = await connected(device, points)
        try:
            await driver.write(p_set, command)  # warm up, as the bare client does
            samples["driver"] += await timed(
                rounds // BLOCKS, lambda d=driver: d.write(p_set, command)
            )
        finally:
            await driver.close()
    out: dict[str, Any] = {name: figures(values) for name, values in samples.items()}
    out["driver_over_raw"] = round(out["driver"]["median_ms"] / out["raw"]["median_ms"], 2)
    driver = await connected(device, points)
    try:
        assert await driver.subscribe(lambda reading: None)
        await driver.write(p_set, command)  # warm up
        out["driver_with_reports"] = figures(
            await timed(rounds // 4, lambda: driver.write(p_set, command))
        )
    finally:
        await driver.close()
    for idle in (1, 2):
        seconds = raw_control(port, rounds // 4, idle)
        out[f"raw_with_{idle}_idle_associations"] = figures(seconds)
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
