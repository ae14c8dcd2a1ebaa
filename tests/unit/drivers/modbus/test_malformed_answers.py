"""Answers that frame but say something other than what was asked: another function's
answer, a byte count that is not two per register asked for, a byte count past the frame.
Each makes the points of its request invalid (`inconsistent`, naming what was wrong),
the link stays up, and nothing is logged at error level (a device that answers badly is
the points' state, not the gateway's failure). Found by an outside review against hostile
servers: the first two were taken as good values, the third dropped the connection with a
traceback naming no device."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from drivers.modbus.driver import ModbusDriver
from gateway.loader import load_mappings
from gateway.model import QualityFlag

#: what the device's answer carries after the MBAP header's unit id, given the request's
#: function code and register count
Pdu = Callable[[int, int], bytes]


def _frame(tid: bytes, unit: int, pdu: bytes) -> bytes:
    return tid + b"\x00\x00" + struct.pack(">HB", len(pdu) + 1, unit) + pdu


@pytest.fixture
def serve(tmp_path: Path) -> Callable[[Pdu], AsyncIterator[ModbusDriver]]:
    """A device answering every read with `pdu(function, count)`, and a connected driver
    reading one float32 at holding 0 from it."""

    async def start(pdu: Pdu) -> AsyncIterator[ModbusDriver]:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while request := await reader.readexactly(12):
                    function, _, count = struct.unpack(">BHH", request[7:12])
                    writer.write(_frame(request[:2], request[6], pdu(function, count)))
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        path = tmp_path / f"dev{port}.yaml"
        path.write_text(
            f"devices:\n  - {{id: odd, protocol: modbus, timeout: 1.0,\n"
            f"     connection: {{host: 127.0.0.1, port: {port}}},\n"
            "     points: [{id: p, address: 1/holding/0, type: float32, unit: KiloW}]}\n"
        )
        (mapping,) = load_mappings([path]).values()
        (device,) = mapping.devices
        driver = ModbusDriver(device)
        await driver.connect()
        try:
            yield driver
        finally:
            await driver.close()
            server.close()
            await server.wait_closed()

    return start  # type: ignore[return-value]


def _registers(function: int, words: list[int], byte_count: int | None = None) -> bytes:
    count = 2 * len(words) if byte_count is None else byte_count
    return struct.pack(f">BB{len(words)}H", function, count, *words)


FLOAT_12_5 = list(struct.unpack(">2H", struct.pack(">f", 12.5)))


async def test_a_well_formed_answer_reads_good(
    serve: Callable[..., AsyncIterator[ModbusDriver]],
) -> None:
    async for driver in serve(lambda function, count: _registers(function, FLOAT_12_5)):
        (reading,) = await driver.read(list(driver.device.points))
        assert reading.quality.good and reading.value == 12.5


@pytest.mark.parametrize(
    ("case", "pdu", "says"),
    [
        # input registers (4) answered to a holding-register read (3)
        ("another function", lambda f, n: _registers(4, FLOAT_12_5), "for function 4"),
        # an exception of function 4 to a read of function 3
        ("another function's exception", lambda f, n: bytes([0x84, 2]), "for function 4"),
        # 5 bytes for 2 registers: the two registers are there, and a byte more
        (
            "odd byte count",
            lambda f, n: _registers(f, FLOAT_12_5, 5) + b"\x00",
            "byte count 5 is not 4",
        ),
        # the byte count says 6, the frame holds 4 (its MBAP length is right for the 4)
        ("count past the frame", lambda f, n: _registers(f, FLOAT_12_5, 6), "byte count 6"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
async def test_a_malformed_answer_makes_its_points_inconsistent(
    serve: Callable[..., AsyncIterator[ModbusDriver]],
    caplog: pytest.LogCaptureFixture,
    case: str,
    pdu: Pdu,
    says: str,
) -> None:
    caplog.set_level(logging.WARNING)
    async for driver in serve(pdu):
        for _ in range(2):  # and again: the link stays up, the next poll is answered
            (reading,) = await driver.read(list(driver.device.points))
            assert not reading.quality.good, case
            assert reading.quality.flags == {QualityFlag.INCONSISTENT}, reading.quality
            assert says in (reading.detail or ""), reading.detail
            assert driver.connected
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
