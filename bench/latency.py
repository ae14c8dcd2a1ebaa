"""Control-path latency: a set point written through the gateway, calm and under load,
against the raw protocol write round trip in the same run. Modbus only.

A generated site (bench/scale.py's, N x M float32 points, polled every second) plus one
inverter with a writable set point (no DER role, so the flexibility service leaves it to
the bench); `mgms sim` serves the inverter in one process and the site in another. The
gateway runs in this process; each write is `Controller.write` (limit check, the device
session's lock, the Modbus write and its echo, the audit event) until the device confirmed.

- raw: pymodbus `write_register`s of the same register on a connection of their own, the
  floor no gateway can beat;
- calm: the gateway with the inverter alone;
- loaded: the gateway also polling the N x M points (and storing them).

Writes alternate between raw and gateway (which goes first alternates too) so both see
the same machine. Prints one JSON
line: p50/p99/max in ms of each, and loaded p99 over raw p99. The machine may be shared:
the load average is in the line. What this does not cover: the inbound activation over
HTTPS and its dispatch, and the other three protocols (the soak measures those end to end).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

from pymodbus.client import AsyncModbusTcpClient

from bench.scale import generate
from bench.soaklib.figures import percentiles
from fwsim.process import start_sim
from gateway.app import Gateway
from gateway.loader import load_config
from gateway.model import Command

INVERTER = """\
  - id: ctl
    protocol: modbus
    connection: {host: 127.0.0.1, port: 0}
    poll_interval: 1.0
    points:
      - {id: ctl.p, address: 1/holding/100, type: int16, scale: 0.1, unit: KiloW}
      - {id: ctl.p_set, address: 1/holding/200, type: int16, scale: 0.1, unit: KiloW,
         direction: read-write, limits: {min: -50, max: 50}}
"""


def _site(folder: Path, devices: int, points: int) -> tuple[Path, Path]:
    """The loaded config (site + inverter) and the calm one (the inverter alone)."""
    loaded = generate(folder, devices, points, "")
    site = folder / "site.yaml"
    site.write_text(site.read_text() + INVERTER)
    (folder / "ctl.yaml").write_text("devices:\n" + INVERTER)
    calm = folder / "calm-config.yaml"
    calm.write_text(loaded.read_text().replace("mappings: [site.yaml]", "mappings: [ctl.yaml]"))
    return loaded, calm


async def _measure(config: Path, ports: dict[str, int], writes: int) -> dict[str, list[float]]:
    cfg = load_config(config, port_overrides=ports)
    raw_client = AsyncModbusTcpClient("127.0.0.1", port=ports["ctl"], timeout=10, retries=0)
    await raw_client.connect()
    times: dict[str, list[float]] = {"raw": [], "gateway": []}
    try:
        async with Gateway(cfg) as gw:
            assert gw.controller is not None
            if not await gw.wait_connected(60):
                raise SystemExit("devices did not connect")
            await asyncio.sleep(3)  # polls running, store flushing
            for i in range(writes):
                value = float(i % 40 - 20)
                for which in ("raw", "gateway") if i % 2 else ("gateway", "raw"):
                    started = time.perf_counter()
                    if which == "raw":
                        answer = await raw_client.write_register(200, int(value * 10) & 0xFFFF)
                        if answer.isError():
                            raise SystemExit(f"raw write refused: {answer}")
                    else:
                        command = Command("ctl.p_set", value, origin="bench")
                        result = await gw.controller.write(command)
                        if not result.ok:
                            raise SystemExit(f"gateway write {result.status}: {result.detail}")
                    times[which].append(time.perf_counter() - started)
                await asyncio.sleep(0.05)
    finally:
        raw_client.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--points", type=int, default=500)
    parser.add_argument("--writes", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mgms-latency-") as tmp:
        folder = Path(tmp)
        loaded, calm = _site(folder, args.devices, args.points)
        log = (folder / "sim.log").open("w")
        # the inverter in a simulator of its own: the floor is the protocol's round trip,
        # not the wait behind a simulator busy serving 10,000 other points
        ctl = start_sim(loaded, {}, devices=["ctl"], ready_timeout=120, log=log)
        site_devices = [f"dev{d}" for d in range(args.devices)]
        site = start_sim(loaded, {}, devices=site_devices, ready_timeout=120, log=log)
        try:
            calm_times = asyncio.run(_measure(calm, ctl.ports, args.writes))
            loaded_times = asyncio.run(_measure(loaded, ctl.ports | site.ports, args.writes))
        finally:
            site.stop()
            ctl.stop()
            log.close()
    raw = calm_times["raw"] + loaded_times["raw"]
    figures = {
        "raw": percentiles(raw),
        "raw_loaded": percentiles(loaded_times["raw"]),
        "calm": percentiles(calm_times["gateway"]),
        "loaded": percentiles(loaded_times["gateway"]),
    }
    print(
        json.dumps(
            {
                "bench": "latency",
                "protocol": "modbus",
                "background_points": args.devices * args.points,
                **figures,
                "loaded_p99_over_raw_p99": round(
                    figures["loaded"]["p99"] / figures["raw"]["p99"], 2
                ),
                "loadavg": [round(x, 2) for x in os.getloadavg()],
            }
        )
    )


if __name__ == "__main__":
    main()
