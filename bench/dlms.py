"""DLMS read speed: the driver against a raw gurux round trip, on the simulated meters.

Starts `mgms sim` for the demo's two DLMS meters (LLS, plain APDUs; HLS-GMAC, ciphered)
and measures, per meter:
- raw: one blocking gurux GET per register on the caller's thread (no driver), the floor;
- driver, one point per read(): what a naive poll of one register at a time costs;
- driver, all points in one read(): GET-with-list batches (10 attributes per request).
Prints one JSON line; `batch_vs_raw` is registers/s of a batched driver read over
registers/s of raw single GETs.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path

from drivers.dlms.driver import DlmsDriver
from drivers.dlms.protocol import DlmsAddress, DlmsOptions
from drivers.dlms.session import Got, Session
from fwsim.process import free_port, start_sim
from gateway.loader import load_config
from gateway.mapping import Device

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "config" / "demo.yaml"

METERS = {"lls_plain": "load1-customer-meter", "hls_ciphered": "pcc-billing-meter"}
ROUNDS = 200


def _registers(device: Device) -> list[DlmsAddress]:
    out = []
    for point in device.points:
        address = device.address_of(point.id)
        assert isinstance(address, DlmsAddress)
        if not address.is_method:
            out.append(address)
    return out


def raw_session(device: Device) -> Session:
    """An open association with the meter: gurux's client and the framing, no driver."""
    options = device.typed_options
    assert isinstance(options, DlmsOptions)
    host, port = device.connection.host, device.connection.port
    assert host is not None and port is not None
    session = Session(device.id, host, port, options, device.timeout)
    session.open()
    return session


def raw_round_trips(device: Device) -> list[float]:
    session = raw_session(device)
    address = _registers(device)[0]
    samples = []
    try:
        for _ in range(ROUNDS):
            t = time.perf_counter()
            outcome = session.read(address)
            samples.append(time.perf_counter() - t)
            assert isinstance(outcome, Got)
    finally:
        session.close()
    return samples


async def driver_reads(device: Device) -> tuple[list[float], list[float], int]:
    points = [p for p in device.points if p.direction.readable]
    driver = DlmsDriver(device)
    await driver.connect()
    single, batch = [], []
    try:
        for _ in range(ROUNDS):
            t = time.perf_counter()
            readings = await driver.read(points[:1])
            single.append(time.perf_counter() - t)
            assert readings[0].quality.good, readings[0].detail
        for _ in range(ROUNDS):
            t = time.perf_counter()
            readings = await driver.read(points)
            batch.append(time.perf_counter() - t)
            assert all(r.quality.good for r in readings)
    finally:
        await driver.close()
    return single, batch, len(points)


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 3),
    }


def main() -> None:
    ports = {dev: free_port() for dev in METERS.values()}
    sim = start_sim(DEMO_CONFIG, ports, devices=list(METERS.values()))
    try:
        config = load_config(DEMO_CONFIG, port_overrides=ports)
        devices = {d.id: d for d in config.devices}
        figures: dict[str, object] = {"bench": "dlms", "rounds": ROUNDS}
        for label, device_id in METERS.items():
            device = devices[device_id]
            raw = raw_round_trips(device)
            single, batch, count = asyncio.run(driver_reads(device))
            raw_per_s = 1 / statistics.median(raw)
            batch_per_s = count / statistics.median(batch)
            figures[label] = {
                "raw_get": _ms(raw),
                "driver_single": _ms(single),
                "driver_batch": {**_ms(batch), "registers": count},
                "raw_registers_per_s": round(raw_per_s),
                "driver_single_registers_per_s": round(1 / statistics.median(single)),
                "driver_batch_registers_per_s": round(batch_per_s),
                "batch_vs_raw": round(batch_per_s / raw_per_s, 2),
                "single_overhead_ms": round(
                    (statistics.median(single) - statistics.median(raw)) * 1000, 3
                ),
            }
        print(json.dumps(figures))
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
