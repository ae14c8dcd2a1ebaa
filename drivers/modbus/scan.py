"""Raw register reads for discovery: the driver's link, timeouts and error translation,
with reads by address instead of by mapped point. It only reads (functions 3 and 4):
discovery never writes to a device."""

from __future__ import annotations

from dataclasses import dataclass

from drivers.modbus.driver import ModbusDriver
from drivers.modbus.plan import ReadRequest
from gateway.errors import RequestTimeout
from gateway.mapping import Connection, Device
from gateway.protocols.modbus import Table


@dataclass(frozen=True)
class Refused:
    """The unit answered the read with a Modbus exception (or a malformed answer)."""

    code: int | None
    detail: str


#: what one raw read gives: the registers, a refusal, or None when the unit did not answer
Answer = list[int] | Refused | None


class RegisterScanner(ModbusDriver):
    """A driver for a device known only by its address: reads register ranges."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        device = Device(
            id="discovered",
            protocol="modbus",
            connection=Connection(host=host, port=port),
            timeout=timeout,
        )
        super().__init__(device)

    async def read_words(self, unit: int, table: Table, address: int, count: int) -> Answer:
        """`count` registers (at most 125) from `address`; None when the unit is silent.
        A lost link raises `LinkError`."""
        if table.is_bit or not 1 <= count <= 125:
            raise ValueError(f"read_words reads 1..125 registers, not {count} {table.value}")
        request = ReadRequest(unit, table, address, count, ())
        try:
            answer = await self._fetch(self._live_client(), request)
        except RequestTimeout:
            return None
        if not isinstance(answer, list):
            return Refused(answer.code, answer.detail)
        return [int(word) for word in answer]
