"""A DLMS/COSEM meter served over TCP (WRAPPER framing, logical-name referencing).

The meter serves the COSEM objects its mapping-file device addresses, fed from the
simulated microgrid:

- Data (1), Register (3) and Extended register (4) carry the value of the point's DER and
  quantity. Registers hold integers in the meter's own unit and scaler (energy in Wh,
  power in W, voltage in 0.1 V, ...), as real meters do; energy a DER model does not count
  itself is integrated by the meter. Extended registers stamp each value with its time.
- Demand register (5) averages its quantity over 15-minute periods.
- Clock (8) at 0.0.1.0.0.255 runs on simulated time.
- A load profile (Profile Generic at the device's `profile_obis`) captures the clock and
  every energy register each 15 minutes of simulated time; it answers selective access by
  range and by entry.
- Disconnect control (70) switches its DER off (remote_disconnect, m1) and on again
  (remote_reconnect, m2) in the physics model; it behaves like control mode 1.
- Limiter (71) monitors the meter's active power register: above `threshold_active` for
  `min_over_threshold_duration` seconds it opens the disconnector (the meter trips,
  control state ready_for_reconnection). threshold_normal and the durations are writable.
- The value (attribute 2) of a Data or Register object whose point the mapping declares
  writable takes writes, applied to the model like any front end's set point (a DER
  controller that speaks COSEM).

Authentication follows the device options: none, low (the password file) or high
(HLS-GMAC with the keys file, every APDU ciphered with suite 0). A client offering another
level is refused. gurux-dlms's server defects are covered in `drivers.dlms.dlms_shims`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gurux_dlms import GXByteBuffer, GXDateTime
from gurux_dlms.enums import AccessMode, DataType, MethodAccessMode, Security, SourceDiagnostic
from gurux_dlms.enums import Authentication as GxAuthentication
from gurux_dlms.GXCiphering import GXCiphering
from gurux_dlms.internal._GXCommon import _GXCommon
from gurux_dlms.objects import (
    GXDLMSCaptureObject,
    GXDLMSClock,
    GXDLMSData,
    GXDLMSDisconnectControl,
    GXDLMSLimiter,
    GXDLMSObject,
    GXDLMSProfileGeneric,
)
from gurux_dlms.objects.enums import ControlMode, ControlState

from drivers.base import to_engineering, to_raw
from drivers.dlms.dlms_shims import (
    AssociationLN,
    DemandRegister,
    ExtendedRegister,
    Register,
    ShimmedServer,
)
from drivers.dlms.protocol import (
    DLMS_UNITS,
    Authentication,
    CosemClass,
    DlmsAddress,
    DlmsOptions,
    Obis,
)
from fwsim.frontend import FrontEnd
from fwsim.physics import Microgrid, UnknownQuantity
from fwsim.points import PointValues
from gateway.mapping import Device, Point, Quantity
from gateway.units import DIMENSIONS, conversion_factor, from_canonical

log = logging.getLogger(__name__)

PROFILE_PERIOD_S = 900
PROFILE_ENTRIES = 96 * 31
DEMAND_PERIOD_S = 900
CLOCK_OBIS = "0.0.1.0.0.255"
#: a WRAPPER connection without requests for this long is closed (real meters do too)
INACTIVITY_TIMEOUT_S = 120.0
_WRAPPER_HEADER = 8

#: point unit dimension -> (DLMS unit code, scaler, data type) of the meter's registers
_NATIVE: dict[str, tuple[int, int, DataType]] = {
    "active_energy": (30, 0, DataType.UINT32),
    "reactive_energy": (32, 0, DataType.UINT32),
    "apparent_energy": (31, 0, DataType.UINT32),
    "active_power": (27, 0, DataType.INT32),
    "reactive_power": (29, 0, DataType.INT32),
    "apparent_power": (28, 0, DataType.INT32),
    "voltage": (35, -1, DataType.UINT32),
    "current": (33, -2, DataType.INT32),
    "frequency": (44, -2, DataType.UINT16),
    "ratio": (56, -1, DataType.INT32),
    "temperature": (9, -1, DataType.INT32),
    "time": (7, 0, DataType.UINT32),
    "none": (255, 0, DataType.INT32),
}
_ENERGY = {
    Quantity.ENERGY_IMPORT: (Quantity.ACTIVE_POWER, -1.0),
    Quantity.ENERGY_EXPORT: (Quantity.ACTIVE_POWER, 1.0),
    Quantity.REACTIVE_ENERGY_IMPORT: (Quantity.REACTIVE_POWER, -1.0),
    Quantity.REACTIVE_ENERGY_EXPORT: (Quantity.REACTIVE_POWER, 1.0),
}
_LIMITER_WRITABLE = {4, 5, 6, 7}


def _gx_time(t: datetime) -> GXDateTime:
    return GXDateTime(t.astimezone(UTC))


class Source:
    """The meter-side value of one point: the model's value in the point's raw terms."""

    def __init__(self, point: Point, meter: Meter) -> None:
        self.point = point
        self.meter = meter

    def value(self) -> float:
        point = self.point
        counted = self.meter.counted(point)
        if counted is not None:
            engineering = from_canonical(counted, point.quantity.value, point.unit)
        else:
            engineering = self.meter.values.value(point)
        raw = to_raw(point, engineering)
        return float(raw)


@dataclass
class Scaled:
    """A register's native unit: raw integer = value(point unit) * factor / 10**scaler."""

    unit: int
    scaler: int
    data_type: DataType
    factor: float

    @classmethod
    def for_point(cls, point: Point) -> Scaled:
        dimension = DIMENSIONS[point.unit][0]
        unit, scaler, data_type = _NATIVE[dimension]
        qudt = DLMS_UNITS.get(unit)
        factor = conversion_factor(point.unit, qudt) if qudt is not None else 1.0
        return cls(unit, scaler, data_type, factor)

    def value(self, raw: int) -> float:
        """The inverse of `raw`."""
        return float(raw * 10**self.scaler / self.factor)

    def raw(self, value: float) -> int:
        number = round(value * self.factor / 10**self.scaler)
        if self.data_type in (DataType.UINT32, DataType.UINT16):
            number = max(number, 0)
        return int(number)


@dataclass
class _Demand:
    obj: DemandRegister
    source: Source
    scaled: Scaled
    period_start: datetime | None = None
    integral: float = 0.0
    seconds: float = 0.0


@dataclass
class _Disconnector:
    obj: GXDLMSDisconnectControl
    der: str | None

    def apply(self, meter: Meter, state: ControlState) -> None:
        self.obj.controlState = state
        self.obj.outputState = state == ControlState.CONNECTED
        if self.der is not None:
            meter.apply(self.der, Quantity.SWITCH, 1.0 if self.obj.outputState else 0.0)


@dataclass
class _Limiter:
    obj: GXDLMSLimiter
    der: str | None
    over_since: datetime | None = None


@dataclass
class _Profile:
    obj: GXDLMSProfileGeneric
    columns: list[tuple[GXDLMSObject, int]] = field(default_factory=list)
    last_time: datetime | None = None
    last_values: list[float] = field(default_factory=list)


class Meter:
    """The COSEM objects of one meter and what drives them. Runs on the event loop."""

    def __init__(self, device: Device, grid: Microgrid) -> None:
        self.device = device
        self.grid = grid
        self.values = PointValues(grid)
        options = device.typed_options
        assert isinstance(options, DlmsOptions)
        self.options = options
        self.clock = GXDLMSClock(CLOCK_OBIS)
        self.clock.clockBase = 1  # internal crystal
        self.objects: dict[tuple[int, Obis], GXDLMSObject] = {
            (int(CosemClass.CLOCK), Obis.parse(CLOCK_OBIS)): self.clock
        }
        self._plain: list[tuple[GXDLMSObject, Source, Scaled | None]] = []
        self._extended: list[ExtendedRegister] = []
        self._demands: list[_Demand] = []
        self._disconnectors: list[_Disconnector] = []
        self._limiters: list[_Limiter] = []
        self._energy: dict[tuple[str, Quantity], float] = {}
        self._power_registers: dict[str, Register] = {}
        self._last_step: datetime | None = None
        self._build()
        self.profile = self._build_profile()
        self.refresh()

    # --- building -----------------------------------------------------------------------

    def _build(self) -> None:
        groups: dict[tuple[CosemClass, Obis], list[tuple[Point, DlmsAddress]]] = {}
        for point in self.device.points:
            address = self.device.address_of(point.id)
            assert isinstance(address, DlmsAddress)
            groups.setdefault((address.class_id, address.obis), []).append((point, address))
        for (class_id, obis), members in groups.items():
            builder = {
                CosemClass.DATA: self._data,
                CosemClass.REGISTER: self._register,
                CosemClass.EXTENDED_REGISTER: self._register,
                CosemClass.DEMAND_REGISTER: self._demand,
                CosemClass.CLOCK: lambda *_: None,
                CosemClass.PROFILE_GENERIC: lambda *_: None,
                CosemClass.DISCONNECT_CONTROL: self._disconnect_control,
                CosemClass.LIMITER: lambda *_: None,  # after the registers it monitors
            }[class_id]
            builder(class_id, obis, members)
        for (class_id, obis), members in groups.items():
            if class_id is CosemClass.LIMITER:
                self._limiter(obis, members)

    def _value_point(self, members: list[tuple[Point, DlmsAddress]], *attrs: int) -> Point:
        for point, address in members:
            if address.attribute in attrs:
                return point
        return members[0][0]

    def _data(self, _cls: CosemClass, obis: Obis, members: list[tuple[Point, DlmsAddress]]) -> None:
        point = self._value_point(members, 2)
        obj = GXDLMSData(str(obis))
        is_flag = point.quantity in (Quantity.STATUS, Quantity.SWITCH)
        obj.setDataType(2, DataType.BOOLEAN if is_flag else DataType.FLOAT64)
        self.objects[(1, obis)] = obj
        self._plain.append((obj, Source(point, self), None))

    def _register(
        self, class_id: CosemClass, obis: Obis, members: list[tuple[Point, DlmsAddress]]
    ) -> None:
        point = self._value_point(members, 2)
        scaled = Scaled.for_point(point)
        obj: Register | ExtendedRegister
        if class_id is CosemClass.REGISTER:
            obj = Register(str(obis))
        else:
            obj = ExtendedRegister(str(obis))
            obj.status = 0
            obj.setDataType(4, DataType.UINT8)
            self._extended.append(obj)
        obj.set_scaler(scaled.scaler, scaled.unit)
        obj.setDataType(2, scaled.data_type)
        self.objects[(int(class_id), obis)] = obj
        self._plain.append((obj, Source(point, self), scaled))
        monitorable = class_id is CosemClass.REGISTER and point.quantity is Quantity.ACTIVE_POWER
        if monitorable and point.der is not None:
            self._power_registers.setdefault(point.der, obj)

    def _demand(
        self, _cls: CosemClass, obis: Obis, members: list[tuple[Point, DlmsAddress]]
    ) -> None:
        point = self._value_point(members, 2, 3)
        scaled = Scaled.for_point(point)
        obj = DemandRegister(str(obis))
        obj.set_scaler(scaled.scaler, scaled.unit)
        for index in (2, 3):
            obj.setDataType(index, scaled.data_type)
        obj.status = 0
        obj.setDataType(5, DataType.UINT8)
        obj.period = DEMAND_PERIOD_S
        obj.numberOfPeriods = 1
        obj.currentAverageValue = 0
        obj.lastAverageValue = 0
        self.objects[(5, obis)] = obj
        self._demands.append(_Demand(obj, Source(point, self), scaled))

    def _disconnect_control(
        self, _cls: CosemClass, obis: Obis, members: list[tuple[Point, DlmsAddress]]
    ) -> None:
        obj = GXDLMSDisconnectControl(str(obis))
        obj.controlMode = ControlMode.MODE_1
        obj.controlState = ControlState.CONNECTED
        obj.outputState = True
        self.objects[(70, obis)] = obj
        der = next((p.der for p, _ in members if p.der is not None), None)
        self._disconnectors.append(_Disconnector(obj, der))

    def _limiter(self, obis: Obis, members: list[tuple[Point, DlmsAddress]]) -> None:
        obj = GXDLMSLimiter(str(obis))
        der = next((p.der for p, _ in members if p.der is not None), None)
        monitored = self._power_registers.get(der) if der is not None else None
        data_type = DataType.INT32
        if monitored is not None:
            obj.monitoredValue = monitored
            obj.monitoredAttributeIndex = 2
            data_type = monitored.getDataType(2)
        for index in (3, 4, 5):
            obj.setDataType(index, data_type)
        obj.thresholdNormal = obj.thresholdActive = 2**31 - 1  # no limit until one is set
        obj.thresholdEmergency = 2**31 - 1
        obj.minOverThresholdDuration = 60
        obj.minUnderThresholdDuration = 60
        obj.emergencyProfileActive = False
        self.objects[(71, obis)] = obj
        self._limiters.append(_Limiter(obj, der))

    def _build_profile(self) -> _Profile | None:
        energy = [
            (obj, 2)
            for obj, source, _ in self._plain
            if isinstance(obj, Register) and source.point.quantity in _ENERGY
        ]
        if not energy:
            return None
        obis = self.options.profile
        pg = GXDLMSProfileGeneric(str(obis))
        columns: list[tuple[GXDLMSObject, int]] = [(self.clock, 2), *energy]
        for obj, attribute in columns:
            pg.captureObjects.append((obj, GXDLMSCaptureObject(attribute, 0)))
        pg.capturePeriod = PROFILE_PERIOD_S
        pg.profileEntries = PROFILE_ENTRIES
        pg.sortObject = self.clock
        pg.sortObjectAttributeIndex = 2
        self.objects[(7, obis)] = pg
        return _Profile(pg, columns)

    # --- the model ----------------------------------------------------------------------

    def counted(self, point: Point) -> float | None:
        """Energy the meter integrates itself for this point (kWh, kvarh), if it does."""
        if point.der is None:
            return None
        return self._energy.get((point.der, point.quantity))

    def apply(self, der: str, quantity: Quantity, value: float) -> None:
        try:
            self.grid.apply(der, quantity, value)
        except UnknownQuantity as exc:
            log.warning("meter %s: %s", self.device.id, exc)

    def _integrate(self, dt_s: float) -> None:
        """Energy the DER models do not count: the meter integrates its power."""
        for obj, source, _ in self._plain:
            der, quantity = source.point.der, source.point.quantity
            if der is None or quantity not in _ENERGY or not isinstance(obj, Register):
                continue
            key = (der, quantity)
            if key not in self._energy:
                try:
                    self.grid.value(der, quantity)
                    continue  # the model counts this energy itself
                except UnknownQuantity:
                    self._energy[key] = 0.0
            power_quantity, sign = _ENERGY[quantity]
            power = self.grid.value(der, power_quantity) * sign  # into the metered asset
            self._energy[key] += max(power, 0.0) * dt_s / 3600

    # --- each tick ----------------------------------------------------------------------

    def refresh(self) -> None:
        now = self.grid.clock.now()
        dt = (now - self._last_step).total_seconds() if self._last_step else 0.0
        self._last_step = now
        self._integrate(dt)
        self.clock.time = _gx_time(now)
        for obj, source, scaled in self._plain:
            try:
                value = source.value()
            except UnknownQuantity as exc:
                log.debug("meter %s: %s", self.device.id, exc)
                continue
            if scaled is None:
                is_flag = obj.getDataType(2) == DataType.BOOLEAN
                obj.value = value >= 0.5 if is_flag else value
            else:
                obj.value = scaled.raw(value)
        for ext in self._extended:
            ext.captureTime = _gx_time(now)
        for demand in self._demands:
            self._average(demand, now, dt)
        for limiter in self._limiters:
            self._supervise(limiter, now)
        if self.profile is not None:
            self._capture(self.profile, now)

    def _average(self, demand: _Demand, now: datetime, dt: float) -> None:
        start = datetime.fromtimestamp(
            math.floor(now.timestamp() / DEMAND_PERIOD_S) * DEMAND_PERIOD_S, UTC
        )
        try:
            value = demand.source.value()
        except UnknownQuantity:
            return
        if demand.period_start is None:
            demand.period_start = start
        if start > demand.period_start:  # a period ended: its average becomes the last
            if demand.seconds > 0:
                demand.obj.lastAverageValue = demand.scaled.raw(demand.integral / demand.seconds)
                demand.obj.captureTime = _gx_time(start)
            demand.period_start, demand.integral, demand.seconds = start, 0.0, 0.0
        demand.integral += value * dt
        demand.seconds += dt
        current = demand.integral / demand.seconds if demand.seconds > 0 else value
        demand.obj.currentAverageValue = demand.scaled.raw(current)
        demand.obj.startTimeCurrent = _gx_time(demand.period_start)

    def _supervise(self, limiter: _Limiter, now: datetime) -> None:
        obj = limiter.obj
        monitored = obj.monitoredValue
        disconnector = self._disconnector_for(limiter.der)
        connected = disconnector is None or disconnector.obj.outputState
        if monitored is None or monitored.value is None or not connected:
            limiter.over_since = None
            return
        if monitored.value > obj.thresholdActive:
            limiter.over_since = limiter.over_since or now
            held = (now - limiter.over_since).total_seconds()
            if held >= (obj.minOverThresholdDuration or 0):
                log.info("meter %s: limiter %s tripped", self.device.id, obj.logicalName)
                limiter.over_since = None
                if disconnector is not None:
                    disconnector.apply(self, ControlState.READY_FOR_RECONNECTION)
                elif limiter.der is not None:
                    self.apply(limiter.der, Quantity.SWITCH, 0.0)
        else:
            limiter.over_since = None

    def _capture(self, profile: _Profile, now: datetime) -> None:
        values = [float(obj.value or 0) for obj, _ in profile.columns[1:]]
        last = profile.last_time
        if last is not None and now > last:
            boundary = math.floor(last.timestamp() / PROFILE_PERIOD_S + 1) * PROFILE_PERIOD_S
            span = (now - last).total_seconds()
            while boundary <= now.timestamp():
                # counters interpolated to the boundary, so fast time keeps exact intervals
                share = (boundary - last.timestamp()) / span
                row: list[Any] = [_gx_time(datetime.fromtimestamp(boundary, UTC))]
                for before, after in zip(profile.last_values, values, strict=True):
                    row.append(round(before + (after - before) * share))
                profile.obj.buffer.append(row)
                boundary += PROFILE_PERIOD_S
            del profile.obj.buffer[:-PROFILE_ENTRIES]
            profile.obj.entriesInUse = len(profile.obj.buffer)
        profile.last_time, profile.last_values = now, values

    def _disconnector_for(self, der: str | None) -> _Disconnector | None:
        return next((d for d in self._disconnectors if d.der == der), None)

    # --- requests -----------------------------------------------------------------------

    def _writable_value(self, obj: GXDLMSObject) -> tuple[Source, Scaled | None] | None:
        for plain, source, scaled in self._plain:
            if plain is obj and source.point.direction.writable:
                return source, scaled
        return None

    def attribute_access(self, obj: GXDLMSObject, index: int) -> AccessMode:
        if isinstance(obj, GXDLMSLimiter) and index in _LIMITER_WRITABLE:
            return AccessMode.READ_WRITE
        if index == 2 and self._writable_value(obj) is not None:
            return AccessMode.READ_WRITE
        return AccessMode.READ

    def method_access(self, obj: GXDLMSObject, index: int) -> MethodAccessMode:
        if isinstance(obj, GXDLMSDisconnectControl) and index in (1, 2):
            return MethodAccessMode.ACCESS
        if isinstance(obj, AssociationLN) and index == 1:
            return MethodAccessMode.ACCESS
        return MethodAccessMode.NO_ACCESS

    def invoke(self, obj: GXDLMSObject, index: int) -> bool:
        """Run a method the meter implements itself; False leaves it to gurux."""
        if not isinstance(obj, GXDLMSDisconnectControl):
            return False
        disconnector = next(d for d in self._disconnectors if d.obj is obj)
        state = ControlState.DISCONNECTED if index == 1 else ControlState.CONNECTED
        log.info("meter %s: %s -> %s", self.device.id, obj.logicalName, state.name)
        disconnector.apply(self, state)
        return True

    def written(self, obj: GXDLMSObject, index: int) -> None:
        if isinstance(obj, GXDLMSLimiter) and index == 4 and not obj.emergencyProfileActive:
            obj.thresholdActive = obj.thresholdNormal
        value = self._writable_value(obj) if index == 2 else None
        if value is not None:
            source, scaled = value
            raw = float(obj.value)
            if scaled is not None:
                raw = scaled.value(int(obj.value))
            engineering = to_engineering(source.point, raw)
            assert isinstance(engineering, int | float)
            self.values.write(source.point, float(engineering))

    def buffer(self, settings: Any, pg: GXDLMSProfileGeneric, selector: int, params: Any) -> bytes:
        """The profile buffer, selected by range (1) or by entry (2), encoded."""
        rows: list[list[Any]] = list(pg.buffer)
        columns = list(range(len(pg.captureObjects)))
        if selector == 1 and isinstance(params, list) and len(params) >= 3:
            start, end = _time_param(settings, params[1]), _time_param(settings, params[2])
            rows = [r for r in rows if start <= r[0].value.astimezone(UTC) <= end]
            if len(params) > 3 and params[3]:
                columns = _selected_columns(pg, params[3])
        elif selector == 2 and isinstance(params, list) and len(params) >= 2:
            first = max(int(params[0]), 1)
            last = int(params[1]) or len(rows)
            rows = rows[first - 1 : last]
        data = GXByteBuffer()
        data.setUInt8(DataType.ARRAY)
        _GXCommon.setObjectCount(len(rows), data)
        types = [obj.getDataType(co.attributeIndex) for obj, co in pg.captureObjects]
        for row in rows:
            data.setUInt8(DataType.STRUCTURE)
            _GXCommon.setObjectCount(len(columns), data)
            for i in columns:
                _GXCommon.setData(settings, data, types[i], row[i])
        return bytes(data.array())


def _time_param(settings: Any, value: Any) -> datetime:
    parsed = _GXCommon.changeType(settings, value, DataType.DATETIME)
    moment: datetime = parsed.value
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _selected_columns(pg: GXDLMSProfileGeneric, wanted: list[Any]) -> list[int]:
    out = []
    for item in wanted:
        class_id, ln, attribute = int(item[0]), _GXCommon.toLogicalName(item[1]), int(item[2])
        for i, (obj, co) in enumerate(pg.captureObjects):
            if (int(obj.objectType), obj.logicalName, co.attributeIndex) == (
                class_id,
                ln,
                attribute,
            ):
                out.append(i)
    return out


class MeterServer(ShimmedServer):
    """One association (one TCP connection) with the meter."""

    def __init__(self, meter: Meter, system_title: bytes) -> None:
        options = meter.options
        association = AssociationLN()
        level = {
            Authentication.NONE: GxAuthentication.NONE,
            Authentication.LOW: GxAuthentication.LOW,
            Authentication.HIGH: GxAuthentication.HIGH_GMAC,
        }[options.authentication]
        association.authenticationMechanismName.mechanismId = level
        super().__init__(association, list(meter.objects.values()))
        self.meter = meter
        self.level = level
        secrets = options.secrets
        if options.authentication is Authentication.HIGH:
            assert secrets.block_cipher_key is not None
            assert secrets.authentication_key is not None
            cipher = GXCiphering(bytearray(system_title))
            cipher.security = Security.AUTHENTICATION_ENCRYPTION
            cipher.blockCipherKey = bytearray(secrets.block_cipher_key.get_secret_value())
            cipher.authenticationKey = bytearray(secrets.authentication_key.get_secret_value())
            self.settings.cipher = cipher
        self._password = secrets.password.get_secret_value() if secrets.password else None

    def isTarget(self, serverAddress: int, clientAddress: int) -> bool:
        return bool(serverAddress == self.meter.options.server_address)

    def onValidateAuthentication(self, authentication: int, password: Any) -> SourceDiagnostic:
        if authentication != self.level:
            return SourceDiagnostic.NOT_RECOGNISED
        if self.level == GxAuthentication.LOW:
            given = bytes(password or b"")
            if self._password is None or not hmac.compare_digest(given, self._password):
                return SourceDiagnostic.AUTHENTICATION_FAILURE
        return SourceDiagnostic.NONE

    def onGetAttributeAccess(self, arg: Any) -> AccessMode:
        # called for every GET (onPreRead is not): the load profile is answered here
        target = arg.target
        if isinstance(target, GXDLMSProfileGeneric) and arg.index == 2:
            arg.value = self.meter.buffer(self.settings, target, arg.selector, arg.parameters)
            arg.byteArray = True
            arg.handled = True
        return self.meter.attribute_access(target, arg.index)

    def onGetMethodAccess(self, arg: Any) -> MethodAccessMode:
        return self.meter.method_access(arg.target, arg.index)

    def onPreAction(self, args: Any) -> None:
        for e in args:
            if self.meter.invoke(e.target, e.index):
                e.handled = True
                e.value = 0  # no return data

    def onPostWrite(self, args: Any) -> None:
        for e in args:
            self.meter.written(e.target, e.index)

    def onFindObject(self, objectType: Any, sn: int, ln: str) -> None:
        return None

    def onPreGet(self, args: Any) -> None:
        return None

    def onPostGet(self, args: Any) -> None:
        return None

    def onPreRead(self, args: Any) -> None:
        return None

    def onPreWrite(self, args: Any) -> None:
        return None

    def onPostAction(self, args: Any) -> None:
        return None

    def onConnected(self, connectionInfo: Any) -> None:
        log.debug("meter %s: associated", self.meter.device.id)

    def onInvalidConnection(self, connectionInfo: Any) -> None:
        log.info("meter %s: association refused", self.meter.device.id)

    def onDisconnected(self, connectionInfo: Any) -> None:
        log.debug("meter %s: released", self.meter.device.id)


class DlmsFrontEnd(FrontEnd):
    """Serves one mapped DLMS device on (host, port)."""

    def __init__(self, device: Device, grid: Microgrid, host: str, port: int) -> None:
        super().__init__(device, grid, host, port)
        self.meter = Meter(device, grid)
        self.system_title = b"SIM" + hashlib.sha256(device.id.encode()).digest()[:5]
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        sockets = self._server.sockets
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    async def refresh(self) -> None:
        self.meter.refresh()

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.close()
        if server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 2.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        server = MeterServer(self.meter, self.system_title)
        try:
            while True:
                header = await asyncio.wait_for(
                    reader.readexactly(_WRAPPER_HEADER), INACTIVITY_TIMEOUT_S
                )
                length = int.from_bytes(header[6:8], "big")
                body = await asyncio.wait_for(reader.readexactly(length), INACTIVITY_TIMEOUT_S)
                try:
                    reply = server.answer(header + body)
                except Exception:
                    log.exception("meter %s: request failed; closing", self.device.id)
                    return
                if reply:
                    writer.write(reply)
                    await asyncio.wait_for(writer.drain(), INACTIVITY_TIMEOUT_S)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()
