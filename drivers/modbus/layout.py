"""Block decoding: the registers of one read request decoded at once. Pure, no I/O.

A request's layout is compiled once per read plan: the register words are packed into
bytes with one `struct` call (in the order that puts every point's words most significant
first, so little word order costs nothing more), and every plain point of the block
(big-endian bytes, no bit field) is unpacked from them by a second `struct` call whose
format skips the gaps between points. Bit fields and little-endian bytes, rare in the
field, go through `codec.decode` one by one.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from drivers.modbus.plan import ReadRequest
from drivers.modbus.protocol import DataType, ModbusAddress, Order

#: struct code of each plain register type (the byte order is given once for the block)
_CODES: dict[DataType, str] = {
    DataType.INT16: "h",
    DataType.UINT16: "H",
    DataType.INT32: "i",
    DataType.UINT32: "I",
    DataType.FLOAT32: "f",
    DataType.FLOAT64: "d",
}


@dataclass(frozen=True)
class Layout:
    """How to decode the answer of one register read request."""

    #: register words -> bytes, in `order`
    words: struct.Struct
    #: the position of the answer's words in the packed bytes (None: as received)
    order: tuple[int, ...] | None
    #: the plain points' raw values from the packed bytes, in `plain` order
    values: struct.Struct
    #: (point id, address) of the points decoded by `values`
    plain: tuple[tuple[str, ModbusAddress], ...]
    #: (point id, address) of the points to decode one by one
    single: tuple[tuple[str, ModbusAddress], ...]

    def unpack(self, answer: list[int]) -> tuple[int | float, ...]:
        """Raw values of the plain points; struct.error if a word is not 16 bits."""
        if self.order is not None:
            answer = [answer[i] for i in self.order]
        return self.values.unpack_from(self.words.pack(*answer))


def _plain(address: ModbusAddress) -> bool:
    return address.bit is None and address.byte_order is Order.BIG


def compile_layout(request: ReadRequest) -> Layout:
    """The layout of a register read request (not for coils and discrete inputs)."""
    if request.table.is_bit:
        raise ValueError(f"{request.table.value}: bits have no register layout")
    candidates = sorted(
        (p for p in request.points if _plain(p[1]) and p[1].data_type in _CODES),
        key=lambda p: p[1].address,
    )
    plain: list[tuple[str, ModbusAddress]] = []
    order = list(range(request.count))
    fmt = [">"]
    at = 0  # next register of the block the format has not covered
    for member in candidates:
        address = member[1]
        offset = request.offset(address)
        if offset < at:  # overlaps the point before (the loader refuses that): apart
            continue
        plain.append(member)
        if offset > at:
            fmt.append(f"{2 * (offset - at)}x")
        fmt.append(_CODES[address.data_type])
        if address.word_order is Order.LITTLE:
            words = slice(offset, offset + address.count)
            order[words] = reversed(order[words])
        at = offset + address.count
    decoded = {point_id for point_id, _ in plain}
    single = tuple(p for p in request.points if p[0] not in decoded)
    return Layout(
        words=struct.Struct(f">{request.count}H"),
        order=None if order == sorted(order) else tuple(order),
        values=struct.Struct("".join(fmt)),
        plain=tuple(plain),
        single=single,
    )
