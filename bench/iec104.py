"""IEC 104 acquisition and commands: the driver against the raw c104 library, same run.

Starts two demo CHP outstations in their own processes (one for the driver, one for the
raw client), then measures, interleaved in blocks so both sides see the same load:

- reads: the driver answers `read` from the values the outstation sent on its own
  (spontaneous, periodic, interrogations); the naive way polls each point with a read
  command (C_RD_NA_1) over a raw c104 connection. Points per second of each, and the
  latency of one read command (c104 misses some answers and then waits its timeout,
  which drags the naive points per second down; the median shows the round trip).
- commands: a set point (direct) and a start/stop (select-before-execute) through the
  driver (with its confirmation tracking) against the bare c104 `transmit()`. Latency
  median and p99 of each, and how many c104 reported as failed although the outstation
  confirmed them.

Prints one JSON line with the figures and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import c104

from drivers.iec104.driver import Iec104Driver
from fwsim.process import free_port, start_sim
from gateway.loader import load_config
from gateway.model import Command
from gateway.protocols.iec104 import Iec104Address

ROOT = Path(__file__).resolve().parent.parent

CONFIG = ROOT / "config" / "demo.yaml"
DEVICE = "chp1-rtu"
BLOCK = 25


class RawClient:
    """The same outstation through c104 alone: read commands and bare transmit()."""

    def __init__(self, port: int, addresses: list[Iec104Address]) -> None:
        self.client = c104.Client(tick_rate_ms=100, command_timeout_ms=2000)
        con = self.client.add_connection(ip="127.0.0.1", port=port, init=c104.Init.NONE)
        assert con is not None
        self.con = con
        station = con.add_station(common_address=1)
        assert station is not None
        self.monitors: list[c104.Point] = []
        self.commands: dict[int, c104.Point] = {}
        for addr in addresses:
            if addr.monitor is not None:
                p = station.add_point(
                    io_address=addr.monitor.ioa, type=getattr(c104.Type, addr.monitor.type_id.name)
                )
                assert p is not None
                self.monitors.append(p)
            if addr.command is not None:
                p = station.add_point(
                    io_address=addr.command.ioa, type=getattr(c104.Type, addr.command.type_id.name)
                )
                assert p is not None
                self.commands[addr.command.ioa] = p

    def start(self) -> None:
        self.client.start()
        deadline = time.monotonic() + 10
        while self.con.state != c104.ConnectionState.OPEN:
            if time.monotonic() > deadline:
                raise SystemExit("raw c104 client did not connect")
            if self.con.state == c104.ConnectionState.OPEN_MUTED:
                self.con.unmute()
            time.sleep(0.05)

    def poll_all(self, latencies: list[float]) -> int:
        answered = 0
        for p in self.monitors:
            started = time.perf_counter()
            answered += bool(p.read())
            latencies.append(time.perf_counter() - started)
        return answered

    def set_point(self, value: float) -> bool:
        p = self.commands[2001]
        p.value = value
        return bool(p.transmit(cause=c104.Cot.ACTIVATION))

    def start_stop(self, on: bool) -> bool:
        p = self.commands[2003]
        p.command_mode = c104.CommandMode.SELECT_AND_EXECUTE
        p.value = c104.Double.ON if on else c104.Double.OFF
        return bool(p.transmit(cause=c104.Cot.ACTIVATION))


def summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
    }


async def measure(port: int, raw_port: int, rounds: int) -> dict[str, object]:
    config = load_config(CONFIG, port_overrides={DEVICE: port})
    device = next(d for d in config.devices if d.id == DEVICE)
    readable = [p for p in device.points if p.direction.readable]
    points = {p.id: p for p in device.points}
    addresses = [device.address_of(p.id) for p in device.points]
    raw = RawClient(raw_port, [a for a in addresses if isinstance(a, Iec104Address)])
    driver = Iec104Driver(device)
    await driver.connect()
    await asyncio.to_thread(raw.start)
    t: dict[str, float] = {"driver_read": 0.0, "raw_read": 0.0}
    reads = {"driver": 0, "raw": 0}
    lat: dict[str, list[float]] = {
        k: [] for k in ("drv_sp", "raw_sp", "drv_sbe", "raw_sbe", "raw_read")
    }
    raw_failed = {"set_point": 0, "select_before_execute": 0}
    driver_failed = 0
    try:
        done = 0
        while done < rounds:
            block = min(BLOCK, rounds - done)
            started = time.perf_counter()
            for _ in range(block):
                got = await driver.read(readable)
                reads["driver"] += sum(r.quality.good for r in got)
            t["driver_read"] += time.perf_counter() - started
            started = time.perf_counter()
            for _ in range(block):
                reads["raw"] += await asyncio.to_thread(raw.poll_all, lat["raw_read"])
            t["raw_read"] += time.perf_counter() - started
            for i in range(block):
                value = 20.0 + (done + i) % 2 * 10
                s = time.perf_counter()
                r = await driver.write(points["chp1.p_set"], Command("chp1.p_set", value))
                lat["drv_sp"].append(time.perf_counter() - s)
                driver_failed += not r.ok
                s = time.perf_counter()
                raw_failed["set_point"] += not await asyncio.to_thread(raw.set_point, value)
                lat["raw_sp"].append(time.perf_counter() - s)
                on = bool((done + i) % 2)
                s = time.perf_counter()
                r = await driver.write(points["chp1.run"], Command("chp1.run", on))
                lat["drv_sbe"].append(time.perf_counter() - s)
                driver_failed += not r.ok
                s = time.perf_counter()
                raw_failed["select_before_execute"] += not await asyncio.to_thread(
                    raw.start_stop, on
                )
                lat["raw_sbe"].append(time.perf_counter() - s)
            done += block
    finally:
        await driver.close()
        await asyncio.to_thread(raw.client.stop)
    n = len(readable) * rounds
    if reads["driver"] != n:
        raise SystemExit(f"driver: only {reads['driver']} of {n} readings were good")
    drv_pps = n / t["driver_read"]
    raw_pps = reads["raw"] / t["raw_read"]
    sp, raw_sp = summary(lat["drv_sp"]), summary(lat["raw_sp"])
    sbe, raw_sbe = summary(lat["drv_sbe"]), summary(lat["raw_sbe"])
    return {
        "bench": "iec104",
        "rounds": rounds,
        "points": len(readable),
        "read_points_per_s": {"driver_cache": round(drv_pps), "raw_read_commands": round(raw_pps)},
        "read_speedup": round(drv_pps / raw_pps, 1),
        "raw_read_answered": f"{reads['raw']}/{n}",
        "raw_read_command": summary(lat["raw_read"]),
        "set_point": {"driver": sp, "raw_c104": raw_sp},
        "set_point_median_ratio": round(sp["median_ms"] / raw_sp["median_ms"], 2),
        "sbe": {"driver": sbe, "raw_c104": raw_sbe},
        "sbe_median_ratio": round(sbe["median_ms"] / raw_sbe["median_ms"], 2),
        "driver_commands_failed": driver_failed,
        "raw_c104_reported_failed": raw_failed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    # one outstation each, so that a selection the raw client leaves behind (c104 can
    # miss the select's confirmation and never execute) cannot block the driver's
    port, raw_port = free_port(), free_port()
    sim = start_sim(CONFIG, {DEVICE: port}, devices=[DEVICE])
    try:
        raw_sim = start_sim(CONFIG, {DEVICE: raw_port}, devices=[DEVICE])
        try:
            figures = asyncio.run(measure(port, raw_port, args.rounds))
        finally:
            raw_sim.stop()
    finally:
        sim.stop()
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
