"""IEC 61850 MMS front end: an IED whose data model is derived from the mapping file.

The model is built with libiec61850's dynamic model API from the device's points: every
readable point's data object gets its attribute path plus `q` and `t`; every control
point becomes an APC, INC, SPC or DPC (by the point's `type`) with the control model the
mapping asks for (`sbo`, and the device option `enhanced_security`); the device's data
sets and report control blocks are created as the options list them. A data set member
that no mapped point lives in is an error, so the file cannot promise what the IED lacks.

Serving: the library's own server thread answers clients; the simulator's loop only
updates values (`refresh()`: value, `q`, and `t` when the value changed). Two rules keep
the GIL and the library's locks apart: the loop never calls `IedServer_lockDataModel`
(a control handler runs under that lock and waits for the GIL: a deadlock), and the
handlers touch no model value: the operate handler applies the value to the physics and
asks the loop to refresh. (Threadless serving was tried: the library then sends reports
only while it handles incoming data, and handling blocks 1-10 ms per call.)

Set points written as attributes (SP, CF): the bindings offer no write handler, so the
IED stores what a client writes (write access is allowed for the FCs of writable points)
and `refresh()` notices the change: inside the point's limits it goes to the model,
outside (or on a read-only point) the model is put back. The client's write is confirmed
either way, as the library answers it before the simulator sees it.

Controls: the check handler refuses a value outside the point's write limits (AddCause
Inconsistent-parameters) and a power set point while the DER is stopped (Blocked-by-process);
the control handler applies the value to the model (`PointValues.write`). A point named in
`mgms sim --fail` is served with quality invalid|failure; every other point is served
(`fwsim.points`: physics where its role is modelled, else values of its own).

Exit: the control subscribers own their handlers (`__disown__`) and are released after the
server, so nothing is freed twice when the process ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyiec61850.pyiec61850 as iec

from drivers.base import to_engineering, to_raw
from fwsim.frontend import FrontEnd
from fwsim.physics import Microgrid, UnknownQuantity
from gateway.discover.iec61850 import si_unit
from gateway.mapping import Device, Point, Quantity
from gateway.protocols.iec61850 import (
    ControlCdc,
    DataType,
    Fc,
    Iec61850Address,
    Iec61850Options,
    ObjectRef,
)

log = logging.getLogger(__name__)


_FC = {
    Fc.MX: iec.IEC61850_FC_MX,
    Fc.ST: iec.IEC61850_FC_ST,
    Fc.SP: iec.IEC61850_FC_SP,
    Fc.CF: iec.IEC61850_FC_CF,
}
_LEAF_TYPE = {
    DataType.FLOAT32: iec.IEC61850_FLOAT32,
    DataType.INT32: iec.IEC61850_INT32,
    DataType.BOOL: iec.IEC61850_BOOLEAN,
    DataType.DBPOS: iec.IEC61850_CODEDENUM,
}
_CTL_MODEL = {
    (False, False): iec.CDC_CTL_MODEL_DIRECT_NORMAL,
    (True, False): iec.CDC_CTL_MODEL_SBO_NORMAL,
    (False, True): iec.CDC_CTL_MODEL_DIRECT_ENHANCED,
    (True, True): iec.CDC_CTL_MODEL_SBO_ENHANCED,
}
_SETPOINTS = (Quantity.ACTIVE_POWER_SETPOINT, Quantity.REACTIVE_POWER_SETPOINT)
_GOOD = iec.QUALITY_VALIDITY_GOOD
_FAILED = iec.QUALITY_VALIDITY_INVALID | iec.QUALITY_DETAIL_FAILURE


@dataclass
class _Served:
    """A point's place in the model and how to render it."""

    point: Point
    address: Iec61850Address
    value: Any  # the DataAttribute holding the value
    quality: Any | None
    time: Any | None
    known: bool  # the physics has a value for it
    last: float | bool | None = None


class _ModelBuilder:
    """Creates model nodes on demand, each once, from object references."""

    def __init__(self, ied_name: str) -> None:
        self.model = iec.IedModel_create(ied_name)
        self._nodes: dict[str, Any] = {}

    def node(self, reference: str) -> Any:
        node = self._nodes.get(reference)
        if node is None:
            node = iec.IedModel_getModelNodeByObjectReference(self.model, reference)
        return node

    def logical_node(self, ld: str, ln: str) -> Any:
        key = f"{ld}/{ln}"
        if key not in self._nodes:
            device = self._nodes.get(ld)
            if device is None:
                device = iec.LogicalDevice_createEx(ld, self.model, ld)
                self._nodes[ld] = device
                lln0 = iec.LogicalNode_create("LLN0", device)
                self._nodes[f"{ld}/LLN0"] = lln0
                iec.CDC_ENS_create("Beh", iec.toModelNode(lln0), 0)
            if key not in self._nodes:
                self._nodes[key] = iec.LogicalNode_create(ln, device)
        return self._nodes[key]

    def data_object(self, obj: ObjectRef) -> Any:
        """The (nested) data object, created with plain DataObjects where missing."""
        parent = iec.toModelNode(self.logical_node(obj.ld, obj.ln))
        reference = f"{obj.ld}/{obj.ln}"
        for name in obj.data_object:
            reference += f".{name}"
            node = self._nodes.get(reference)
            if node is None:
                node = iec.DataObject_create(name, parent, 0)
                self._nodes[reference] = node
            parent = iec.toModelNode(node)
        return self._nodes[reference]

    def attribute(
        self, obj: ObjectRef, path: tuple[str, ...], fc: int, kind: int, trigger: int
    ) -> Any:
        """The attribute at `path` in `obj`; constructed attributes are made on the way,
        each with the trigger (a report's data change is seen on every level)."""
        parent = iec.toModelNode(self.data_object(obj))
        reference = str(obj)
        for i, name in enumerate(path):
            reference += f".{name}"
            leaf = i == len(path) - 1
            node = self._nodes.get(reference)
            if node is None:
                node = iec.DataAttribute_create(
                    name, parent, kind if leaf else iec.IEC61850_CONSTRUCTED, fc, trigger, 0, 0
                )
                self._nodes[reference] = node
            parent = iec.IedModel_getModelNodeByObjectReference(self.model, reference)
        return self._nodes[reference]


def _as_stored(data_type: DataType, raw: float | bool) -> float | bool:
    """The value as the model stores it (float32, int32, bool), to compare with it."""
    if data_type is DataType.FLOAT32 and not isinstance(raw, bool):
        return float(struct.unpack("<f", struct.pack("<f", raw))[0])
    if data_type is DataType.INT32 and not isinstance(raw, bool):
        return round(raw)
    return bool(raw)


def _control_value(value: Any) -> float | bool | int:
    """ctlVal as Python: an APC's is a structure around its float."""
    if iec.MmsValue_getType(value) == iec.MMS_STRUCTURE:
        value = iec.MmsValue_getElement(value, 0)
    kind = iec.MmsValue_getType(value)
    if kind == iec.MMS_FLOAT:
        return float(iec.MmsValue_toFloat(value))
    if kind == iec.MMS_BOOLEAN:
        return bool(iec.MmsValue_getBoolean(value))
    return int(iec.MmsValue_toInt32(value))


class _Check(iec.CheckHandlerForPython):  # type: ignore[misc]
    def __init__(self, decide: Callable[[float | bool | int], int | None]) -> None:
        super().__init__()
        self._decide = decide

    def trigger(self) -> None:
        try:  # an exception must never cross back into the C library
            cause = self._decide(_control_value(self._libiec61850_mms_value))
        except Exception:
            log.exception("control check failed")
            cause = iec.ADD_CAUSE_UNKNOWN
        if cause is None:
            self._libiec61850_check_handler_result = iec.CONTROL_ACCEPTED
            return
        iec.ControlAction_setAddCause(self._libiec61850_control_action, cause)
        self._libiec61850_check_handler_result = iec.CONTROL_VALUE_INVALID


class _Operate(iec.ControlHandlerForPython):  # type: ignore[misc]
    def __init__(self, apply: Callable[[float | bool | int], None]) -> None:
        super().__init__()
        self._apply = apply

    def trigger(self) -> None:
        try:
            self._apply(_control_value(self._libiec61850_mms_value))
        except Exception as exc:  # never into the C library's thread  # noqa: BLE001
            log.warning("control not applied: %s", exc)
            iec.ControlAction_setAddCause(
                self._libiec61850_control_action, iec.ADD_CAUSE_NOT_SUPPORTED
            )
            self._libiec61850_control_handler_result = iec.CONTROL_RESULT_FAILED
            return
        self._libiec61850_control_handler_result = iec.CONTROL_RESULT_OK


class Iec61850FrontEnd(FrontEnd):
    def __init__(self, device: Device, grid: Microgrid, host: str, port: int) -> None:
        super().__init__(device, grid, host, port)
        options = device.typed_options
        assert isinstance(options, Iec61850Options)
        self.options = options
        self._model: Any = None
        self._server: Any = None
        self._served: list[_Served] = []
        self._subscribers: list[Any] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    # model

    def _build(self) -> None:
        builder = _ModelBuilder(self.device.id.replace("-", "_")[:32])
        self._model = builder.model
        controls: list[tuple[Point, Iec61850Address, Any]] = []
        for point, address in self._addresses():
            if address.is_control:
                controls.append((point, address, self._control_object(builder, point, address)))
            else:
                self._served.append(self._readable(builder, point, address))
        self._data_sets(builder)
        units = self._units(builder)
        self._server = iec.IedServer_create(self._model)
        for attribute, value in units:
            iec.IedServer_updateInt32AttributeValue(self._server, attribute, value)
        for point, address, obj in controls:
            self._subscribe(point, address, obj)
            self._served.append(self._control_status(builder, point, address))
        for fc in {
            a.fc for p, a in self._addresses() if a.fc in (Fc.SP, Fc.CF) and p.direction.writable
        }:
            iec.IedServer_setWriteAccessPolicy(self._server, _FC[fc], iec.ACCESS_POLICY_ALLOW)

    def _units(self, builder: _ModelBuilder) -> list[tuple[Any, int]]:
        """`units.SIUnit` and `units.multiplier` (CF) of each data object whose values the
        IED serves in a unit with an SIUnit, as an IED describes its measurements (and as
        the demo's ICD does): what discovery reads. Attributes with their values to set."""
        out: list[tuple[Any, int]] = []
        done: set[str] = set()
        for point, address in self._addresses():
            si = si_unit(point.unit)
            described = str(address.obj) in done
            if (
                address.is_control
                or si is None
                or described
                or (point.scale, point.offset) != (1, 0)
            ):
                continue
            done.add(str(address.obj))
            for name, value in zip(("SIUnit", "multiplier"), si, strict=True):
                path = ("units", name)
                attribute = builder.attribute(
                    address.obj, path, iec.IEC61850_FC_CF, iec.IEC61850_ENUMERATED, 0
                )
                out.append((attribute, value))
        return out

    def _addresses(self) -> list[tuple[Point, Iec61850Address]]:
        out = []
        for point in self.device.points:
            address = self.device.address_of(point.id)
            assert isinstance(address, Iec61850Address)
            out.append((point, address))
        return out

    def _knows(self, point: Point, quantity: Quantity | None = None) -> bool:
        quantity = quantity or point.quantity
        return point.der is not None and self.grid.serves(point.der, quantity)

    def _readable(self, builder: _ModelBuilder, point: Point, address: Iec61850Address) -> _Served:
        fc = _FC[address.fc]
        kind, changed = _LEAF_TYPE[address.data_type], iec.TRG_OPT_DATA_CHANGED
        value = builder.attribute(address.obj, address.attribute, fc, kind, changed)
        quality = stamp = None
        if address.fc in (Fc.MX, Fc.ST):
            qchg = iec.TRG_OPT_QUALITY_CHANGED
            quality = builder.attribute(address.obj, ("q",), fc, iec.IEC61850_QUALITY, qchg)
            stamp = builder.attribute(address.obj, ("t",), fc, iec.IEC61850_TIMESTAMP, 0)
        return _Served(point, address, value, quality, stamp, point.id not in self.values.failing)

    def _control_object(
        self, builder: _ModelBuilder, point: Point, address: Iec61850Address
    ) -> Any:
        obj = address.obj
        if len(obj.data_object) != 1:
            raise ValueError(f"{self.device.id}: control {obj} must be a data object of its LN")
        parent = iec.toModelNode(builder.logical_node(obj.ld, obj.ln))
        name = obj.data_object[0]
        model = _CTL_MODEL[(point.sbo, self.options.enhanced_security)]
        model |= iec.CDC_CTL_OPTION_ORIGIN | iec.CDC_CTL_OPTION_CTL_NUM
        cdc = address.control_cdc
        if cdc is ControlCdc.APC:
            return iec.CDC_APC_create(name, parent, 0, model, False)
        if cdc is ControlCdc.INC:
            return iec.CDC_INC_create(name, parent, 0, model)
        if cdc is ControlCdc.SPC:
            return iec.CDC_SPC_create(name, parent, 0, model)
        return iec.CDC_DPC_create(name, parent, 0, model)

    def _control_status(
        self, builder: _ModelBuilder, point: Point, address: Iec61850Address
    ) -> _Served:
        base = str(address.obj)
        value = iec.toDataAttribute(builder.node(".".join((base, *address.read_attribute))))
        quality = iec.toDataAttribute(builder.node(f"{base}.q"))
        stamp = iec.toDataAttribute(builder.node(f"{base}.t"))
        status = Quantity.STATUS if point.quantity is Quantity.SWITCH else point.quantity
        served = _Served(point, address, value, quality, stamp, self._knows(point, status))
        return served

    def _data_sets(self, builder: _ModelBuilder) -> None:
        served = {(a.obj, a.read_fc) for _, a in self._addresses()}
        for data_set in self.options.data_sets:
            ld, ln = data_set.owner
            owner = builder.logical_node(ld, ln)
            created = iec.DataSet_create(data_set.name, owner)
            for obj, fc in data_set.fcds:
                n = len(obj.data_object)
                if not any(
                    (o.ld, o.ln, o.data_object[:n], f) == (obj.ld, obj.ln, obj.data_object, fc)
                    for o, f in served
                ):
                    raise ValueError(
                        f"{self.device.id}: data set {data_set.reference} member {obj}@{fc.value}"
                        " is no mapped point's data object"
                    )
                prefix = "" if obj.ld == ld else f"{obj.ld}/"
                variable = "$".join((obj.ln, fc.value, *obj.data_object))
                iec.DataSetEntry_create(created, prefix + variable, -1, None)
            name = data_set.report_name
            if name is not None:
                iec.ReportControlBlock_create(
                    name,
                    owner,
                    data_set.report,
                    data_set.buffered,
                    data_set.name,
                    1,
                    iec.TRG_OPT_DATA_CHANGED
                    | iec.TRG_OPT_QUALITY_CHANGED
                    | iec.TRG_OPT_GI
                    | iec.TRG_OPT_INTEGRITY,
                    iec.RPT_OPT_SEQ_NUM
                    | iec.RPT_OPT_TIME_STAMP
                    | iec.RPT_OPT_REASON_FOR_INCLUSION
                    | iec.RPT_OPT_DATA_SET,
                    50,
                    10000,
                )

    # controls

    def _subscribe(self, point: Point, address: Iec61850Address, obj: Any) -> None:
        subscriber = iec.ControlSubscriberForPython()
        subscriber.setIedServer(self._server)
        subscriber.setControlObject(obj)
        # the subscriber owns (and frees) its handlers: nothing is freed twice at exit
        subscriber.setCheckHandler(_Check(lambda v: self._check(point, v)).__disown__())
        subscriber.setControlHandler(_Operate(lambda v: self._operate(point, v)).__disown__())
        if not subscriber.subscribe():
            raise ValueError(
                f"{self.device.id}: control {address.obj} is served twice in this simulator "
                "(give each IED's logical devices their own names)"
            )
        self._subscribers.append(subscriber)

    def _check(self, point: Point, raw: float | bool | int) -> int | None:
        value = to_engineering(point, raw)
        if point.limits is not None and not isinstance(value, bool) and value is not None:
            problem = point.limits.violation(float(value))
            if problem:
                log.info("%s: refused %s := %s: %s", self.device.id, point.id, value, problem)
                return int(iec.ADD_CAUSE_INCONSISTENT_PARAMETERS)
        stoppable = point.der is not None and self._knows(point, Quantity.STATUS)
        if point.quantity in _SETPOINTS and stoppable:
            assert point.der is not None
            if not self.grid.value(point.der, Quantity.STATUS):
                log.info("%s: refused %s: DER %s is stopped", self.device.id, point.id, point.der)
                return int(iec.ADD_CAUSE_BLOCKED_BY_PROCESS)
        return None

    def _apply(self, point: Point, raw: float | bool | int) -> None:
        value = to_engineering(point, raw)
        assert value is not None
        self.values.write(point, float(value))
        log.info("%s: %s := %s", self.device.id, point.id, value)

    def _operate(self, point: Point, raw: float | bool | int) -> None:
        """On the library's thread: apply, and let the loop show the new status."""
        self._apply(point, raw)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._refresh)

    # serving

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            self._build()
        except BaseException:
            self._release()
            raise
        await self.refresh()
        iec.IedServer_setLocalIpAddress(self._server, self.host)
        iec.IedServer_start(self._server, self.port)
        if not iec.IedServer_isRunning(self._server):
            self._release()
            raise OSError(f"{self.device.id}: cannot serve MMS on {self.host}:{self.port}")

    async def refresh(self) -> None:
        self._refresh()

    def _refresh(self) -> None:
        server = self._server
        now_ms = int(self.grid.clock.now().timestamp() * 1000) if self._served else 0
        for served in self._served:
            point = served.point
            if not served.known:
                if served.quality is not None and served.last is None:
                    iec.IedServer_updateQuality(server, served.quality, _FAILED)
                    served.last = False
                continue
            if served.address.fc in (Fc.SP, Fc.CF) and served.last is not None:
                self._take_write(served)
            value = self.values.value(point)
            raw = _as_stored(served.address.data_type, to_raw(point, value))
            if raw == served.last:
                continue
            self._render(served, raw)
            if served.quality is not None:
                iec.IedServer_updateQuality(server, served.quality, _GOOD)
            if served.time is not None:
                iec.IedServer_updateUTCTimeAttributeValue(server, served.time, now_ms)
            served.last = raw

    def _current(self, served: _Served) -> float | bool:
        server, attribute = self._server, served.value
        data_type = served.address.data_type
        if data_type is DataType.FLOAT32:
            return float(iec.IedServer_getFloatAttributeValue(server, attribute))
        if data_type is DataType.INT32:
            return int(iec.IedServer_getInt32AttributeValue(server, attribute))
        return bool(iec.IedServer_getBooleanAttributeValue(server, attribute))

    def _take_write(self, served: _Served) -> None:
        """Apply what a client wrote into an SP/CF attribute since the last refresh."""
        written = self._current(served)
        if written == served.last:
            return
        point = served.point
        problem = None
        if not point.direction.writable:
            problem = "read-only point"
        elif point.limits is not None and not isinstance(written, bool):
            engineering = to_engineering(point, written)
            assert engineering is not None
            problem = point.limits.violation(float(engineering))
        if problem is None:
            with contextlib.suppress(UnknownQuantity):
                self._apply(point, written)
                return
            problem = "not simulated"
        log.info("%s: write %s := %s undone: %s", self.device.id, point.id, written, problem)
        served.last = None  # render the model's value again

    def _render(self, served: _Served, raw: float | bool) -> None:
        server, attribute = self._server, served.value
        data_type = served.address.data_type
        if data_type is DataType.FLOAT32:
            iec.IedServer_updateFloatAttributeValue(server, attribute, float(raw))
        elif data_type is DataType.INT32:
            iec.IedServer_updateInt32AttributeValue(server, attribute, round(raw))
        elif data_type is DataType.BOOL:
            iec.IedServer_updateBooleanAttributeValue(server, attribute, bool(raw))
        else:
            iec.IedServer_updateDbposValue(server, attribute, 2 if raw else 1)

    async def stop(self) -> None:
        if self._server is not None:
            with contextlib.suppress(Exception):
                iec.IedServer_stop(self._server)  # joins the library's thread
        self._release()

    def _release(self) -> None:
        """Server first, then the subscribers (and their handlers), then the model."""
        if self._server is not None:
            iec.IedServer_destroy(self._server)
            self._server = None
        self._subscribers.clear()
        if self._model is not None:
            iec.IedModel_destroy(self._model)
            self._model = None
        self._served.clear()


__all__ = ["Iec61850FrontEnd"]
