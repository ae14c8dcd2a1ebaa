"""Register read answers decoded at once: the same registers as pymodbus's own classes, the
same refusals, and the client's decoder uses them for function codes 3 and 4."""

from __future__ import annotations

import random
import struct
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersResponse,
    ReadInputRegistersResponse,
)

from drivers.modbus.answers import HoldingRegisters, InputRegisters, decode_registers_at_once
from drivers.modbus.transport import client_for
from gateway.mapping import Device

PAIRS = [
    (HoldingRegisters, ReadHoldingRegistersResponse),
    (InputRegisters, ReadInputRegistersResponse),
]


def answer(words: list[int]) -> bytes:
    """A read answer's data after the function code: byte count, then the words."""
    return struct.pack(f">B{len(words)}H", 2 * len(words), *words)


@pytest.mark.parametrize(("fast", "library"), PAIRS)
def test_the_registers_are_pymodbus_own(fast: Any, library: Any) -> None:
    rng = random.Random(7)
    for count in [0, 1, 2, 61, 62, 124, 125]:
        data = answer([rng.randrange(65536) for _ in range(count)]) + b"\x00"  # trailing
        ours, theirs = fast(), library()
        ours.decode(data)
        theirs.decode(data)
        assert ours.registers == theirs.registers
        assert type(ours.registers) is list and len(ours.registers) == count
        assert ours.function_code == theirs.function_code


@pytest.mark.parametrize(("fast", "library"), PAIRS)
def test_a_byte_count_past_the_frame_is_kept_not_raised(fast: Any, library: Any) -> None:
    """pymodbus's class raises (inside the transport's data_received: a traceback and a
    dropped connection); ours keeps the whole registers the frame holds and the count as
    sent, for the driver to refuse the answer (test_malformed_answers.py)."""
    past_the_frame = bytes([10]) + bytes(8)
    with pytest.raises(ModbusIOException, match="byte_count 10 > length of packet 9"):
        library().decode(past_the_frame)
    ours = fast()
    ours.decode(past_the_frame)
    assert (ours.byte_count, ours.registers) == (10, [0, 0, 0, 0])
    empty = fast()
    empty.decode(b"")
    assert (empty.byte_count, empty.registers) == (-1, [])


@pytest.mark.parametrize(("fast", "library"), PAIRS)
def test_an_odd_byte_count_gives_the_whole_registers_and_the_count(fast: Any, library: Any) -> None:
    # the whole registers, the last byte left, as pymodbus does; the count as sent (the
    # driver refuses it)
    for odd in (bytes([3, 1, 2, 3]), bytes([3, 1, 2, 3, 4])):
        ours, theirs = fast(), library()
        ours.decode(odd)
        theirs.decode(odd)
        assert ours.registers == theirs.registers == [258]
        assert ours.byte_count == 3


def test_the_description_counts_the_registers_without_listing_them() -> None:
    pdu = HoldingRegisters()
    pdu.decode(answer([4660, 22136, 39612]))
    assert str(pdu) == "HoldingRegisters(dev_id=0, transaction_id=0, 3 registers)"
    assert "4660" not in str(pdu)


async def test_the_client_decoder_answers_with_them() -> None:
    client = decode_registers_at_once(AsyncModbusTcpClient("127.0.0.1", port=1502))
    decoder = client.ctx.framer.decoder
    words = [1, 2, 65535]
    for code, cls in [(3, HoldingRegisters), (4, InputRegisters)]:
        pdu = decoder.decode(bytes([code]) + answer(words))
        assert type(pdu) is cls and pdu.registers == words
    # a byte count past the frame is kept for the driver to refuse, not dropped
    past = decoder.decode(bytes([3, 4, 0, 1]))
    assert type(past) is HoldingRegisters and (past.byte_count, past.registers) == (4, [1])
    # other answers keep the library's classes; an exception answer stays one
    assert type(decoder.decode(bytes([1, 1, 5]))).__name__ == "ReadCoilsResponse"
    refused = decoder.decode(bytes([0x83, 2]))
    assert refused is not None and refused.isError()


@pytest.mark.parametrize(
    "connection", [{"host": "127.0.0.1", "port": 1502}, {"serial": {"port": "/dev/ttyS7"}}]
)
async def test_every_device_client_decodes_with_them(connection: dict[str, Any]) -> None:
    device = Device.model_validate({"id": "d1", "protocol": "modbus", "connection": connection})
    decoder = client_for(device).ctx.framer.decoder
    assert type(decoder.decode(bytes([3]) + answer([7]))) is HoldingRegisters
    assert type(decoder.decode(bytes([4]) + answer([7]))) is InputRegisters
