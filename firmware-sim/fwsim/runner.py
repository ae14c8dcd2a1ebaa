"""Runs the simulated microgrid: physics plus a front end for every mapped device.

Started by `mgms sim --config FILE`; prints one JSON line `{"ready": true, "ports": {...}}`
on stdout once every front end listens, so a parent process can wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from datetime import datetime

from fwsim.clock import SimClock
from fwsim.frontend import FrontEnd, create_front_end
from fwsim.physics import Microgrid
from gateway.config import LoadedConfig

log = logging.getLogger(__name__)


def build_grid(
    config: LoadedConfig, speed: float = 1.0, start: datetime | None = None
) -> Microgrid:
    clock = SimClock(start=start, speed=speed)
    return Microgrid.build(config.gateway.ders, config.gateway.coupling_point, clock)


async def serve(
    config: LoadedConfig,
    *,
    speed: float = 1.0,
    start: datetime | None = None,
    tick_s: float = 0.1,
    devices: set[str] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until `stop` is set (or SIGTERM/SIGINT when run as a program)."""
    grid = build_grid(config, speed, start)
    fronts: list[FrontEnd] = []
    stop = stop or asyncio.Event()
    try:
        for device in config.devices:
            if devices is not None and device.id not in devices:
                continue
            conn = device.connection
            if conn.host is None or conn.port is None:
                continue  # serial devices are served by their own front end
            front = create_front_end(device, grid, conn.host, conn.port)
            await front.start()
            fronts.append(front)
        for front in fronts:
            await front.refresh()
        ports = {f.device.id: f.port for f in fronts}
        print(json.dumps({"ready": True, "ports": ports}), flush=True)
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
) -> int:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, speed=speed, start=start, devices=devices, stop=stop)

    asyncio.run(main())
    sys.stdout.flush()
    return 0
