"""Block layouts decode a whole request as `codec.decode` decodes each point."""

from __future__ import annotations

import random
import struct

import pytest

from drivers.modbus import codec
from drivers.modbus.layout import compile_layout
from drivers.modbus.plan import plan_reads
from drivers.modbus.protocol import DataType, ModbusAddress, ModbusOptions, Order, Table

PLAIN_TYPES = [t for t in DataType if t is not DataType.BOOL]


def _random_points(rng: random.Random, n: int) -> list[tuple[str, ModbusAddress]]:
    points, at = [], 100
    for i in range(n):
        at += rng.choice([0, 0, 0, 1, 3])  # gaps between points
        if rng.random() < 0.15:
            address = ModbusAddress(1, Table.HOLDING, at, DataType.BOOL, bit=rng.randrange(16))
        else:
            address = ModbusAddress(
                1,
                Table.HOLDING,
                at,
                rng.choice(PLAIN_TYPES),
                word_order=rng.choice([Order.BIG, Order.BIG, Order.LITTLE]),
                byte_order=rng.choice([Order.BIG, Order.BIG, Order.BIG, Order.LITTLE]),
            )
        points.append((f"p{i}", address))
        at = address.end
    return points


@pytest.mark.parametrize("seed", range(20))
def test_block_decode_equals_point_by_point(seed: int) -> None:
    rng = random.Random(seed)
    points = _random_points(rng, 120)
    requests = plan_reads(points, ModbusOptions(max_gap=8))
    assert len(requests) > 1
    for request in requests:
        answer = [rng.randrange(0x10000) for _ in range(request.count)]
        layout = compile_layout(request)
        assert {p for p, _ in layout.plain} | {p for p, _ in layout.single} == {
            p for p, _ in request.points
        }
        for (point_id, address), raw in zip(layout.plain, layout.unpack(answer), strict=True):
            at = request.offset(address)
            expected = codec.decode(address, answer[at : at + address.count])
            assert raw == expected or (raw != raw and expected != expected), point_id
        # bits and little-endian bytes are the ones left to decode one by one
        assert all(a.bit is not None or a.byte_order is Order.LITTLE for _, a in layout.single)


def test_gaps_and_little_word_order_in_one_block() -> None:
    f32 = ModbusAddress(1, Table.INPUT, 10, DataType.FLOAT32)
    f32_le = ModbusAddress(1, Table.INPUT, 14, DataType.FLOAT32, word_order=Order.LITTLE)
    i16 = ModbusAddress(1, Table.INPUT, 17, DataType.INT16)
    (request,) = plan_reads([("a", f32), ("b", f32_le), ("c", i16)], ModbusOptions())
    assert (request.address, request.count) == (10, 8)
    words_a = list(struct.unpack(">2H", struct.pack(">f", 1.5)))
    words_b = list(struct.unpack(">2H", struct.pack(">f", -2.25)))[::-1]
    answer = [*words_a, 0xDEAD, 0xBEEF, *words_b, 0x1234, 0xFFFE]
    assert compile_layout(request).unpack(answer) == (1.5, -2.25, -2)


def test_a_word_beyond_16_bits_is_refused() -> None:
    (request,) = plan_reads(
        [("a", ModbusAddress(1, Table.HOLDING, 0, DataType.UINT16))], ModbusOptions()
    )
    with pytest.raises(struct.error):
        compile_layout(request).unpack([0x10000])


def test_bit_tables_have_no_register_layout() -> None:
    (request,) = plan_reads(
        [("a", ModbusAddress(1, Table.COIL, 0, DataType.BOOL))], ModbusOptions()
    )
    with pytest.raises(ValueError, match="bits have no register layout"):
        compile_layout(request)
