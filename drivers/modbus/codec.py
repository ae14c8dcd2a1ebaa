"""Register codec: raw protocol values <-> 16-bit register words. Pure, no I/O.

`byte_order` is the order of the two bytes inside each register (big: high byte first, as
the Modbus standard sends them); `word_order` is the order of the registers of a multi-
register value (big: most significant register first). A `bit` makes a single-register
point a bit field: the value is that bit of the register, as a bool.

Encoding checks the raw range of the data type and raises `RawRangeError` naming the
value, the type and the range; integer types round to the nearest integer first.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

from drivers.modbus.protocol import DataType, ModbusAddress, Order
from gateway.errors import RawRangeError

RawValue = int | float | bool

#: struct format of each register data type (big-endian, whole value)
_FORMATS: dict[DataType, str] = {
    DataType.INT16: ">h",
    DataType.UINT16: ">H",
    DataType.INT32: ">i",
    DataType.UINT32: ">I",
    DataType.FLOAT32: ">f",
    DataType.FLOAT64: ">d",
}

_INT_RANGES: dict[DataType, tuple[int, int]] = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
}

_FLOAT32_MAX = 3.4028234663852886e38

#: Modbus exception codes and their names in the protocol specification
EXCEPTION_NAMES: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    7: "negative acknowledge",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


def exception_text(code: int) -> str:
    """`modbus exception 2 (illegal data address)`, for readings and command results."""
    return f"modbus exception {code} ({EXCEPTION_NAMES.get(code, 'unknown code')})"


def _to_bytes(address: ModbusAddress, words: Sequence[int]) -> bytes:
    """Register words as transmitted -> the value's big-endian byte string."""
    if address.word_order is Order.LITTLE:
        words = list(reversed(words))
    out = bytearray()
    for word in words:
        if not 0 <= word <= 0xFFFF:
            raise ValueError(f"register word {word} is not 16 bits")
        pair = word.to_bytes(2, "big")
        out += pair if address.byte_order is Order.BIG else pair[::-1]
    return bytes(out)


def _to_words(address: ModbusAddress, data: bytes) -> list[int]:
    """The value's big-endian byte string -> register words to transmit."""
    words = []
    for i in range(0, len(data), 2):
        pair = data[i : i + 2]
        words.append(int.from_bytes(pair if address.byte_order is Order.BIG else pair[::-1]))
    if address.word_order is Order.LITTLE:
        words.reverse()
    return words


def decode(address: ModbusAddress, words: Sequence[int]) -> RawValue:
    """The raw value of a register point from exactly `address.count` register words."""
    if address.table.is_bit:
        raise ValueError(f"{address}: coils and discrete inputs carry bits, not registers")
    if len(words) != address.count:
        raise ValueError(f"{address}: needs {address.count} register(s), got {len(words)}")
    data = _to_bytes(address, words)
    if address.bit is not None:
        return bool(int.from_bytes(data) >> address.bit & 1)
    value: int | float = struct.unpack(_FORMATS[address.data_type], data)[0]
    return value


def encode(address: ModbusAddress, raw: RawValue, current: int = 0) -> list[int]:
    """Register words for a raw value. A bit field changes only its bit of `current`
    (the register as transmitted), so bit fields sharing a register compose."""
    if address.table.is_bit:
        raise ValueError(f"{address}: coils and discrete inputs carry bits, not registers")
    if address.bit is not None:
        word = int.from_bytes(_to_bytes(address, [current]))
        mask = 1 << address.bit
        word = word | mask if encode_bit(raw) else word & ~mask
        return _to_words(address, word.to_bytes(2))
    data_type = address.data_type
    if isinstance(raw, float) and not math.isfinite(raw):
        raise RawRangeError(f"value {raw} cannot be sent as {data_type.value}")
    if data_type in _INT_RANGES:
        low, high = _INT_RANGES[data_type]
        number = round(raw)
        if not low <= number <= high:
            raise RawRangeError(
                f"raw value {raw} out of range for {data_type.value} ({low}..{high})"
            )
        return _to_words(address, struct.pack(_FORMATS[data_type], number))
    if data_type is DataType.FLOAT32 and abs(raw) > _FLOAT32_MAX:
        raise RawRangeError(f"raw value {raw} out of range for float32 (|x| <= 3.4e38)")
    return _to_words(address, struct.pack(_FORMATS[data_type], float(raw)))


def encode_bit(raw: RawValue) -> bool:
    """A coil / discrete input / bit-field value: a bool, or the numbers 0 and 1."""
    if isinstance(raw, bool):
        return raw
    if raw in (0, 1):
        return bool(raw)
    raise RawRangeError(f"raw value {raw} is not a bit (0 or 1)")


def saturate(address: ModbusAddress, raw: float) -> RawValue:
    """Clip a raw value into the data type's range (how a simulated device shows a value
    its register cannot hold); bits pass through `encode_bit` unchanged."""
    if address.table.is_bit or address.bit is not None:
        return raw >= 0.5
    if address.data_type in _INT_RANGES:
        low, high = _INT_RANGES[address.data_type]
        return round(min(max(raw, low), high))
    if address.data_type is DataType.FLOAT32:
        return min(max(raw, -_FLOAT32_MAX), _FLOAT32_MAX)
    return raw
