"""Runs the simulated microgrid: physics plus a front end for every mapped device.

Started by `mgms sim --config FILE`; prints one JSON line
`{"ready": true, "ports": {...}, "serial": {...}}` on stdout once every front end listens
(TCP devices by port, serial devices by the port path they serve), so a parent process can
wait for it.

A serial device's mapping names the gateway's end of the line. The simulator serves the
other end: `serial_ports` (`mgms sim --serial DEVICE=PATH`) names it, e.g. the second pty
of a `socat` pair; without it the simulator opens the mapped port itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Mapping
from datetime import datetime

from fwsim.clock import SimClock
from fwsim.frontend import FrontEnd, create_front_end
from fwsim.physics import Microgrid
from gateway.config import LoadedConfig
from gateway.mapping import Device

log = logging.getLogger(__name__)


def build_grid(
    config: LoadedConfig,
    speed: float = 1.0,
    start: datetime | None = None,
    failing: frozenset[str] = frozenset(),
) -> Microgrid:
    clock = SimClock(start=start, speed=speed)
    grid = Microgrid.build(config.gateway.ders, config.gateway.coupling_point, clock)
    grid.failing = failing
    return grid


def on_serial_port(device: Device, port: str) -> Device:
    """The device as the simulator serves it: on `port`, the other end of its line."""
    line = device.connection.serial
    assert line is not None
    connection = device.connection.model_copy(
        update={"serial": line.model_copy(update={"port": port})}
    )
    return device.model_copy(update={"connection": connection})


async def serve(
    config: LoadedConfig,
    *,
    speed: float = 1.0,
    start: datetime | None = None,
    tick_s: float = 0.1,
    devices: set[str] | None = None,
    serial_ports: Mapping[str, str] | None = None,
    stop: asyncio.Event | None = None,
    failing: frozenset[str] = frozenset(),
) -> None:
    """Serve until `stop` is set (or SIGTERM/SIGINT when run as a program); the points in
    `failing` are answered with a device failure."""
    grid = build_grid(config, speed, start, failing)
    fronts: list[FrontEnd] = []
    stop = stop or asyncio.Event()
    try:
        for device in config.devices:
            if devices is not None and device.id not in devices:
                continue
            conn = device.connection
            if conn.serial is not None:
                port = (serial_ports or {}).get(device.id, conn.serial.port)
                front = create_front_end(on_serial_port(device, port), grid, "", 0)
            elif conn.host is not None and conn.port is not None:
                front = create_front_end(device, grid, conn.host, conn.port)
            else:
                continue
            await front.start()
            fronts.append(front)
        for front in fronts:
            await front.refresh()
        ports = {f.device.id: f.port for f in fronts if f.device.connection.serial is None}
        serial = {
            f.device.id: f.device.connection.serial.port
            for f in fronts
            if f.device.connection.serial is not None
        }
        print(json.dumps({"ready": True, "ports": ports, "serial": serial}), flush=True)
        while not stop.is_set():
            grid.step()
            for front in fronts:
                await front.refresh()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=tick_s)
    finally:
        for front in reversed(fronts):
            await front.stop()


def run(
    config: LoadedConfig,
    *,
    speed: float = 1.0,
    devices: set[str] | None = None,
    start: datetime | None = None,
    serial_ports: Mapping[str, str] | None = None,
    failing: frozenset[str] = frozenset(),
) -> int:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(
            config,
            speed=speed,
            start=start,
            devices=devices,
            serial_ports=serial_ports,
            stop=stop,
            failing=failing,
        )

    asyncio.run(main())
    sys.stdout.flush()
    return 0
