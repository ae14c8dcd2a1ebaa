"""The driver's decoding of an answered request (no I/O): values scaled, and a value that
is not finite (as sent, or once scaled) an invalid reading that says why."""

from __future__ import annotations

import struct
from pathlib import Path

from drivers.modbus.driver import ModbusDriver
from gateway.loader import load_mappings
from gateway.model import Batch, Quality, QualityFlag, Reading, utcnow


def _words(fmt: str, *values: float) -> list[int]:
    data = struct.pack(fmt, *values)
    return list(struct.unpack(f">{len(data) // 2}H", data))


#: one device; its points follow
DEVICE = """
devices:
  - id: d
    protocol: modbus
    connection: {host: 127.0.0.1, port: 1502}
    points:
"""

MAPPING = (
    DEVICE
    + """      - {id: plain, address: 1/input/0, type: float32, unit: KiloW}
      - {id: scaled, address: 1/input/2, type: int16, scale: 0.1, offset: 1, unit: KiloW}
      - {id: nan, address: 1/input/3, type: float32, unit: KiloW}
      - {id: inf, address: 1/input/5, type: float32, unit: KiloW}
      - {id: huge, address: 1/input/7, type: float32, scale: 1.0e+300, unit: KiloW}
"""
)


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
    items: list[Reading | Batch] = []
    driver._decode_answer(request, answer, {p.id: p for p in device.points}, items)
    readings = {r.point: r for item in items for r in item.readings()}
    assert readings["plain"].value == 2.5 and readings["plain"].quality.good
    assert readings["scaled"].value == -20 * 0.1 + 1
    assert readings["nan"].quality.flags == {QualityFlag.INCONSISTENT}
    assert readings["inf"].quality.flags == {QualityFlag.OVERFLOW}
    assert readings["huge"].quality.flags == {QualityFlag.OVERFLOW}
    assert "overflows" in readings["huge"].detail
    assert readings["plain"].gateway_time is readings["scaled"].gateway_time


BLOCK = (
    DEVICE
    + """      - {id: a, address: 1/holding/0, type: float32, unit: KiloW}
      - {id: b, address: 1/holding/2, type: int16, unit: KiloW}
      - {id: c, address: 1/holding/4, type: float32, word_order: little, unit: KiloW}
      - {id: d, address: 1/holding/6, type: uint32, unit: KiloW}
"""
)


def _decoded(
    tmp_path: Path, mapping: str, answer: list[int]
) -> tuple[ModbusDriver, dict[str, Reading]]:
    path = tmp_path / "m.yaml"
    path.write_text(mapping)
    (device,) = load_mappings([path])[path].devices
    driver = ModbusDriver(device)
    (request,) = driver.plan(device.points)
    items: list[Reading | Batch] = []
    driver._decode_answer(request, answer, {p.id: p for p in device.points}, items)
    readings = {r.point: r for item in items for r in item.readings()}
    return driver, readings


def _one_by_one(driver: ModbusDriver, answer: list[int]) -> dict[str, Reading]:
    """Each point decoded on its own (the codec's per-point path), for comparison."""
    (request,) = driver.plan(driver.device.points)
    now = utcnow()
    return {
        p.id: driver._decode(p, driver.address(p), request, answer, now)
        for p in driver.device.points
    }


def test_a_block_of_finite_values_decodes_as_point_by_point(tmp_path: Path) -> None:
    # register 3 is a gap; the little word order float comes low word first
    answer = [*_words(">f", 2.5), *_words(">h", -7), 0, *_words(">f", 1.25)[::-1]]
    answer += _words(">I", 70000)
    driver, readings = _decoded(tmp_path, BLOCK, answer)
    want = _one_by_one(driver, answer)
    for point_id, reading in readings.items():
        other = want[point_id]
        assert (reading.value, type(reading.value), reading.unit, reading.quality) == (
            other.value,
            type(other.value),
            other.unit,
            other.quality,
        ), point_id
    assert [readings[k].value for k in "abcd"] == [2.5, -7, 1.25, 70000]
    assert type(readings["b"].value) is int  # unscaled integers stay integers


def test_one_value_that_is_not_finite_spoils_no_other_point(tmp_path: Path) -> None:
    answer = [*_words(">f", 2.5), *_words(">h", 3), 0, *_words(">f", float("nan"))[::-1]]
    answer += _words(">I", 1)
    _, readings = _decoded(tmp_path, BLOCK, answer)
    assert readings["c"].quality.flags == {QualityFlag.INCONSISTENT}
    assert readings["c"].value is None
    assert all(readings[k].quality.good for k in "abd")
    assert [readings[k].value for k in "abd"] == [2.5, 3, 1]


def test_finite_values_whose_sum_overflows_are_all_good(tmp_path: Path) -> None:
    """The block's finiteness check sums the values: a sum beyond float range must not
    turn finite values into invalid ones."""
    mapping = (
        DEVICE
        + """      - {id: x, address: 1/holding/0, type: float32, scale: 1.0e+308, unit: KiloW}
      - {id: y, address: 1/holding/2, type: float32, scale: 1.0e+308, unit: KiloW}
"""
    )
    _, readings = _decoded(tmp_path, mapping, [*_words(">f", 1.5), *_words(">f", 1.5)])
    assert readings["x"].quality.good and readings["y"].quality.good
    assert readings["x"].value == readings["y"].value == 1.5e308


def test_a_block_that_decodes_whole_is_one_batch_of_the_same_point_set(tmp_path: Path) -> None:
    """The hot path: a block of finite values becomes one batch (no reading per point),
    and every poll's batch carries the same point set, so the table and the store work
    out what they need of its points once."""
    path = tmp_path / "m.yaml"
    path.write_text(BLOCK)
    (device,) = load_mappings([path])[path].devices
    driver = ModbusDriver(device)
    (request,) = driver.plan(device.points)
    answer = [*_words(">f", 2.5), *_words(">h", -7), 0, *_words(">f", 1.25)[::-1]]
    answer += _words(">I", 70000)
    polls: list[list[Reading | Batch]] = [[], []]
    for items in polls:
        driver._decode_answer(request, answer, {p.id: p for p in device.points}, items)
    (first,), (second,) = polls
    assert isinstance(first, Batch) and isinstance(second, Batch)
    assert first.points is second.points and first.points.ids == ("a", "b", "c", "d")
    assert list(first.values) == [2.5, -7, 1.25, 70000] and first.quality == Quality()
