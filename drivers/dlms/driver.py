"""The DLMS/COSEM driver: a meter's attributes as points, its methods as commands, and its
load profile by time range.

gurux-dlms is blocking, so the association lives on the driver's own worker thread (one
per device: gurux objects are not thread-safe) and every call from the event loop is an
awaited hand-over with a timeout. A timeout breaks the socket, which frees the worker, and
the link counts as down: the caller reconnects.

Scaler and unit of every scaled attribute are read once per association, in the same
request as the first values, and applied to every later read.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, TypeVar

from drivers.base import Driver, invalid, to_engineering
from drivers.dlms.codec import ScalerUnit, is_number, meter_to_unit, to_meter_value, to_reading
from drivers.dlms.profile import LoadProfile, ProfileColumn, ProfileEntry, merge_entries
from drivers.dlms.session import CaptureObject, Failed, Got, Outcome, Refused, Session
from gateway.errors import DecodeError, DeviceRejected, LinkError
from gateway.mapping import Device, Point
from gateway.model import Command, CommandResult, CommandStatus, Reading, utcnow
from gateway.protocols.dlms import CosemClass, DlmsAddress, DlmsOptions, Kind, Obis

T = TypeVar("T")

_DEFAULT_PORT = 4059
#: DLMS data type tag -> (min, max) of the integer types a write must fit
_INTEGER_RANGES: dict[int, tuple[int, int]] = {
    15: (-(2**7), 2**7 - 1),  # integer
    16: (-(2**15), 2**15 - 1),  # long
    5: (-(2**31), 2**31 - 1),  # double-long
    20: (-(2**63), 2**63 - 1),  # long64
    17: (0, 2**8 - 1),  # unsigned
    18: (0, 2**16 - 1),  # long-unsigned
    6: (0, 2**32 - 1),  # double-long-unsigned
    21: (0, 2**64 - 1),  # long64-unsigned
    22: (0, 2**8 - 1),  # enum
}
#: invocation counters skipped after an association ended while requests were in flight
_COUNTER_MARGIN = 8
_BOOLEAN = 3
_INTEGER8 = 15
_LONG = 16


class _NoAnswer(LinkError):
    """The meter did not answer in time (the link is dropped)."""


Key = tuple[int, Obis, int]


class DlmsDriver(Driver):
    def __init__(self, device: Device) -> None:
        super().__init__(device)
        options = device.typed_options
        if not isinstance(options, DlmsOptions):
            raise TypeError(f"device {device.id!r}: options are not DLMS options")
        self.options = options
        self._session: Session | None = None
        self._worker: ThreadPoolExecutor | None = None
        self._lock = asyncio.Lock()
        # per association: scaler_unit by scaled attribute, data type by written attribute
        self._scalers: dict[Key, ScalerUnit] = {}
        self._types: dict[Key, int] = {}
        self._columns: dict[Obis, list[CaptureObject]] = {}
        # AES-GCM nonces (system title + invocation counter) must not repeat under one key,
        # and meters refuse a counter below the last one seen: it only grows, across
        # associations (a gateway restart starts again at 1; see docs/dlms.md)
        self._invocation_counter = 1

    @property
    def connected(self) -> bool:
        return self._session is not None

    @property
    def invocation_counter(self) -> int:
        """The invocation counter the next ciphered association starts from."""
        if self._session is not None:
            return max(self._invocation_counter, self._session.invocation_counter)
        return self._invocation_counter

    # --- link ---------------------------------------------------------------------------

    async def connect(self) -> None:
        async with self._lock:
            self._drop()
            conn = self.device.connection
            if conn.host is None:
                raise LinkError(self.device.id, "DLMS runs over TCP: the device needs a host")
            session = Session(
                self.device.id,
                conn.host,
                conn.port or _DEFAULT_PORT,
                self.options,
                self.device.timeout,
                self._invocation_counter,
            )
            self._session = session
            self._worker = ThreadPoolExecutor(1, thread_name_prefix=f"dlms-{self.device.id}")
            try:
                # AARQ, HLS pass 3/4 and the TCP handshake
                await self._run(session.open, exchanges=3)
            except BaseException:
                self._drop()
                raise

    async def close(self) -> None:
        session, worker = self._session, self._worker
        self._session, self._worker = None, None
        self._forget()
        if session is None or worker is None:
            return
        finished = False
        try:
            loop = asyncio.get_running_loop()
            await asyncio.wait_for(
                loop.run_in_executor(worker, session.close), self.device.timeout * 2
            )
            finished = True
        except asyncio.CancelledError:
            session.abort()
            raise
        except Exception:  # close never raises; a stuck release is cut short  # noqa: BLE001
            session.abort()
        finally:
            worker.shutdown(wait=finished)
            # read after the release; a cut-short close may still be sending
            margin = 0 if finished else _COUNTER_MARGIN
            self._invocation_counter = max(
                self._invocation_counter, session.invocation_counter + margin
            )

    def _drop(self) -> None:
        """Forget the association after a failure; frees a blocked worker."""
        session, worker = self._session, self._worker
        if session is not None:
            # the worker may still send (the release below): skip ahead rather than repeat
            self._invocation_counter = self.invocation_counter + _COUNTER_MARGIN
        self._session, self._worker = None, None
        self._forget()
        if session is not None:
            session.abort()
        if worker is not None:
            if session is not None:
                worker.submit(session.close)  # frees the socket once the worker is free
            worker.shutdown(wait=False)

    def _forget(self) -> None:
        self._scalers.clear()
        self._types.clear()
        self._columns.clear()

    async def _run(self, fn: Callable[..., T], *args: Any, exchanges: int = 1) -> T:
        """Run a blocking session call on the worker, bounded in time."""
        session, worker = self._session, self._worker
        if session is None or worker is None:
            raise LinkError(self.device.id, "not connected")
        loop = asyncio.get_running_loop()
        limit = self.device.timeout * (exchanges + 1)
        try:
            return await asyncio.wait_for(loop.run_in_executor(worker, fn, *args), limit)
        except TimeoutError:
            self._drop()
            raise _NoAnswer(self.device.id, f"no answer within {limit:g} s") from None
        except LinkError:
            self._drop()
            raise
        except asyncio.CancelledError:
            self._drop()  # the exchange may be half done: the association is unusable
            raise

    def _require(self) -> Session:
        if self._session is None:
            raise LinkError(self.device.id, "not connected")
        return self._session

    def _address(self, point: Point) -> DlmsAddress:
        address = self.device.address_of(point.id)
        assert isinstance(address, DlmsAddress)
        return address

    # --- reads --------------------------------------------------------------------------

    async def read(self, points: Sequence[Point]) -> list[Reading]:
        async with self._lock:
            session = self._require()
            wanted: dict[Key, DlmsAddress] = {}
            for point in points:
                address = self._address(point)
                if address.is_method:
                    continue
                wanted.setdefault(address.target, address)
                self._want_scaler(address, wanted)
            targets = list(wanted.values())
            outcomes = (
                await self._run(session.get, targets, exchanges=len(targets)) if targets else []
            )
            by_key = dict(zip(wanted, outcomes, strict=True))
            problems = self._learn_scalers(by_key)
            return [self._reading(p, by_key, problems) for p in points]

    def _want_scaler(self, address: DlmsAddress, wanted: dict[Key, DlmsAddress]) -> None:
        su = address.scaler_unit
        if su is None:
            return
        key: Key = (int(address.class_id), address.obis, su)
        if key not in self._scalers:
            wanted.setdefault(key, DlmsAddress(address.class_id, address.obis, attribute=su))

    def _learn_scalers(self, by_key: dict[Key, Outcome]) -> dict[Key, str]:
        """Cache scaler_unit answers; return why the others are unknown."""
        problems: dict[Key, str] = {}
        for key, outcome in by_key.items():
            class_id, _obis, attribute = key
            if CosemClass(class_id).info.scaler_unit != attribute:
                continue
            if isinstance(outcome, Got):
                try:
                    self._scalers[key] = ScalerUnit.decode(outcome.value)
                except ValueError as exc:
                    problems[key] = str(exc)
            else:
                problems[key] = f"scaler_unit: {_outcome_text(outcome)}"
        return problems

    def _reading(
        self, point: Point, by_key: dict[Key, Outcome], problems: dict[Key, str]
    ) -> Reading:
        address = self._address(point)
        if address.is_method:
            return invalid(point, f"{address} is a method: write-only")
        outcome = by_key[address.target]
        if not isinstance(outcome, Got):
            return invalid(point, f"{address}: {_outcome_text(outcome)}")
        su = address.scaler_unit
        scaler_unit = None
        if su is not None:
            su_key: Key = (int(address.class_id), address.obis, su)
            scaler_unit = self._scalers.get(su_key)
            if scaler_unit is None:
                return invalid(point, f"{address}: {problems.get(su_key, 'scaler_unit unknown')}")
        return to_reading(point, address, outcome.value, scaler_unit)

    # --- writes -------------------------------------------------------------------------

    async def write(self, point: Point, command: Command) -> CommandResult:
        address = self._address(point)
        async with self._lock:
            if self._session is None:
                return CommandResult(command, CommandStatus.LINK_DOWN, "not connected")
            try:
                if address.is_method:
                    outcome = await self._invoke(address, command)
                else:
                    outcome = await self._set(point, address, command)
            except _NoAnswer as exc:
                return CommandResult(command, CommandStatus.TIMEOUT, str(exc))
            except LinkError as exc:
                return CommandResult(command, CommandStatus.LINK_DOWN, str(exc))
            except (DeviceRejected, DecodeError, ValueError) as exc:
                return CommandResult(command, CommandStatus.REJECTED, str(exc))
        if isinstance(outcome, Got):
            return CommandResult(command, CommandStatus.CONFIRMED)
        return CommandResult(
            command, CommandStatus.REJECTED, f"{address}: {_outcome_text(outcome)}"
        )

    def _exchanges(self, command: Command, default: int) -> int:
        """How many request timeouts the command may take, within its deadline."""
        if command.deadline is None:
            return default
        left = (command.deadline - utcnow()).total_seconds()
        if left <= 0:
            raise _NoAnswer(self.device.id, "the command's deadline passed before sending")
        return max(0, min(default, math.floor(left / self.device.timeout) - 1))

    async def _invoke(self, address: DlmsAddress, command: Command) -> Outcome:
        info = address.method_info
        value = command.value
        if info.takes_value:
            if not is_number(value) or value != int(value):
                raise ValueError(f"{address} ({info.name}) takes a whole number, not {value!r}")
            parameter, data_type = int(value), _LONG
        else:
            if value not in (1, True):
                raise ValueError(f"{address}: write 1 (or true) to invoke {info.name}")
            parameter, data_type = 0, _INTEGER8
        session = self._require()
        return await self._run(
            session.action, address, parameter, data_type, exchanges=self._exchanges(command, 1)
        )

    async def _set(self, point: Point, address: DlmsAddress, command: Command) -> Outcome:
        session = self._require()
        key = address.target
        scaler_unit = None
        if address.scaler_unit is not None:
            su_key: Key = (int(address.class_id), address.obis, address.scaler_unit)
            if su_key not in self._scalers:
                got = await self._run(
                    session.read,
                    DlmsAddress(address.class_id, address.obis, attribute=address.scaler_unit),
                )
                if not isinstance(got, Got):
                    return got
                self._scalers[su_key] = ScalerUnit.decode(got.value)
            scaler_unit = self._scalers[su_key]
        if key not in self._types:
            # the meter's own data type of the attribute: learnt from one read
            got = await self._run(session.read, address)
            if not isinstance(got, Got) or got.data_type is None:
                return got if not isinstance(got, Got) else Failed("data type unknown")
            self._types[key] = int(got.data_type)
        data_type = self._types[key]
        raw = _fit(to_meter_value(point, address, command.value, scaler_unit), data_type)
        return await self._run(
            session.set, address, raw, data_type, exchanges=self._exchanges(command, 1)
        )

    # --- load profile -------------------------------------------------------------------

    async def read_load_profile(self, start: datetime, end: datetime) -> LoadProfile:
        """The load profile entries captured in [start, end] (aware datetimes), read in
        windows of `profile_window_s`. Columns that a mapped point addresses carry the
        point's id, unit and scaling; others their address and the meter's unit.
        Raises LinkError, DeviceRejected (no such profile, access denied) or DecodeError."""
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("profile range needs timezone-aware datetimes")
        if end < start:
            raise ValueError(f"profile range ends ({end}) before it starts ({start})")
        async with self._lock:
            session = self._require()
            obis = self.options.profile
            columns = self._columns.get(obis)
            if columns is None:
                columns = await self._run(session.capture_objects, obis)
                self._columns[obis] = columns
            period = await self._profile_period(session, obis)
            mapping = self._column_points()
            scalers = await self._column_scalers(session, columns)
            chunks: list[list[ProfileEntry]] = []
            for lo, hi in _windows(start, end, self.options.profile_window_s):
                rows = await self._run(session.profile_rows, obis, lo, hi, exchanges=2)
                chunks.append(self._entries(obis, columns, rows, mapping, scalers))
        return LoadProfile(
            device=self.device.id,
            capture_period_s=period,
            columns=tuple(_column(c, mapping, scalers) for c in columns),
            entries=merge_entries(chunks),
        )

    async def _profile_period(self, session: Session, obis: Obis) -> int:
        outcome = await self._run(
            session.read, DlmsAddress(CosemClass.PROFILE_GENERIC, obis, attribute=4)
        )
        if isinstance(outcome, Got) and is_number(outcome.value):
            return int(outcome.value)
        raise DeviceRejected(
            self.device.id, f"profile {obis}: capture period: {_outcome_text(outcome)}"
        )

    def _column_points(self) -> dict[Key, Point]:
        out: dict[Key, Point] = {}
        for point in self.device.points:
            address = self._address(point)
            if not address.is_method:
                out.setdefault(address.target, point)
        return out

    async def _column_scalers(
        self, session: Session, columns: list[CaptureObject]
    ) -> dict[Key, ScalerUnit]:
        wanted: dict[Key, DlmsAddress] = {}
        for col in columns:
            address = _capture_address(col)
            if address is not None:
                self._want_scaler(address, wanted)
        if wanted:
            outcomes = await self._run(session.get, list(wanted.values()), exchanges=len(wanted))
            problems = self._learn_scalers(dict(zip(wanted, outcomes, strict=True)))
            if problems:
                key, why = next(iter(problems.items()))
                raise DeviceRejected(self.device.id, f"profile column {key[1]}: {why}")
        return {
            k: v
            for k, v in self._scalers.items()
            if any(k[:2] == (c.class_id, c.obis) for c in columns)
        }

    def _entries(
        self,
        obis: Obis,
        columns: list[CaptureObject],
        rows: list[list[Any]],
        mapping: dict[Key, Point],
        scalers: dict[Key, ScalerUnit],
    ) -> list[ProfileEntry]:
        time_col = next((i for i, c in enumerate(columns) if _kind(c) is Kind.DATETIME), None)
        if time_col is None:
            raise DecodeError(self.device.id, f"profile {obis} has no clock column")
        out = []
        for row in rows:
            stamp = row[time_col]
            if not isinstance(stamp, datetime):
                raise DecodeError(self.device.id, f"profile {obis}: entry without capture time")
            values = tuple(
                _column_value(c, v, mapping, scalers) for c, v in zip(columns, row, strict=True)
            )
            out.append(ProfileEntry(stamp, values))
        return out


def _outcome_text(outcome: Outcome) -> str:
    if isinstance(outcome, Refused):
        return f"meter refused: {outcome.text}"
    if isinstance(outcome, Failed):
        return outcome.text
    return "unexpected answer"


def _fit(raw: float | int | bool, data_type: int) -> float | int | bool:
    """The value in the attribute's own type: booleans stay booleans, integers must fit."""
    if data_type == _BOOLEAN:
        return bool(raw)
    bounds = _INTEGER_RANGES.get(data_type)
    if bounds is None:
        return float(raw)
    whole = round(raw)
    if not bounds[0] <= whole <= bounds[1]:
        raise ValueError(
            f"value {raw} does not fit the meter's integer type ({bounds[0]}..{bounds[1]})"
        )
    return whole


def _windows(start: datetime, end: datetime, span_s: float) -> list[tuple[datetime, datetime]]:
    out = []
    step = timedelta(seconds=span_s)
    lo = start
    while True:
        hi = min(lo + step, end)
        out.append((lo, hi))
        if hi >= end:
            return out
        lo = hi


def _capture_address(col: CaptureObject) -> DlmsAddress | None:
    try:
        class_id = CosemClass(col.class_id)
    except ValueError:
        return None
    if col.attribute not in class_id.info.attributes:
        return None
    return DlmsAddress(class_id, col.obis, attribute=col.attribute)


def _kind(col: CaptureObject) -> Kind | None:
    address = _capture_address(col)
    return address.member.kind if address is not None else None


def _su_of(col: CaptureObject, scalers: dict[Key, ScalerUnit]) -> ScalerUnit | None:
    address = _capture_address(col)
    if address is None or address.scaler_unit is None:
        return None
    return scalers.get((col.class_id, col.obis, address.scaler_unit))


def _column(
    col: CaptureObject, mapping: dict[Key, Point], scalers: dict[Key, ScalerUnit]
) -> ProfileColumn:
    text = f"{col.class_id}/{col.obis}/{col.attribute}"
    point = mapping.get((col.class_id, col.obis, col.attribute))
    if point is not None:
        return ProfileColumn(point.id, text, point.unit)
    if _kind(col) is Kind.DATETIME:
        return ProfileColumn(text, text, "SEC")
    su = _su_of(col, scalers)
    return ProfileColumn(text, text, (su.qudt if su is not None else None) or "UNITLESS")


def _column_value(
    col: CaptureObject,
    value: Any,
    mapping: dict[Key, Point],
    scalers: dict[Key, ScalerUnit],
) -> float | int | bool | None:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, bool) or not is_number(value):
        return value if isinstance(value, bool) else None
    kind = _kind(col) or Kind.VALUE
    su = _su_of(col, scalers)
    point = mapping.get((col.class_id, col.obis, col.attribute))
    unit = point.unit if point is not None else ((su.qudt if su else None) or "UNITLESS")
    try:
        number = meter_to_unit(value, kind, su, unit)
    except ValueError:
        return None
    if point is None:
        return number
    result = to_engineering(point, number)
    return result if not isinstance(result, bool) else None
