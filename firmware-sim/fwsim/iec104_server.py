"""IEC 60870-5-104 outstation (c104 server) serving one mapping-file device from the model.

What it sends, by the type id in the mapping:
- time-tagged types (M_SP_TB_1, M_DP_TB_1, M_ME_TD/TE/TF_1): spontaneously on change,
  with a CP56Time2a time tag from the outstation's clock (the host clock, shifted by the
  last clock synchronisation command; the simulated world's clock only drives physics);
- single and double points without time tag: spontaneously on change;
- measured values without time tag (M_ME_NA/NB/NC_1): periodically every
  `poll_interval` of the device (cause "periodic");
- integrated totals (M_IT_NA_1, M_IT_TB_1): on counter interrogation only;
- everything but the totals in answer to a general interrogation.

Quality: IV for a point named in `mgms sim --fail`, OV when it does not fit the type (the
value is clamped). Faults can be injected for tests and demonstrations with the
environment variable FWSIM_IEC104_QUALITY, a JSON object of point id -> flags, e.g.
`{"chp1.q": "NT SB"}` (flags IV NT SB BL OV; counters IV CY CA).

Commands: each command object applies its value to the model (`PointValues.write`) and
confirms positively, or confirms negatively when the value is outside the point's limits or the
DER's ratings (for a generator also between 0 and its minimum stable power). Points with
`sbo: true` accept only select-before-execute. A command with a return-information object
reports the new value back right after its confirmation (cause "return info remote").

No `from __future__ import annotations` here: c104 checks callback annotations as objects.
"""

import asyncio
import datetime
import json
import logging
import math
import os
from dataclasses import dataclass
from typing import SupportsFloat, SupportsInt, TypeVar, cast

import c104

from drivers.base import to_engineering, to_raw
from fwsim.frontend import FrontEnd
from fwsim.physics import Microgrid, UnknownQuantity
from gateway.config import DerType
from gateway.mapping import Device, Point, Quantity
from gateway.protocols.iec104 import Iec104Address, Kind, TypeId
from gateway.units import to_canonical

log = logging.getLogger(__name__)

QUALITY_ENV = "FWSIM_IEC104_QUALITY"
TICK_MS = 100
NORMALIZED_MAX = 32767 / 32768

_QDS = {"OV": 0x01, "BL": 0x10, "SB": 0x20, "NT": 0x40, "IV": 0x80}
_BCR = {
    "CY": c104.BinaryCounterQuality.Carry.value,
    "CA": c104.BinaryCounterQuality.Adjusted.value,
    "IV": c104.BinaryCounterQuality.Invalid.value,
}


def injected_quality(device: Device, env: str | None) -> dict[str, set[str]]:
    """Quality flags to force per point id, from FWSIM_IEC104_QUALITY (JSON)."""
    if not env:
        return {}
    try:
        raw = json.loads(env)
        if not isinstance(raw, dict):
            raise ValueError("must be a JSON object of point id -> flags")
        out = {str(pid): set(str(flags).upper().split()) for pid, flags in raw.items()}
    except ValueError as exc:
        raise ValueError(f"{QUALITY_ENV}: {exc}") from exc
    known = {p.id for p in device.points}
    for pid, flags in out.items():
        unknown = flags - _QDS.keys() - _BCR.keys()
        if unknown:
            raise ValueError(f"{QUALITY_ENV}: unknown flags {sorted(unknown)} for {pid!r}")
    return {pid: flags for pid, flags in out.items() if pid in known}


@dataclass
class _Monitor:
    point: Point
    type_id: TypeId
    c104_point: c104.Point
    spontaneous: bool
    forced: frozenset[str]
    last: float | int | bool | None = None
    last_bits: int = -1


def _spontaneous(type_id: TypeId) -> bool:
    kind = type_id.kind
    return (type_id.time_tagged and kind is not Kind.COUNTER) or kind.binary


def _moved(old: float | int | bool | None, new: float | int | bool | None) -> bool:
    """A change worth a spontaneous transmission (0.2 % deadband for analog values)."""
    if old is None or new is None or isinstance(new, bool) or isinstance(old, bool):
        return old != new
    return abs(new - old) > max(1e-3, 2e-3 * abs(old))


def measured_raw(point: Point, kind: Kind, value: float) -> tuple[float | int | bool, int]:
    """The raw value of a monitoring object and its QDS/BCR bits (OV/CY when clamped)."""
    if kind.binary:
        return value >= 0.5, 0
    raw = float(to_raw(point, value))
    if kind is Kind.NORMALIZED:
        clamped = min(max(raw, -1.0), NORMALIZED_MAX)
        return clamped, _QDS["OV"] if clamped != raw else 0
    if kind is Kind.SCALED:
        scaled = min(max(round(raw), -32768), 32767)
        return scaled, _QDS["OV"] if scaled != round(raw) else 0
    if kind is Kind.COUNTER:
        total = round(raw)
        wrapped = (total + 2**31) % 2**32 - 2**31
        return wrapped, _BCR["CY"] if wrapped != total else 0
    return raw, 0


Q = TypeVar("Q", c104.Quality, c104.BinaryCounterQuality)


def _flags(empty: Q, bits: int) -> Q:
    """The c104 flag set with these bits (c104 takes the bit value; its stub omits it)."""
    return type(empty)(bits)  # type: ignore[call-arg]


def _info(
    type_id: TypeId, raw: float | int | bool, bits: int, at: datetime.datetime | None
) -> c104.Information:
    kind = type_id.kind
    recorded = at if type_id.time_tagged else None
    if kind is Kind.COUNTER:
        return c104.BinaryCounterInfo(
            counter=int(raw),
            sequence=c104.UInt5(0),
            quality=_flags(c104.BinaryCounterQuality(), bits),
            recorded_at=recorded,
        )
    q = _flags(c104.Quality(), bits)
    if kind is Kind.SINGLE:
        return c104.SingleInfo(on=bool(raw), quality=q, recorded_at=recorded)
    if kind is Kind.DOUBLE:
        state = c104.Double.ON if raw else c104.Double.OFF
        return c104.DoubleInfo(state=state, quality=q, recorded_at=recorded)
    if kind is Kind.NORMALIZED:
        actual = c104.NormalizedFloat(float(raw))
        return c104.NormalizedInfo(actual=actual, quality=q, recorded_at=recorded)
    if kind is Kind.SCALED:
        return c104.ScaledInfo(actual=c104.Int16(int(raw)), quality=q, recorded_at=recorded)
    return c104.ShortInfo(actual=float(raw), quality=q, recorded_at=recorded)


class Iec104FrontEnd(FrontEnd):
    def __init__(self, device: Device, grid: Microgrid, host: str, port: int) -> None:
        super().__init__(device, grid, host, port)
        self._forced = injected_quality(device, os.environ.get(QUALITY_ENV))
        self._clock_offset = datetime.timedelta(0)  # set by clock synchronisation
        self._server: c104.Server | None = None
        self._monitors: list[_Monitor] = []
        self._by_ioa: dict[tuple[int, int], _Monitor] = {}
        self._commands: dict[tuple[int, int], Point] = {}

    async def start(self) -> None:
        server = c104.Server(ip=self.host, port=self.port, tick_rate_ms=TICK_MS)
        server.on_clock_sync(callable=self._on_clock_sync)
        report_ms = max(TICK_MS, round(self.device.poll_interval * 1000 / TICK_MS) * TICK_MS)
        for point in self.device.points:
            addr = self.device.address_of(point.id)
            assert isinstance(addr, Iec104Address)
            station = server.get_station(addr.common_address) or server.add_station(
                common_address=addr.common_address
            )
            if station is None:
                raise RuntimeError(f"cannot add station {addr.common_address}")
            monitor = None
            if addr.monitor is not None:
                monitor = self._add_monitor(station, point, addr.monitor.ioa, addr, report_ms)
            if addr.command is not None:
                self._add_command(station, point, addr, monitor)
        self._server = server
        self._publish(transmit=False)
        try:
            await asyncio.to_thread(server.start)
        except RuntimeError as exc:
            raise RuntimeError(
                f"device {self.device.id!r}: cannot serve IEC 104 on {self.host}:{self.port}: {exc}"
            ) from exc
        if not server.is_running:
            raise RuntimeError(f"device {self.device.id!r}: IEC 104 server did not start")

    def _add_monitor(
        self, station: c104.Station, point: Point, ioa: int, addr: Iec104Address, report_ms: int
    ) -> _Monitor:
        assert addr.monitor is not None
        type_id = addr.monitor.type_id
        spontaneous = _spontaneous(type_id)
        periodic = type_id.kind.measured and not spontaneous
        c_point = station.add_point(
            io_address=ioa,
            type=getattr(c104.Type, type_id.name),
            report_ms=report_ms if periodic else 0,
        )
        if c_point is None:
            raise RuntimeError(f"cannot add {addr}")
        monitor = _Monitor(
            point, type_id, c_point, spontaneous, frozenset(self._forced.get(point.id, ()))
        )
        self._monitors.append(monitor)
        self._by_ioa[(addr.common_address, ioa)] = monitor
        return monitor

    def _add_command(
        self, station: c104.Station, point: Point, addr: Iec104Address, monitor: _Monitor | None
    ) -> None:
        assert addr.command is not None
        mode = c104.CommandMode.SELECT_AND_EXECUTE if point.sbo else c104.CommandMode.DIRECT
        related = None if monitor is None else monitor.c104_point.io_address
        c_point = station.add_point(
            io_address=addr.command.ioa,
            type=getattr(c104.Type, addr.command.type_id.name),
            related_io_address=related,
            related_io_autoreturn=related is not None,
            command_mode=mode,
        )
        if c_point is None:
            raise RuntimeError(f"cannot add {addr}")
        c_point.on_receive(callable=self._on_command)
        self._commands[(addr.common_address, addr.command.ioa)] = point

    async def refresh(self) -> None:
        self._publish(transmit=True)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            try:
                await asyncio.to_thread(server.stop)
            except Exception:  # stop never raises
                log.exception("IEC 104 server %s:%d did not stop cleanly", self.host, self.port)

    # -- monitoring -------------------------------------------------------------------

    def _publish(self, transmit: bool) -> None:
        """Copy the model into the served objects; send spontaneous ones that moved."""
        now = self._clock()
        for m in self._monitors:
            raw, bits = self._sample(m)
            if raw == m.last and bits == m.last_bits:
                continue
            # a spontaneous object keeps its last reported value within the deadband
            if m.spontaneous and bits == m.last_bits and not _moved(m.last, raw):
                continue
            m.last, m.last_bits = raw, bits
            m.c104_point.info = _info(m.type_id, 0 if raw is None else raw, bits, now)
            if transmit and m.spontaneous:
                m.c104_point.transmit(cause=c104.Cot.SPONTANEOUS)

    def _sample(self, m: _Monitor) -> tuple[float | int | bool | None, int]:
        counter = m.type_id.kind is Kind.COUNTER
        table = _BCR if counter else _QDS
        forced = sum(table.get(f, 0) for f in m.forced)
        p = m.point
        try:
            value = self.values.value(p)
        except UnknownQuantity:  # a point made to fail
            return None, forced | table["IV"]
        if not math.isfinite(value):
            return None, forced | table["IV"]
        raw, bits = measured_raw(p, m.type_id.kind, value)
        return raw, forced | bits

    # -- c104 callbacks (on c104's threads; short, no asyncio) ---------------------------

    def _clock(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC) + self._clock_offset

    def _on_clock_sync(
        self, server: c104.Server, ip: str, date_time: datetime.datetime
    ) -> c104.ResponseState:
        # c104 gives the master's time as a naive local time
        now = datetime.datetime.now(datetime.UTC)
        self._clock_offset = date_time.astimezone(datetime.UTC) - now
        return c104.ResponseState.SUCCESS

    def _on_command(
        self, point: c104.Point, previous_info: c104.Information, message: c104.IncomingMessage
    ) -> c104.ResponseState:
        mapped = self._commands.get((message.common_address, point.io_address))
        if mapped is None:
            return c104.ResponseState.FAILURE
        refusal = self.apply_command(mapped, point.value)
        if refusal:
            log.info("IEC 104 %s: refused %s: %s", self.device.id, mapped.id, refusal)
            return c104.ResponseState.FAILURE
        return c104.ResponseState.SUCCESS

    def apply_command(self, point: Point, raw_value: object) -> str:
        """Apply one command to the model; the reason for refusing it, or ''."""
        if isinstance(raw_value, c104.Double):
            if raw_value not in (c104.Double.ON, c104.Double.OFF):
                return f"double command state {raw_value.name} is not on/off"
            value: float = 1.0 if raw_value == c104.Double.ON else 0.0
        elif isinstance(raw_value, bool):
            value = 1.0 if raw_value else 0.0
        elif isinstance(raw_value, c104.Int16):
            value = float(to_engineering(point, int(cast(SupportsInt, raw_value))) or 0.0)
        elif isinstance(raw_value, c104.NormalizedFloat):
            value = float(to_engineering(point, float(cast(SupportsFloat, raw_value))) or 0.0)
        elif isinstance(raw_value, float | int):
            value = float(to_engineering(point, raw_value) or 0.0)
        else:
            return f"command value {raw_value!r} not understood"
        refusal = self._out_of_range(point, value)
        if refusal:
            return refusal
        try:
            self.values.write(point, value)
        except UnknownQuantity as exc:  # a point made to fail
            return str(exc)
        monitor = self._return_info(point)
        if monitor is not None:  # c104 sends it back right after the confirmation
            raw, bits = self._sample(monitor)
            if raw is not None:
                monitor.last, monitor.last_bits = raw, bits
                monitor.c104_point.info = _info(monitor.type_id, raw, bits, self._clock())
        return ""

    def _return_info(self, point: Point) -> _Monitor | None:
        addr = self.device.address_of(point.id)
        assert isinstance(addr, Iec104Address)
        if addr.monitor is None:
            return None
        return self._by_ioa.get((addr.common_address, addr.monitor.ioa))

    def _out_of_range(self, point: Point, value: float) -> str:
        if point.limits is not None:
            problem = point.limits.violation(value)
            if problem:
                return problem
        model = self.grid.ders.get(point.der or "")
        if model is None:
            return ""
        value = to_canonical(value, point.unit, point.quantity.value)  # ratings are in kW
        r = model.der.ratings
        if point.quantity is Quantity.ACTIVE_POWER_SETPOINT:
            if not r.p_min_kw <= value <= r.p_max_kw:
                return f"{value} kW outside the rating {r.p_min_kw}..{r.p_max_kw} kW"
            stable = r.min_stable_kw
            if model.der.type is DerType.GENERATOR and stable and 0 < value < stable:
                return f"{value} kW below the minimum stable generation {stable} kW"
        if point.quantity is Quantity.ACTIVE_POWER_LIMIT and not 0 <= value <= 100:
            return f"limit {value} % outside 0..100 %"
        return ""
