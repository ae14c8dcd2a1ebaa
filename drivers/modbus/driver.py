"""The Modbus driver: the read plan and the codec on a pymodbus asyncio client.

pymodbus exceptions are translated here and nowhere else: a refused connection, a lost
link or a missing answer become `LinkError` (`RequestTimeout` for a missing answer), a
Modbus exception response marks only the points of the failed request invalid. A failed
request of several points is split in halves until the exception is pinned on the points
it belongs to; when the device says the request itself is wrong (illegal function, address
or value) the split is remembered for this connection, so the next poll does not pay for
the failed request again.

A unit that does not answer is not a dead link when others on the same link do: on a
serial line (or behind a TCP gateway) one unit may be switched off while the rest work.
So a request without an answer marks that unit silent for the rest of the poll: its points
come back invalid (`comm_failure`) and its other requests are skipped. Only when nothing
answered in a poll is the link down (`RequestTimeout`).

The client comes from `transport.client_for`: Modbus TCP, or RTU on a serial line with the
line's inter-frame gap kept between requests. pymodbus's own reconnect is off, the
gateway's session reconnects.
"""

from __future__ import annotations

import asyncio
import math
import struct
import termios
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pymodbus.client.base import ModbusBaseClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from drivers.base import ProtocolDriver, invalid, to_engineering, to_raw
from drivers.modbus import codec
from drivers.modbus.layout import Layout, compile_layout
from drivers.modbus.plan import ReadRequest, plan_reads, split
from drivers.modbus.protocol import ModbusAddress, ModbusOptions, Table
from drivers.modbus.transport import ClientFactory, client_for, line_timing
from gateway.errors import LinkError, RawRangeError, RequestTimeout
from gateway.mapping import Device, Point
from gateway.model import (
    Batch,
    Command,
    CommandMode,
    CommandResult,
    CommandStatus,
    PointSet,
    QualityFlag,
    Reading,
    utcnow,
)

#: the function code of a read of each table
_READ_FUNCTION = {Table.COIL: 1, Table.DISCRETE: 2, Table.HOLDING: 3, Table.INPUT: 4}

#: exception codes that say the request itself is wrong for this device, not a passing state
_STRUCTURAL = frozenset({1, 2, 3})


@dataclass(frozen=True)
class _Block:
    """A register request's compiled layout and what its plain points need to become a
    batch, worked out once per read plan."""

    layout: Layout
    #: the plain points (ids and units), in the layout's order: every poll's batch of the
    #: block carries this same set
    points: PointSet
    #: each plain point's (scale, offset), None for a point read as it is; None for all
    #: when no point of the block is scaled
    scaling: tuple[tuple[float, float] | None, ...] | None


def _block(request: ReadRequest, points: dict[str, Point]) -> _Block:
    layout = compile_layout(request)
    plain = [points[point_id] for point_id, _ in layout.plain]
    scaling = tuple(
        None if p.scale == 1.0 and p.offset == 0.0 else (p.scale, p.offset) for p in plain
    )
    return _Block(
        layout,
        PointSet(tuple(p.id for p in plain), tuple(p.unit for p in plain)),
        scaling=None if all(s is None for s in scaling) else scaling,
    )


@dataclass(frozen=True)
class _Refused:
    """A request the device answered with a Modbus exception (code) or garbage (None: the
    points are `inconsistent`)."""

    code: int | None
    detail: str


class ModbusDriver(ProtocolDriver[ModbusAddress, ModbusOptions]):
    def __init__(
        self,
        device: Device,
        client_factory: ClientFactory = client_for,
        options: ModbusOptions | None = None,
    ) -> None:
        """`options` overrides the device's (the benchmark compares plans with it)."""
        super().__init__(device, ModbusAddress, ModbusOptions, options)
        self.timing = line_timing(device, self.options)
        self._factory = client_factory
        self._client: ModbusBaseClient | None = None
        self._plans: dict[tuple[str, ...], list[ReadRequest]] = {}
        #: id(request) -> (request, its compiled block); holding the request keeps the id
        self._blocks: dict[int, tuple[ReadRequest, _Block]] = {}
        self._last_points: tuple[Sequence[Point], tuple[str, ...], dict[str, Point]] | None = None
        #: Modbus requests sent since the driver was built (reads and writes)
        self.requests_sent = 0
        #: requests that got an answer (data or a Modbus exception)
        self.answers = 0
        #: loop time from which the line has been quiet long enough for the next request
        self._quiet_at = 0.0

    def _key(self, points: Sequence[Point]) -> tuple[tuple[str, ...], dict[str, Point]]:
        """The plan key of a set of points and the points by id; a session polls the same
        list every time, so both are kept for the last list seen."""
        if self._last_points is not None and self._last_points[0] is points:
            return self._last_points[1], self._last_points[2]
        key, by_id = tuple(p.id for p in points), {p.id: p for p in points}
        self._last_points = (points, key, by_id)
        return key, by_id

    def plan(self, points: Sequence[Point]) -> list[ReadRequest]:
        """The requests that read `points` (as learned on this connection)."""
        key, _ = self._key(points)
        plan = self._plans.get(key)
        if plan is None:
            plan = plan_reads(((p.id, self.address(p)) for p in points), self.options)
            self._plans[key] = plan
        return plan

    # -- link ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    def _where(self) -> str:
        conn = self.device.connection
        if conn.serial is not None:
            return f"serial port {conn.serial}"
        return f"{conn.host}:{conn.port}"

    async def connect(self) -> None:
        await self.close()
        client = self._factory(self.device)
        serial = self.device.connection.serial is not None
        # pymodbus answers False for any OSError it caught (refused, unreachable, no port)
        why = ": the port did not open" if serial else ": refused or unreachable"
        try:
            async with asyncio.timeout(self.timing.request_timeout):  # the client has none
                up = await client.connect()
        except TimeoutError:
            up, why = False, f": no connection within {self.timing.request_timeout:.3g} s"
        except (OSError, termios.error, ValueError) as exc:
            # pyserial: the port refuses the character format (a pty has no parity)
            up, why = False, f": {exc}"
        if not up:
            client.close()
            verb = "open" if serial else "connect to"
            raise LinkError(self.device.id, f"cannot {verb} {self._where()}{why}")
        self._client = client
        self._plans.clear()  # a new connection may be a different device firmware
        self._blocks.clear()

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _live_client(self) -> ModbusBaseClient:
        # pymodbus would try to reconnect on its own when the link is gone; say so instead
        if self._client is None or not self._client.connected:
            raise LinkError(self.device.id, f"not connected to {self._where()}")
        return self._client

    async def _call(self, send: Callable[[], Awaitable[ModbusPDU]], what: str) -> ModbusPDU:
        """Send one client request with the request timeout; translate pymodbus errors
        (the client raises some when the request is built, so that happens in here)."""
        loop = asyncio.get_running_loop()
        if (wait := self._quiet_at - loop.time()) > 0:
            await asyncio.sleep(wait)  # the inter-frame gap of a serial line
        self.requests_sent += 1
        timeout = self.timing.request_timeout
        try:
            async with asyncio.timeout(timeout):  # the only timer: the client keeps none
                response = await send()
            self.answers += 1
            return response
        except (ModbusIOException, TimeoutError):
            if not self.connected:
                raise LinkError(self.device.id, f"{what}: link lost") from None
            raise RequestTimeout(
                self.device.id, f"{what}: no answer within {timeout:.3g} s"
            ) from None
        except ConnectionException as exc:
            raise LinkError(self.device.id, f"{what}: link lost ({exc})") from None
        except ModbusException as exc:
            raise LinkError(self.device.id, f"{what}: {exc}") from None
        finally:
            self._quiet_at = loop.time() + self.timing.frame_gap

    # -- reading ------------------------------------------------------------------------

    async def read(self, points: Sequence[Point]) -> list[Reading]:
        """`poll`'s values as one reading per point, in the points' order."""
        got = {r.point: r for item in await self.poll(points) for r in item.readings()}
        return [got[p.id] for p in points]

    async def poll(self, points: Sequence[Point]) -> list[Reading | Batch]:
        """A batch for each register block that decoded whole; a reading for each other
        point (bits, points decoded one by one, failures), in the plan's order."""
        client = self._live_client()
        plan = self.plan(points)
        key, by_id = self._key(points)
        items: list[Reading | Batch] = []
        used: list[ReadRequest] = []
        answers, timeout = self.answers, self.timing.request_timeout
        silent: dict[int, RequestTimeout] = {}
        for request in plan:
            read: set[str] = set()
            if request.unit not in silent:
                before = len(items)
                try:
                    used += await self._read_request(client, request, by_id, items)
                    continue
                except RequestTimeout as exc:
                    silent[request.unit] = exc
                # a split may have read some before the silence
                read = {r.point for item in items[before:] for r in item.readings()}
            used.append(request)
            detail = f"unit {request.unit} did not answer within {timeout:.3g} s"
            items += (
                invalid(by_id[point_id], detail, QualityFlag.COMM_FAILURE)
                for point_id, _ in request.points
                if point_id not in read
            )
        if silent and self.answers == answers:  # nothing on the link answered: it is down
            raise next(iter(silent.values()))
        if used != plan:  # a split the device asked for: read that way from now on
            self._plans[key] = used
        return items

    def read_budget(self, points: Sequence[Point]) -> float:
        """The longest a healthy read of `points` can take: every request of the plan (and
        the halves of a split) waiting its full timeout after the inter-frame gap."""
        per_request = self.timing.request_timeout + self.timing.frame_gap
        return 2 * len(self.plan(points)) * per_request + 1.0

    async def _read_request(
        self,
        client: ModbusBaseClient,
        request: ReadRequest,
        points: dict[str, Point],
        items: list[Reading | Batch],
    ) -> list[ReadRequest]:
        """Read one request onto `items`; return the requests to use next time."""
        answer = await self._fetch(client, request)
        if isinstance(answer, _Refused):
            if answer.code is not None and len(request.points) > 1:
                used: list[ReadRequest] = []
                for part in split(request):
                    used += await self._read_request(client, part, points, items)
                return used if answer.code in _STRUCTURAL else [request]
            flags = (QualityFlag.INCONSISTENT,) if answer.code is None else ()
            items += (
                invalid(points[point_id], answer.detail, *flags) for point_id, _ in request.points
            )
            return [request]
        self._decode_answer(request, answer, points, items)
        return [request]

    def _decode_answer(
        self,
        request: ReadRequest,
        answer: list[int] | list[bool],
        points: dict[str, Point],
        items: list[Reading | Batch],
    ) -> None:
        """Every point of an answered request onto `items`, one time stamp for all: the
        block's plain points as one batch, when every value is finite."""
        now = utcnow()
        if request.table.is_bit:
            items += (
                self._decode(points[point_id], address, request, answer, now)
                for point_id, address in request.points
            )
            return
        block = self._block(request, points)
        try:
            raws = block.layout.unpack(answer)  # type: ignore[arg-type]
        except struct.error:  # a word that is not 16 bits: each point says whether it is hit
            items += (
                self._decode(points[point_id], address, request, answer, now)
                for point_id, address in request.points
            )
            return
        values: Sequence[float | int] = raws
        if block.scaling is not None:
            values = [
                raw if s is None else raw * s[0] + s[1]
                for raw, s in zip(raws, block.scaling, strict=True)
            ]
        total = sum(values)
        if total - total == 0:  # every value finite (a NaN or an infinity makes the sum one)
            if values:
                items.append(Batch(block.points, values, now))
        else:  # which ones are not, point by point
            for point_id, raw, value in zip(block.points.ids, raws, values, strict=True):
                point = points[point_id]
                if value - value == 0:  # finite (inf - inf and NaN - NaN are NaN)
                    items.append(Reading(point_id, value, point.unit, gateway_time=now))
                else:
                    items.append(self._not_finite(point, raw))
        items += (
            self._decode(points[point_id], address, request, answer, now)
            for point_id, address in block.layout.single
        )

    def _block(self, request: ReadRequest, points: dict[str, Point]) -> _Block:
        cached = self._blocks.get(id(request))
        if cached is not None and cached[0] is request:
            return cached[1]
        block = _block(request, points)
        self._blocks[id(request)] = (request, block)
        return block

    async def _fetch(
        self, client: ModbusBaseClient, request: ReadRequest
    ) -> list[int] | list[bool] | _Refused:
        readers = {
            Table.COIL: client.read_coils,
            Table.DISCRETE: client.read_discrete_inputs,
            Table.HOLDING: client.read_holding_registers,
            Table.INPUT: client.read_input_registers,
        }
        what = f"read {request.unit}/{request.table.value}/{request.address} x{request.count}"
        reader = readers[request.table]
        response = await self._call(
            lambda: reader(request.address, count=request.count, device_id=request.unit), what
        )
        # an answer to another function (a confused device, or a gateway in front of one
        # mixing up its units' answers) says nothing of what was asked
        asked = _READ_FUNCTION[request.table]
        if response.function_code & 0x7F != asked:
            return _Refused(
                None, f"{what}: the answer is for function {response.function_code & 0x7F}"
            )
        if response.isError():
            return _Refused(response.exception_code, codec.exception_text(response.exception_code))
        if request.table.is_bit:
            bits = list(response.bits)
            if len(bits) >= request.count:
                return bits[: request.count]
        else:
            registers = list(response.registers)
            # the byte count as sent, where the client's answer classes keep it
            sent = getattr(response, "byte_count", 2 * len(registers))
            if len(registers) == request.count and sent == 2 * request.count:
                return registers
            if sent != 2 * len(registers):
                return _Refused(
                    None, f"{what}: the answer's byte count {sent} is not {2 * request.count}"
                )
        return _Refused(None, f"{what}: answer has the wrong length")

    @staticmethod
    def _not_finite(point: Point, raw: float) -> Reading:
        if math.isfinite(raw):  # finite as sent, beyond float range once scaled
            return invalid(point, f"{raw} x {point.scale} overflows", QualityFlag.OVERFLOW)
        flag = QualityFlag.INCONSISTENT if math.isnan(raw) else QualityFlag.OVERFLOW
        return invalid(point, f"device sent {raw}", flag)

    def _decode(
        self,
        point: Point,
        address: ModbusAddress,
        request: ReadRequest,
        answer: list[int] | list[bool],
        now: datetime,
    ) -> Reading:
        """One point on its own (bits, little-endian bytes, words that are not 16 bits)."""
        offset = request.offset(address)
        try:
            raw: codec.RawValue
            if address.table.is_bit:
                raw = bool(answer[offset])
            else:
                words = [int(w) for w in answer[offset : offset + address.count]]
                raw = codec.decode(address, words)
        except ValueError as exc:
            return invalid(point, f"does not decode: {exc}", QualityFlag.INCONSISTENT)
        if isinstance(raw, float) and not math.isfinite(raw):
            return self._not_finite(point, raw)
        return Reading(point.id, to_engineering(point, raw), point.unit, gateway_time=now)

    # -- writing ------------------------------------------------------------------------

    async def write(self, point: Point, command: Command) -> CommandResult:
        address = self.address(point)

        def result(status: CommandStatus, detail: str = "") -> CommandResult:
            return CommandResult(command, status, detail)

        if command.mode is CommandMode.SELECT_BEFORE_OPERATE:
            return result(CommandStatus.REJECTED, "not sent: Modbus has no select-before-operate")
        if not address.table.writable:
            return result(CommandStatus.REJECTED, f"not sent: {address.table.value} is read-only")
        if command.deadline is not None and command.deadline <= datetime.now(UTC):
            return result(CommandStatus.TIMEOUT, "not sent: deadline already passed")
        try:
            request = self._write_request(address, to_raw(point, command.value))
        except RawRangeError as exc:
            return result(CommandStatus.REJECTED, f"not sent: {exc}")
        try:
            client = self._live_client()
            send, confirms = request
            response = await self._call(lambda: send(client), f"write {address}")
        except RequestTimeout as exc:
            return result(CommandStatus.TIMEOUT, str(exc))
        except LinkError as exc:
            return result(CommandStatus.LINK_DOWN, str(exc))
        if response.isError():
            return result(CommandStatus.REJECTED, codec.exception_text(response.exception_code))
        if not confirms(response):
            return result(CommandStatus.REJECTED, f"write {address}: answer does not echo it")
        return result(CommandStatus.CONFIRMED)

    def _write_request(
        self, address: ModbusAddress, raw: codec.RawValue
    ) -> tuple[Callable[[ModbusBaseClient], Awaitable[ModbusPDU]], Callable[[ModbusPDU], bool]]:
        """How to send a raw value to a writable address, and how to check the answer's
        echo. Raises RawRangeError before anything is sent."""
        at, unit = address.address, address.unit
        if address.table is Table.COIL:
            bit = codec.encode_bit(raw)
            return (
                lambda c: c.write_coil(at, bit, device_id=unit),
                lambda r: bool(r.bits) and bool(r.bits[0]) == bit,
            )
        if address.bit is not None:
            # the bit alone, atomically: mask write (function 22) instead of read-modify-write
            mask = codec.encode(address, True)[0]
            and_mask, or_mask = ~mask & 0xFFFF, mask if codec.encode_bit(raw) else 0
            return (
                lambda c: c.mask_write_register(
                    address=at, and_mask=and_mask, or_mask=or_mask, device_id=unit
                ),
                lambda r: (r.address, r.and_mask, r.or_mask) == (at, and_mask, or_mask),
            )
        words = codec.encode(address, raw)
        if len(words) == 1:
            return (
                lambda c: c.write_register(at, words[0], device_id=unit),
                lambda r: (r.address, list(r.registers)) == (at, words),
            )
        return (
            lambda c: c.write_registers(at, words, device_id=unit),
            lambda r: (r.address, r.count) == (at, len(words)),
        )
