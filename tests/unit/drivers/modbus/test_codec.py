"""Register codec: known vectors, round trips for every type and order, range errors."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.modbus import codec
from drivers.modbus.protocol import ModbusAddress, ModbusPointFields, Order, parse
from gateway.errors import RawRangeError
from gateway.protocols.base import PointTyping

ORDERS = [(w, b) for w in Order for b in Order]


def addr(
    data_type: str,
    word: str = "big",
    byte: str = "big",
    bit: int | None = None,
    text: str = "1/holding/100",
) -> ModbusAddress:
    own = ModbusPointFields(word_order=Order(word), byte_order=Order(byte), bit=bit)
    return parse(text, PointTyping(type=data_type, own=own))


@pytest.mark.parametrize(
    ("word", "byte", "words"),
    [
        ("big", "big", [0x3F80, 0x0000]),
        ("little", "big", [0x0000, 0x3F80]),
        ("big", "little", [0x803F, 0x0000]),
        ("little", "little", [0x0000, 0x803F]),
    ],
)
def test_float32_layouts(word: str, byte: str, words: list[int]) -> None:
    a = addr("float32", word, byte)
    assert codec.encode(a, 1.0) == words
    assert codec.decode(a, words) == 1.0


@pytest.mark.parametrize(
    ("data_type", "word", "byte", "value", "words"),
    [
        ("int16", "big", "big", -2, [0xFFFE]),
        ("int16", "big", "little", -2, [0xFEFF]),
        ("uint16", "big", "big", 0x1234, [0x1234]),
        ("uint16", "big", "little", 0x1234, [0x3412]),
        ("int32", "big", "big", 0x01020304, [0x0102, 0x0304]),
        ("int32", "little", "big", 0x01020304, [0x0304, 0x0102]),
        ("int32", "big", "little", 0x01020304, [0x0201, 0x0403]),
        ("int32", "little", "little", 0x01020304, [0x0403, 0x0201]),
        ("int32", "big", "big", -1, [0xFFFF, 0xFFFF]),
        ("uint32", "big", "big", 0xDEADBEEF, [0xDEAD, 0xBEEF]),
        ("uint32", "little", "big", 0xDEADBEEF, [0xBEEF, 0xDEAD]),
        ("float64", "big", "big", 1.0, [0x3FF0, 0, 0, 0]),
        ("float64", "little", "big", 1.0, [0, 0, 0, 0x3FF0]),
        ("float64", "little", "little", 1.0, [0, 0, 0, 0xF03F]),
    ],
)
def test_known_vectors(
    data_type: str, word: str, byte: str, value: float, words: list[int]
) -> None:
    a = addr(data_type, word, byte)
    assert codec.encode(a, value) == words
    assert codec.decode(a, words) == value


INT_TYPES = {
    "int16": st.integers(-(2**15), 2**15 - 1),
    "uint16": st.integers(0, 2**16 - 1),
    "int32": st.integers(-(2**31), 2**31 - 1),
    "uint32": st.integers(0, 2**32 - 1),
}


@pytest.mark.parametrize(("word", "byte"), ORDERS)
@pytest.mark.parametrize("data_type", sorted(INT_TYPES))
@given(data=st.data())
def test_integer_round_trip(data: st.DataObject, data_type: str, word: str, byte: str) -> None:
    a = addr(data_type, word, byte)
    value = data.draw(INT_TYPES[data_type])
    words = codec.encode(a, value)
    assert len(words) == a.count
    assert all(0 <= w <= 0xFFFF for w in words)
    assert codec.decode(a, words) == value


@pytest.mark.parametrize(("word", "byte"), ORDERS)
@given(value=st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_float32_round_trip(value: float, word: str, byte: str) -> None:
    a = addr("float32", word, byte)
    assert codec.decode(a, codec.encode(a, value)) == value


@pytest.mark.parametrize(("word", "byte"), ORDERS)
@given(value=st.floats(allow_nan=False, allow_infinity=False))
def test_float64_round_trip(value: float, word: str, byte: str) -> None:
    a = addr("float64", word, byte)
    assert codec.decode(a, codec.encode(a, value)) == value


def test_word_order_swaps_whole_registers_only() -> None:
    big = codec.encode(addr("float64"), math.pi)
    little = codec.encode(addr("float64", "little"), math.pi)
    assert little == big[::-1]


def test_integer_types_round_to_nearest() -> None:
    assert codec.encode(addr("uint16"), 123.4) == [123]
    assert codec.encode(addr("uint16"), 123.6) == [124]
    assert codec.encode(addr("int16"), -0.4) == [0]


@pytest.mark.parametrize(
    ("data_type", "value", "message"),
    [
        ("uint16", 65536, "out of range for uint16 (0..65535)"),
        ("uint16", -1, "out of range for uint16"),
        ("int16", 32768, "out of range for int16 (-32768..32767)"),
        ("int16", -32769, "out of range for int16"),
        ("uint32", 2**32, "out of range for uint32"),
        ("int32", -(2**31) - 1, "out of range for int32"),
        ("float32", 1e39, "out of range for float32"),
        ("float64", math.inf, "cannot be sent as float64"),
        ("float32", math.nan, "cannot be sent as float32"),
    ],
)
def test_encode_range_errors(data_type: str, value: float, message: str) -> None:
    with pytest.raises(RawRangeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        codec.encode(addr(data_type), value)


def test_range_edges_are_accepted() -> None:
    assert codec.encode(addr("uint16"), 65535) == [0xFFFF]
    assert codec.encode(addr("int16"), -32768) == [0x8000]
    assert codec.encode(addr("uint16"), 65535.4) == [0xFFFF]  # rounds into range
    assert codec.decode(addr("float32"), codec.encode(addr("float32"), 3.4e38)) == pytest.approx(
        3.4e38
    )


@pytest.mark.parametrize("byte", ["big", "little"])
def test_bit_fields(byte: str) -> None:
    b3 = addr("bool", byte=byte, bit=3)
    b9 = addr("bool", byte=byte, bit=9)
    word = codec.encode(b3, True)
    word = codec.encode(b9, True, current=word[0])
    assert codec.decode(b3, word) is True
    assert codec.decode(b9, word) is True
    assert codec.decode(addr("bool", byte=byte, bit=4), word) is False
    logical = 1 << 3 | 1 << 9
    expected = logical if byte == "big" else int.from_bytes(logical.to_bytes(2, "little"))
    assert word == [expected]
    cleared = codec.encode(b3, False, current=word[0])
    assert codec.decode(b3, cleared) is False
    assert codec.decode(b9, cleared) is True


def test_bit_field_on_uint16_point() -> None:
    a = addr("uint16", bit=15)
    assert codec.decode(a, [0x8000]) is True
    assert codec.encode(a, 1) == [0x8000]


@pytest.mark.parametrize("value", [True, False, 0, 1, 1.0, 0.0])
def test_encode_bit_accepts(value: float) -> None:
    assert codec.encode_bit(value) is bool(value)


@pytest.mark.parametrize("value", [2, -1, 0.5])
def test_encode_bit_refuses(value: float) -> None:
    with pytest.raises(RawRangeError, match="not a bit"):
        codec.encode_bit(value)
    with pytest.raises(RawRangeError, match="not a bit"):
        codec.encode(addr("bool", bit=0), value)


def test_decode_needs_exact_register_count() -> None:
    with pytest.raises(ValueError, match="needs 2 register"):
        codec.decode(addr("float32"), [0])
    with pytest.raises(ValueError, match="not 16 bits"):
        codec.decode(addr("uint16"), [0x10000])


def test_bit_tables_are_not_registers() -> None:
    coil = addr("bool", text="1/coil/0")
    with pytest.raises(ValueError, match="carry bits"):
        codec.decode(coil, [1])
    with pytest.raises(ValueError, match="carry bits"):
        codec.encode(coil, True)


def test_saturate_clips_to_type_range() -> None:
    assert codec.saturate(addr("uint16"), 70000.2) == 65535
    assert codec.saturate(addr("uint16"), -5.0) == 0
    assert codec.saturate(addr("int16"), -1e9) == -32768
    assert codec.saturate(addr("int32"), 12.6) == 13
    assert codec.saturate(addr("float32"), 1e40) == pytest.approx(3.4028234663852886e38)
    assert codec.saturate(addr("float64"), 1e300) == 1e300
    assert codec.saturate(addr("bool", text="1/coil/0"), 1.0) is True
    assert codec.saturate(addr("bool", bit=2), 0.0) is False


def test_exception_text_names_the_code() -> None:
    assert codec.exception_text(2) == "modbus exception 2 (illegal data address)"
    assert codec.exception_text(4) == "modbus exception 4 (server device failure)"
    assert codec.exception_text(99) == "modbus exception 99 (unknown code)"
