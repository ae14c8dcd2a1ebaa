"""The driver's decoding of an answered request (no I/O): values scaled, and a value that
is not finite (as sent, or once scaled) an invalid reading that says why."""

from __future__ import annotations

import struct
from pathlib import Path

from drivers.modbus.driver import ModbusDriver
from gateway.loader import load_mappings
from gateway.model import QualityFlag, Reading


def _words(fmt: str, *values: float) -> list[int]:
    data = struct.pack(fmt, *values)
    return list(struct.unpack(f">{len(data) // 2}H", data))


MAPPING = """
devices:
  - id: d
    protocol: modbus
    connection: {host: 127.0.0.1, port: 1502}
    points:
      - {id: plain, address: 1/input/0, type: float32, unit: KiloW}
      - {id: scaled, address: 1/input/2, type: int16, scale: 0.1, offset: 1, unit: KiloW}
      - {id: nan, address: 1/input/3, type: float32, unit: KiloW}
      - {id: inf, address: 1/input/5, type: float32, unit: KiloW}
      - {id: huge, address: 1/input/7, type: float32, scale: 1.0e+300, unit: KiloW}
"""


def test_values_scaled_and_non_finite_ones_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(MAPPING)
    (device,) = load_mappings([path])[path].devices
    driver = ModbusDriver(device)
    (request,) = driver.plan(device.points)
    answer = [
        *_words(">f", 2.5),
        *_words(">h", -20),
        *_words(">f", float("nan")),
        *_words(">f", float("inf")),
        *_words(">f", 1e30),
    ]
    readings: dict[str, Reading] = {}
    driver._decode_answer(request, answer, {p.id: p for p in device.points}, readings)
    assert readings["plain"].value == 2.5 and readings["plain"].quality.good
    assert readings["scaled"].value == -20 * 0.1 + 1
    assert readings["nan"].quality.flags == {QualityFlag.INCONSISTENT}
    assert readings["inf"].quality.flags == {QualityFlag.OVERFLOW}
    assert readings["huge"].quality.flags == {QualityFlag.OVERFLOW}
    assert "overflows" in readings["huge"].detail
    assert readings["plain"].gateway_time is readings["scaled"].gateway_time
