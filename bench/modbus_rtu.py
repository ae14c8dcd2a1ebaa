"""Modbus RTU on one serial line: the coalesced read plan against one request per point.

Puts the demo's battery inverter, PV inverter and meter on one RTU line as units 1, 2 and
3 (a socat pty pair; the simulator on one end), then reads every point `--rounds` times
with (a) the coalesced plan and (b) one request per point, interleaved in blocks so both
see the same machine load. A pty has no baud-rate timing, so besides the measured rate the
line's own cost is computed from the frames each plan sends: characters on the wire and
the time they take at the mapped speed (19200 8E1 on a real line), inter-frame gaps
included. Prints one JSON line with both, and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from drivers.modbus.driver import ModbusDriver
from drivers.modbus.plan import ReadRequest
from drivers.modbus.protocol import ModbusOptions
from drivers.modbus.pty_pair import PtyPair
from drivers.modbus.transport import frame_gap
from fwsim.process import start_sim
from gateway.connection import SerialLine
from gateway.loader import load_config

ROOT = Path(__file__).resolve().parent.parent

CONFIG = ROOT / "config" / "demo.yaml"
UNITS = {1: "bess1-inverter", 2: "pv1-inverter", 3: "pcc-meter"}
#: the format of a real line these figures stand for (a pty takes no parity)
WIRE = SerialLine(port="-", baudrate=19200, parity="E")
BLOCK = 10
_READ_REQUEST = 8  # unit, function, start, count, CRC


def _answer_chars(request: ReadRequest) -> int:
    data = math.ceil(request.count / 8) if request.table.is_bit else 2 * request.count
    return 5 + data


def wire_seconds(plan: list[ReadRequest], line: SerialLine) -> tuple[int, float]:
    """Characters a poll of `plan` puts on the line and the time they take there."""
    chars = sum(_READ_REQUEST + _answer_chars(r) for r in plan)
    return chars, chars * line.char_bits / line.baudrate + 2 * len(plan) * frame_gap(line)


def write_config(folder: Path, port: Path) -> Path:
    mapping = yaml.safe_load((ROOT / "mappings" / "demo" / "modbus.yaml").read_text())
    by_id = {d["id"]: d for d in mapping["devices"]}
    points: list[dict[str, Any]] = []
    for unit, device_id in UNITS.items():
        for point in by_id[device_id]["points"]:
            _, table, address = point["address"].split("/")
            points.append({**point, "address": f"{unit}/{table}/{address}"})
    device = {
        "id": "rtu-line",
        "protocol": "modbus",
        "connection": {"serial": {"port": str(port), "baudrate": 19200, "stopbits": 2}},
        "timeout": 0.5,
        "points": points,
    }
    (folder / "rtu.yaml").write_text(yaml.safe_dump({"devices": [device]}))
    config = yaml.safe_load(CONFIG.read_text())
    config.update(mappings=["rtu.yaml"], state_dir=str(folder / "state"))
    config["coupling_point"].pop("billing_meter", None)  # the DLMS meter is not mapped here
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def measure(config_path: Path, rounds: int) -> dict[str, object]:
    (device,) = load_config(config_path).devices
    options = device.typed_options
    assert isinstance(options, ModbusOptions)
    drivers = {
        "coalesced": ModbusDriver(device, options=options),
        "naive": ModbusDriver(device, options=options.model_copy(update={"coalesce": False})),
    }
    points = len(device.points)
    elapsed = {name: 0.0 for name in drivers}
    good = {name: 0 for name in drivers}
    try:
        for driver in drivers.values():  # one at a time: the port opens exclusively
            await driver.connect()
            await driver.read(device.points)  # warm up
            await driver.close()
        done = 0
        while done < rounds:
            block = min(BLOCK, rounds - done)
            for name, driver in drivers.items():
                await driver.connect()
                started = time.perf_counter()
                for _ in range(block):
                    readings = await driver.read(device.points)
                    good[name] += sum(r.quality.good for r in readings)
                elapsed[name] += time.perf_counter() - started
                await driver.close()
            done += block
    finally:
        for driver in drivers.values():
            await driver.close()
    read = points * rounds
    figures: dict[str, dict[str, float]] = {}
    for name, driver in drivers.items():
        if good[name] != read:
            raise SystemExit(f"{name}: only {good[name]} of {read} readings were good")
        plan = driver.plan(device.points)
        chars, seconds = wire_seconds(plan, WIRE)
        figures[name] = {
            "pty_points_per_s": round(read / elapsed[name], 1),
            "pty_ms_per_poll": round(1000 * elapsed[name] / rounds, 2),
            "requests_per_poll": len(plan),
            "wire_chars_per_poll": chars,
            "wire_ms_per_poll_19200_8E1": round(1000 * seconds, 1),
        }
    co, naive = figures["coalesced"], figures["naive"]
    return {
        "bench": "modbus_rtu",
        "units": len(UNITS),
        "points": points,
        "rounds": rounds,
        **figures,
        "pty_speedup": round(co["pty_points_per_s"] / naive["pty_points_per_s"], 2),
        "wire_speedup": round(
            naive["wire_ms_per_poll_19200_8E1"] / co["wire_ms_per_poll_19200_8E1"], 2
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100, help="polls of every point per plan")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pair = PtyPair(folder).start()
        try:
            config = write_config(folder, pair.gateway)
            sim = start_sim(config, {}, serial_ports={"rtu-line": str(pair.device)})
            try:
                result = asyncio.run(measure(config, args.rounds))
            finally:
                sim.stop()
        finally:
            pair.stop()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
