"""Discovery time per protocol against the simulators, next to a floor: the time to
connect and read every point of the device's shipped mapping once through its driver (the
least a tool that knew the mapping already would spend). For SunSpec also the naive walk,
one register per request, against the chunked reads discovery does.

Starts the SunSpec site (config/sunspec.yaml) and the demo microgrid's IED, RTU and meters
in two simulator processes (and the bess1 inverter, a Modbus device without SunSpec, for
the range report); runs `--rounds` discoveries per protocol (median reported).
Prints one JSON line, with the load average before and after (the machine may be shared).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from drivers.dlms.scan import describe_meter
from drivers.iec104.scan import scan
from drivers.iec61850.browsing import browse_ied
from drivers.modbus.scan import RegisterScanner
from drivers.registry import create_driver
from fwsim.process import free_port, start_sim
from gateway.discover import dlms, iec61850
from gateway.discover import modbus as discover_modbus
from gateway.loader import load_config
from gateway.mapping import Device
from gateway.protocols.dlms import DlmsOptions
from gateway.protocols.modbus import Table

ROOT = Path(__file__).resolve().parent.parent

SUNSPEC = ROOT / "config" / "sunspec.yaml"
DEMO = ROOT / "config" / "demo.yaml"
DEMO_DEVICES = ["bess2-ied", "chp1-rtu", "pcc-billing-meter", "bess1-inverter"]


async def timed(run: Callable[[], Awaitable[object]], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        await run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def poll_once(device: Device) -> None:
    driver = create_driver(device)
    await driver.connect()
    try:
        readings = await driver.read([p for p in device.points if p.direction.readable])
        if device.protocol != "iec104":  # 104 values arrive after connect, asynchronously
            assert all(r.quality.good for r in readings), [r.detail for r in readings]
    finally:
        await driver.close()


async def sunspec(port: int, device: Device, rounds: int) -> dict[str, float]:
    target = discover_modbus.ModbusTarget("127.0.0.1", port, units=(1, 2))

    async def discover() -> None:
        scanner = RegisterScanner("127.0.0.1", port, 1.0)
        await scanner.connect()
        try:
            await discover_modbus.discover(scanner, target, origin="bench")
        finally:
            await scanner.close()

    async def naive() -> None:  # the same registers, one per request
        scanner = RegisterScanner("127.0.0.1", port, 1.0)
        await scanner.connect()
        try:
            for unit, end in ((1, 40176), (2, 40150)):
                for address in range(40000, end):
                    await scanner.read_words(unit, Table.HOLDING, address, 1)
        finally:
            await scanner.close()

    seconds = await timed(discover, rounds)
    naive_s = await timed(naive, rounds)
    floor = await timed(lambda: poll_once(device), rounds)
    return {
        "discover_s": round(seconds, 4),
        "poll_floor_s": round(floor, 4),
        "ratio_to_floor": round(seconds / floor, 1),
        "naive_one_register_per_request_s": round(naive_s, 4),
        "naive_over_discover": round(naive_s / seconds, 1),
    }


async def range_report(port: int, device: Device, rounds: int) -> dict[str, float]:
    """The report for a device without SunSpec (the demo's bess1 inverter, its map at
    40072), probing every PROBE_STEP registers after each usual start, against one probe
    per start (which misses that map)."""
    target = discover_modbus.ModbusTarget("127.0.0.1", port)
    spans: list[object] = []

    async def report() -> None:
        scanner = RegisterScanner("127.0.0.1", port, 1.0)
        await scanner.connect()
        try:
            found = await discover_modbus.probe_ranges(scanner, target)
            spans[:] = found.ranges[(1, Table.HOLDING)]
        finally:
            await scanner.close()

    seconds = await timed(report, rounds)
    found = list(spans)
    step = discover_modbus.PROBE_STEP
    discover_modbus.PROBE_STEP = discover_modbus.CHUNK  # one probe per start
    try:
        one_probe_s = await timed(report, rounds)
    finally:
        discover_modbus.PROBE_STEP = step
    floor = await timed(lambda: poll_once(device), rounds)
    return {
        "report_s": round(seconds, 4),
        "holding_found": str(found),
        "one_probe_per_start_s": round(one_probe_s, 4),
        "one_probe_per_start_found": str(spans),
        "poll_floor_s": round(floor, 4),
        "ratio_to_floor": round(seconds / floor, 1),
    }


async def main(rounds: int) -> dict[str, object]:
    load_before = os.getloadavg()
    sunspec_port = free_port()
    ports = {d: free_port() for d in DEMO_DEVICES}
    sims = [
        start_sim(SUNSPEC, {"hybrid1": sunspec_port}, devices=["hybrid1"]),
        start_sim(DEMO, ports, devices=DEMO_DEVICES),
    ]
    try:
        (hybrid,) = load_config(SUNSPEC, port_overrides={"hybrid1": sunspec_port}).devices
        demo = {d.id: d for d in load_config(DEMO, port_overrides=ports).devices}
        out: dict[str, object] = {"rounds": rounds}
        out["modbus_sunspec"] = await sunspec(sunspec_port, hybrid, rounds)
        out["modbus_range_report"] = await range_report(
            ports["bess1-inverter"], demo["bess1-inverter"], rounds
        )

        async def browse() -> None:
            found = await browse_ied("127.0.0.1", ports["bess2-ied"], 2.0, within=30.0)
            iec61850.from_browse("BESS2LD0", found)

        async def interrogate() -> None:
            seen, _ = await asyncio.to_thread(scan, "127.0.0.1", ports["chp1-rtu"], [1], 2.0, 0.0)
            assert len({s.ioa for s in seen}) == 8, seen

        meter_options = DlmsOptions.model_validate(
            {"client_address": 1, "authentication": "high", "keys_file": "pcc-meter.keys"},
            context={"base_dir": str(ROOT / "mappings" / "demo" / "secrets")},
        )

        async def object_list() -> None:
            found = await asyncio.to_thread(
                describe_meter, "127.0.0.1", ports["pcc-billing-meter"], meter_options, 2.0
            )
            assert any(isinstance(f, dlms.Found) and f.class_id == 7 for f in found)

        for name, run, device in (
            ("iec61850", browse, demo["bess2-ied"]),
            ("iec104", interrogate, demo["chp1-rtu"]),
            ("dlms", object_list, demo["pcc-billing-meter"]),
        ):
            seconds = await timed(run, rounds)
            floor = await timed(lambda device=device: poll_once(device), rounds)
            out[name] = {
                "discover_s": round(seconds, 4),
                "poll_floor_s": round(floor, 4),
                "ratio_to_floor": round(seconds / floor, 1),
            }
    finally:
        for sim in sims:
            sim.stop()
    out["loadavg_before"] = [round(x, 2) for x in load_before]
    out["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps({"bench": "discover", **asyncio.run(main(args.rounds))}))
