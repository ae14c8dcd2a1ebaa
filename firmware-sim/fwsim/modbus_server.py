"""Modbus front end: serves one mapping-file device from the simulated microgrid, over
TCP (`ModbusTcpServer`) or as RTU on a serial line (`ModbusSerialServer`).

Built on pymodbus's simulator API (`SimDevice`/`SimData`), one `SimDevice` per unit id, so
one server stands for several units behind a TCP gateway or on one RTU line. Each unit has
the four Modbus tables as separate blocks; a table spans from the lowest to the highest
register (or bit) of its mapped points, as a SunSpec model block does, and unmapped
registers inside the span read as 0.

On a serial line the units behave as on a multi-drop bus: a frame for a unit id that is not
on the line gets no answer at all (over TCP, exception 04). When the line goes away (the
pty pair or the adapter is gone) the front end opens it again every `REOPEN_EVERY_S`, from
`refresh()`, until it is back.

Values travel through the driver's codec (`drivers.modbus.codec`), so the simulator and
the gateway decode the same mapping the same way. `refresh()` renders the model's values
into a register image; the `SimDevice` action copies the image into pymodbus's registers
on every request, and hands client writes to the model (`PointValues.write`) before pymodbus stores
them. The action sees every write with its values, so no polling of registers is needed.

Exception responses, as a field device gives them:
- 02 illegal data address: outside a table's span, a table the unit does not serve, or a
  write that touches a register of no writable point (read-only or unmapped);
- 03 illegal data value: a write whose registers do not decode;
- 04 server device failure: a request touching a point named in `mgms sim --fail` (tests
  use it to get an exception on purpose). Every other point is served: from the physics
  where its role is modelled, else with values of its own (`fwsim.points`).
Coils and discrete inputs are served in groups of 16 (pymodbus keeps them packed in
registers and tells the action only which registers a bit request spans), so a bit request
is checked against every point in the 16-bit groups it touches.
"""

from __future__ import annotations

import asyncio
import logging
import termios
from collections.abc import Sequence
from dataclasses import dataclass

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.base import ModbusBaseServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.base import to_engineering, to_raw
from drivers.modbus import codec
from fwsim.frontend import FrontEnd
from fwsim.physics import Microgrid
from fwsim.points import PointValues
from gateway.mapping import Device, Point
from gateway.protocols.modbus import ModbusAddress, ModbusOptions, Table

log = logging.getLogger(__name__)

#: seconds between attempts to open a serial line that went away
REOPEN_EVERY_S = 0.5

#: function code -> table, as pymodbus's simulator runtime maps them
_TABLE_OF_FUNCTION = {
    1: Table.COIL,
    5: Table.COIL,
    15: Table.COIL,
    2: Table.DISCRETE,
    3: Table.HOLDING,
    6: Table.HOLDING,
    16: Table.HOLDING,
    22: Table.HOLDING,
    23: Table.HOLDING,
    4: Table.INPUT,
}

#: the order of the four blocks of a non-shared SimDevice
_BLOCK_ORDER = (Table.COIL, Table.DISCRETE, Table.HOLDING, Table.INPUT)


@dataclass(frozen=True)
class ServedPoint:
    point: Point
    address: ModbusAddress
    #: requests touching it get exception 04 (`mgms sim --fail`)
    faulty: bool

    def overlaps(self, start: int, end: int) -> bool:
        return self.address.address < end and start < self.address.end


class UnitImage:
    """The register image of one unit id and the SimDevice action that serves it."""

    def __init__(self, unit: int, points: Sequence[ServedPoint], values: PointValues) -> None:
        self.unit = unit
        self.values = values
        self.points: dict[Table, list[ServedPoint]] = {t: [] for t in Table}
        for served in points:
            self.points[served.address.table].append(served)
        #: table -> (first address, values from there); bits are 0/1
        self.image: dict[Table, tuple[int, list[int]]] = {}
        for table, members in self.points.items():
            if members:
                low = min(p.address.address for p in members)
                high = max(p.address.end for p in members)
                self.image[table] = (low, [0] * (high - low))

    # -- image ------------------------------------------------------------------------

    def words(self, table: Table, start: int, end: int) -> list[int]:
        low, values = self.image[table]
        return [values[a - low] if 0 <= a - low < len(values) else 0 for a in range(start, end)]

    def _store(self, table: Table, start: int, words: Sequence[int]) -> None:
        low, values = self.image[table]
        values[start - low : start - low + len(words)] = list(words)

    def render(self, served: ServedPoint, value: float) -> None:
        """Put an engineering value of a point into the image."""
        address = served.address
        raw = codec.saturate(address, to_raw(served.point, value))
        if address.table.is_bit:
            self._store(address.table, address.address, [int(codec.encode_bit(raw))])
            return
        current = self.words(address.table, address.address, address.end)[0]
        self._store(address.table, address.address, codec.encode(address, raw, current))

    def refresh(self) -> None:
        for members in self.points.values():
            for served in members:
                if not served.faulty:
                    self.render(served, self.values.value(served.point))

    # -- pymodbus wiring --------------------------------------------------------------

    def sim_device(self) -> SimDevice:
        blocks: list[list[SimData]] = []
        for table in _BLOCK_ORDER:
            if table in self.image:
                low, values = self.image[table]
                if table.is_bit:
                    data = SimData(low, values=[False] * len(values), datatype=DataType.BITS)
                else:
                    data = SimData(low, count=len(values), datatype=DataType.REGISTERS)
            elif table.is_bit:  # pymodbus needs a block; the action refuses requests to it
                data = SimData(0, values=[False] * 16, datatype=DataType.BITS)
            else:
                data = SimData(0, datatype=DataType.INVALID)
            blocks.append([data])
        coils, discretes, holding, inputs = blocks
        return SimDevice(
            id=self.unit, simdata=(coils, discretes, holding, inputs), action=self.action
        )

    async def action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus calls this for every request before it answers from `registers` (the
        whole block, `registers[0]` at `start_address`) or stores `set_values` in it."""
        table = _TABLE_OF_FUNCTION.get(function_code)
        if table is None or table not in self.image:
            return ExcCodes.ILLEGAL_ADDRESS
        span = (address, address + count)
        if table.is_bit:
            # `address` is a bit, `count` the registers (16 bits each) the request spans
            first = address // 16 * 16
            span = (
                (address, address + len(set_values)) if set_values else (first, first + 16 * count)
            )
        touched = [p for p in self.points[table] if p.overlaps(*span)]
        if any(p.faulty for p in touched):
            return ExcCodes.DEVICE_FAILURE
        if set_values:
            refused = self._apply_write(table, span, [int(v) for v in set_values], touched)
            if refused is not None:
                return refused
        self._copy_out(table, start_address, address, count, registers)
        return None

    def _apply_write(
        self, table: Table, span: tuple[int, int], values: list[int], touched: list[ServedPoint]
    ) -> ExcCodes | None:
        writable = [p for p in touched if p.point.direction.writable]
        for at in range(*span):
            if not any(p.overlaps(at, at + 1) for p in writable):
                return ExcCodes.ILLEGAL_ADDRESS
        low = min([span[0], *(p.address.address for p in writable)])
        high = max([span[1], *(p.address.end for p in writable)])
        merged = self.words(table, low, high)
        merged[span[0] - low : span[1] - low] = values
        updates: list[tuple[ServedPoint, float]] = []
        for served in writable:
            a = served.address
            piece = merged[a.address - low : a.end - low]
            try:
                raw = bool(piece[0]) if table.is_bit else codec.decode(a, piece)
            except ValueError:
                return ExcCodes.ILLEGAL_VALUE
            value = to_engineering(served.point, raw)
            assert value is not None
            updates.append((served, float(value)))
        for served, value in updates:
            self.values.write(served.point, value)
            log.debug("unit %d: %s := %s", self.unit, served.point.id, value)
        self._store(table, low, merged)
        return None

    def _copy_out(
        self, table: Table, start_address: int, address: int, count: int, registers: list[int]
    ) -> None:
        if not table.is_bit:
            words = self.words(table, address, address + count)
            registers[address - start_address : address - start_address + count] = words
            return
        first = address // 16
        for r in range(first, first + count):
            bits = self.words(table, r * 16, r * 16 + 16)
            registers[r - start_address] = sum(bit << i for i, bit in enumerate(bits))


def unit_images(device: Device, values: PointValues) -> list[UnitImage]:
    """One image per unit id of the device's points."""
    by_unit: dict[int, list[ServedPoint]] = {}
    for point in device.points:
        address = device.address_of(point.id)
        assert isinstance(address, ModbusAddress)
        served = ServedPoint(point, address, faulty=point.id in values.failing)
        by_unit.setdefault(address.unit, []).append(served)
    return [UnitImage(unit, points, values) for unit, points in sorted(by_unit.items())]


def presents_sunspec(device: Device) -> bool:
    """The device presents a SunSpec layout (fwsim/sunspec_layout.py serves it)."""
    options = device.typed_options
    return isinstance(options, ModbusOptions) and bool(options.sunspec)


class ModbusFrontEnd(FrontEnd):
    """A serial device (`connection.serial`) is served on its serial port; host and port
    are then unused."""

    def __init__(self, device: Device, grid: Microgrid, host: str, port: int) -> None:
        super().__init__(device, grid, host, port)
        self.units = unit_images(device, self.values)
        if presents_sunspec(device):
            from fwsim.sunspec_layout import serve_sunspec

            serve_sunspec(device, self.units)
        self._unit_ids = frozenset(unit.unit for unit in self.units)
        self._server: ModbusBaseServer | None = None
        #: the serial line went away; refresh() opens it again
        self.line_lost = False
        self._reopen_at = 0.0

    async def start(self) -> None:
        for unit in self.units:
            unit.refresh()
        if self.device.connection.serial is not None:
            await self._open_line()
            return
        server = ModbusTcpServer(
            [unit.sim_device() for unit in self.units], address=(self.host, self.port)
        )
        await server.serve_forever(background=True)  # raises when it cannot listen
        self._server = server
        sockets = getattr(server.transport, "sockets", None)
        if sockets:  # the real port when 0 (any free port) was asked for
            self.port = int(sockets[0].getsockname()[1])
        log.info("modbus %s listening on %s:%d", self.device.id, self.host, self.port)

    async def _open_line(self) -> None:
        """Serve RTU on the serial line; raise RuntimeError when it cannot be opened (pymodbus
        says only that it could not listen; pyserial's own errors come through as they are)."""
        line = self.device.connection.serial
        assert line is not None
        server = ModbusSerialServer(
            [unit.sim_device() for unit in self.units],
            port=line.port,
            baudrate=line.baudrate,
            parity=line.parity,
            stopbits=line.stopbits,
            bytesize=line.bytesize,
            ignore_missing_devices=True,
            trace_pdu=self._addressed,  # type: ignore[arg-type]  # it may return None
            trace_connect=self._line_state,
        )
        try:
            await server.serve_forever(background=True)
        except (RuntimeError, OSError, termios.error, ValueError) as exc:
            server.close()
            raise RuntimeError(f"modbus {self.device.id}: cannot serve {line}: {exc}") from None
        self._server = server
        self.line_lost = False
        log.info(
            "modbus %s serving RTU units %s on %s", self.device.id, sorted(self._unit_ids), line
        )

    def _addressed(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU | None:
        """A received frame for a unit not on this line is dropped (None): no answer."""
        if sending or pdu.dev_id in self._unit_ids:
            return pdu
        return None

    def _line_state(self, up: bool) -> None:
        if not up and self._server is not None:
            self.line_lost = True

    async def refresh(self) -> None:
        for unit in self.units:
            unit.refresh()
        if self.line_lost:
            await self._reopen()

    async def _reopen(self) -> None:
        now = asyncio.get_running_loop().time()
        if now < self._reopen_at:
            return
        self._reopen_at = now + REOPEN_EVERY_S
        if self._server is not None:
            log.warning("modbus %s: serial line lost, reopening", self.device.id)
            await self.stop()
        try:
            await self._open_line()
        except RuntimeError:
            log.debug("modbus %s: serial line not back yet", self.device.id)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            try:
                await server.shutdown()  # type: ignore[no-untyped-call]
            except Exception:  # stop never raises; the process is going away anyway
                log.exception("modbus %s: error while stopping", self.device.id)
