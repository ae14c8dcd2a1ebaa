"""The IEC 61850 client worker: one process per IED, run as
`python -m drivers.iec61850.worker`; requests on stdin, answers and reports on stdout
(see wire.py). The only client-side module that imports the libiec61850 bindings.

Why a process: the bindings' blocking calls hold the GIL for their whole duration, so in
the gateway's process one slow IED would freeze the event loop. Here a hang costs only
this process, which the driver kills after its own deadline.

One MMS association per IED carries requests and reports alike. Every idle association
costs a libiec61850 server (its default single-threaded build, as the simulator's) 10 ms
in each pass of its loop, for every client (docs/iec61850.md, "Control latency"), so the
worker keeps no second one. The library runs the report handler on the association's
receive thread, which must take the GIL; a blocking request holding the GIL while a
report arrives would wait forever for an answer that thread cannot deliver. So once
reports are enabled, requests on the association release the GIL (`unlocked`, and the
bindings' `pyWrap_` calls). The lookups the bindings offer only as GIL-holding calls
(types, data set directories, a control's model and type) are made before the reports
are enabled, for every unit and control the driver names; one that is needed later goes
over a lookup association opened for that request and closed after it.

The process ends with os._exit: destroying the bindings' subscriber objects at interpreter
exit can crash, and the OS closes the sockets anyway.
"""

from __future__ import annotations

import os
import struct
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyiec61850.pyiec61850 as iec

from drivers.iec61850 import unlocked, wire

_LINK_ERRORS = {
    iec.IED_ERROR_NOT_CONNECTED,
    iec.IED_ERROR_CONNECTION_LOST,
    iec.IED_ERROR_CONNECTION_REJECTED,
    iec.IED_ERROR_TIMEOUT,
}
_MMS_LINK_ERRORS = {
    iec.MMS_ERROR_CONNECTION_LOST,
    iec.MMS_ERROR_CONNECTION_REJECTED,
    iec.MMS_ERROR_SERVICE_TIMEOUT,
}
_FC = {
    "MX": iec.IEC61850_FC_MX,
    "ST": iec.IEC61850_FC_ST,
    "SP": iec.IEC61850_FC_SP,
    "CF": iec.IEC61850_FC_CF,
    "CO": iec.IEC61850_FC_CO,
}
_CONTROL_MODELS = {
    (False, False): iec.CONTROL_MODEL_DIRECT_NORMAL,
    (True, False): iec.CONTROL_MODEL_SBO_NORMAL,
    (False, True): iec.CONTROL_MODEL_DIRECT_ENHANCED,
    (True, True): iec.CONTROL_MODEL_SBO_ENHANCED,
}
_MODEL_NAMES = {
    iec.CONTROL_MODEL_STATUS_ONLY: "status-only",
    iec.CONTROL_MODEL_DIRECT_NORMAL: "direct-with-normal-security",
    iec.CONTROL_MODEL_SBO_NORMAL: "sbo-with-normal-security",
    iec.CONTROL_MODEL_DIRECT_ENHANCED: "direct-with-enhanced-security",
    iec.CONTROL_MODEL_SBO_ENHANCED: "sbo-with-enhanced-security",
}


OPEN_ATTEMPTS = 4


class LinkLost(Exception):
    """The association is gone; the driver reconnects."""


class Refused(Exception):
    """The IED refused this request (the connection stays usable)."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        super().__init__(message)


def _error_text(err: int) -> str:
    return f"{iec.IedClientError_toString(err)} ({err})"


def _check(err: Any, what: str) -> None:
    """Raise for an IedClientError (some bindings return it as `(None, err)`)."""
    if isinstance(err, tuple):
        err = err[-1]
    if err == iec.IED_ERROR_OK:
        return
    if err in _LINK_ERRORS:
        raise LinkLost(f"{what}: {_error_text(err)}")
    raise Refused(err, f"{what}: {_error_text(err)}")


def _float32(value: float) -> float:
    """A float32 as the shortest decimal that is the same float32 (0.1, not 0.100000001);
    a value float32 cannot hold exactly is a float64 and stays as it is."""
    try:
        packed = struct.pack("<f", value)
    except OverflowError:
        return value
    if struct.unpack("<f", packed)[0] != value:
        return value
    for digits in range(6, 10):
        short = float(f"{value:.{digits}g}")
        if struct.pack("<f", short) == packed:
            return short
    return value


# --- MMS values to JSON ---------------------------------------------------------------

Names = list[tuple[str, Any]]  # a structure's component names, each with its own Names


def _names(spec: Any) -> Names | None:
    """Component names of an MMS type specification (None for a leaf)."""
    if iec.MmsVariableSpecification_getType(spec) != iec.MMS_STRUCTURE:
        return None
    out: Names = []
    for i in range(int(iec.MmsVariableSpecification_getSize(spec))):
        child = iec.MmsVariableSpecification_getChildSpecificationByIndex(spec, i)
        out.append((str(iec.MmsVariableSpecification_getName(child)), _names(child)))
    return out


def to_json(value: Any, names: Names | None) -> Any:
    """An MmsValue as JSON (see wire.py), structures keyed by `names` when known."""
    if value is None:
        return None
    kind = iec.MmsValue_getType(value)
    if kind in (iec.MMS_STRUCTURE, iec.MMS_ARRAY):
        items = [iec.MmsValue_getElement(value, i) for i in range(iec.MmsValue_getArraySize(value))]
        if kind == iec.MMS_STRUCTURE and names is not None and len(names) == len(items):
            return {n: to_json(v, sub) for (n, sub), v in zip(names, items, strict=True)}
        return [to_json(v, None) for v in items]
    if kind == iec.MMS_BOOLEAN:
        return bool(iec.MmsValue_getBoolean(value))
    if kind == iec.MMS_INTEGER:
        return int(iec.MmsValue_toInt64(value))
    if kind == iec.MMS_UNSIGNED:
        return int(iec.MmsValue_toUint32(value))
    if kind == iec.MMS_FLOAT:
        return _float32(float(iec.MmsValue_toDouble(value)))
    if kind == iec.MMS_BIT_STRING:
        size = int(iec.MmsValue_getBitStringSize(value))
        return {"$bits": [bool(iec.MmsValue_getBitStringBit(value, i)) for i in range(size)]}
    if kind == iec.MMS_UTC_TIME:
        return {
            "$utc_ms": int(iec.MmsValue_getUtcTimeInMs(value)),
            "$tq": int(iec.MmsValue_getUtcTimeQuality(value)),
        }
    if kind in (iec.MMS_VISIBLE_STRING, iec.MMS_STRING):
        return str(iec.MmsValue_toString(value))
    if kind == iec.MMS_OCTET_STRING:
        size = int(iec.MmsValue_getOctetStringSize(value))
        return bytes(iec.MmsValue_getOctetStringOctet(value, i) for i in range(size)).hex()
    if kind == iec.MMS_DATA_ACCESS_ERROR:
        return {"$error": int(iec.MmsValue_getDataAccessError(value))}
    return {"$error": -1, "$type": str(iec.MmsValue_getTypeString(value))}


def _new_value(data_type: str, value: Any) -> Any:
    if data_type == "float32":
        return iec.MmsValue_newFloat(float(value))
    if data_type == "int32":
        return iec.MmsValue_newIntegerFromInt32(int(value))
    if data_type in ("bool", "dbpos"):  # a DPC's ctlVal is a boolean (on = true)
        return iec.MmsValue_newBoolean(bool(value))
    raise ValueError(f"unsupported data type {data_type!r}")


def _split_ref(reference: str) -> tuple[str, str]:
    """`LD/LN.Name` as the MMS domain and item (`LN$Name`)."""
    domain, _, item = reference.partition("/")
    return domain, item.replace(".", "$")


# --- reports ----------------------------------------------------------------------------


@dataclass
class _ReportTarget:
    data_set: str
    members: list[str]
    names: list[Names | None]


class _ReportHandler(iec.RCBHandler):  # type: ignore[misc]
    """Runs on a report connection's receive thread; converts and sends, nothing else."""

    def __init__(self, send: Callable[[wire.Message], None]) -> None:
        super().__init__()
        self._send = send
        self.targets: dict[str, _ReportTarget] = {}

    def trigger(self) -> None:
        try:
            report = self._client_report
            rcb = str(iec.ClientReport_getRcbReference(report))
            target = self.targets.get(rcb)
            if target is None:
                return
            values = iec.ClientReport_getDataSetValues(report)
            with_reasons = bool(iec.ClientReport_hasReasonForInclusion(report))
            out: list[Any] = []
            for i, names in enumerate(target.names):
                element = iec.MmsValue_getElement(values, i) if values else None
                included = not with_reasons or (
                    iec.ClientReport_getReasonForInclusion(report, i)
                    != iec.IEC61850_REASON_NOT_INCLUDED
                )
                out.append(to_json(element, names) if included and element else None)
            self._send(
                {
                    "report": {
                        "rcb": rcb,
                        "data_set": target.data_set,
                        "members": target.members,
                        "values": out,
                    }
                }
            )
        except Exception:  # an exception must never cross back into the C library  # noqa: BLE001
            traceback.print_exc()


# --- controls ---------------------------------------------------------------------------


class _TerminationHandler(iec.CommandTermHandler):  # type: ignore[misc]
    """Receives the CommandTermination of an enhanced-security control."""

    def __init__(self) -> None:
        super().__init__()
        self.done = threading.Event()
        self.add_cause = 0
        self.error = 0

    def trigger(self) -> None:
        try:
            err = iec.ControlObjectClient_getLastApplError(self._libiec61850_control_object_client)
            self.error, self.add_cause = int(err.error), int(err.addCause)
        except Exception:  # never into the C library's thread  # noqa: BLE001
            traceback.print_exc()
        finally:
            self.done.set()


@dataclass
class _Control:
    client: Any
    model: int
    termination: _TerminationHandler
    subscriber: Any


@dataclass
class ClientWorker:
    send: Callable[[wire.Message], None]
    con: Any = None
    reporting: bool = False  # reports may arrive on `con`: no GIL-holding request on it
    lookup_con: Any = None  # while reporting: this request's association for lookups
    names: dict[tuple[str, str], Names | None] = field(default_factory=dict)
    directories: dict[str, list[str]] = field(default_factory=dict)
    controls: dict[str, _Control] = field(default_factory=dict)
    keep: list[Any] = field(default_factory=list)  # objects the C side still points to
    host: str = ""
    port: int = 0
    request_timeout_ms: int = 1000

    def handle(self, request: wire.Message) -> wire.Message:
        op = request.get("op")
        handler = {
            wire.CONNECT: self.connect,
            wire.READ: self.read,
            wire.WRITE: self.write,
            wire.CONTROL: self.control,
            wire.REPORTS: self.enable_reports,
        }.get(str(op))
        if handler is None:
            return wire.ied_error(-1, f"unknown op {op!r}")
        try:
            return handler(request)
        except LinkLost as exc:
            return wire.link_error(str(exc))
        except Refused as exc:
            return wire.ied_error(exc.code, str(exc))
        finally:
            self._drop_lookup()

    # connection

    def _open(self) -> Any:
        """A new association, probed: about one in ten that the library reports as
        connected is dead on arrival (every request fails at once with connection-lost
        and nothing reaches the IED), so each is checked with a GetNameList and reopened."""
        err = iec.IED_ERROR_OK
        for _ in range(OPEN_ATTEMPTS):
            con = iec.IedConnection_create()
            iec.IedConnection_setConnectTimeout(con, self.request_timeout_ms)
            iec.IedConnection_setRequestTimeout(con, self.request_timeout_ms)
            _, err = iec.IedConnection_connect(con, self.host, self.port)
            if err == iec.IED_ERROR_OK:
                devices, err = iec.IedConnection_getLogicalDeviceList(con)
                if err == iec.IED_ERROR_OK:
                    iec.LinkedList_destroy(devices)
                    return con
                iec.IedConnection_close(con)
            iec.IedConnection_destroy(con)
            if err != iec.IED_ERROR_CONNECTION_LOST:
                break
        raise LinkLost(f"connect to {self.host}:{self.port}: {_error_text(err)}")

    def connect(self, request: wire.Message) -> wire.Message:
        if self.con is not None:
            return wire.ied_error(-1, "already connected")
        self.host, self.port = str(request["host"]), int(request["port"])
        self.request_timeout_ms = int(request["timeout_ms"])
        self.con = self._open()
        return {"ok": True}

    def _connected(self) -> Any:
        if self.con is None:
            raise LinkLost("not connected")
        return self.con

    def close(self) -> None:
        if self.con is not None:  # a polite release
            unlocked.close(self.con)

    def _lookup(self) -> Any:
        """The association for a GIL-holding lookup: the IED's one, or, while reports may
        arrive on it, one of this request's own (closed when the request is answered)."""
        con = self._connected()
        if not self.reporting:
            return con
        if self.lookup_con is None:
            self.lookup_con = self._open()
        return self.lookup_con

    def _drop_lookup(self) -> None:
        lookup, self.lookup_con = self.lookup_con, None
        if lookup is not None:
            iec.IedConnection_close(lookup)
            iec.IedConnection_destroy(lookup)

    # reading

    def _names_of(self, reference: str, fc: str) -> Names | None:
        key = (reference, fc)
        if key not in self.names:
            spec, err = iec.IedConnection_getVariableSpecification(
                self._lookup(), reference, _FC[fc]
            )
            _check(err, f"type of {reference}@{fc}")
            try:
                self.names[key] = _names(spec)
            finally:
                iec.MmsVariableSpecification_destroy(spec)
        return self.names[key]

    def _directory(self, reference: str) -> list[str]:
        """The data set's members as `LD/LN.DO[FC]`, as the IED reports them."""
        if reference not in self.directories:
            entries, err = iec.IedConnection_getDataSetDirectory(self._lookup(), reference, None)
            _check(err, f"directory of data set {reference}")
            members: list[str] = []
            element = iec.LinkedList_getNext(entries)
            while element:
                members.append(str(iec.toCharP(iec.LinkedList_getData(element))))
                element = iec.LinkedList_getNext(element)
            iec.LinkedList_destroy(entries)
            self.directories[reference] = members
        return self.directories[reference]

    def _member_names(self, member: str) -> Names | None:
        reference, _, fc = member.rstrip("]").partition("[")
        return self._names_of(reference, fc)

    def _read_object(self, reference: str, fc: str) -> Any:
        names = self._names_of(reference, fc)
        value, err = iec.pyWrap_IedConnection_readObject(self._connected(), reference, _FC[fc])
        _check(err, f"read {reference}@{fc}")
        try:
            return to_json(value, names)
        finally:
            iec.MmsValue_delete(value)

    def _read_data_set(self, reference: str) -> wire.Message:
        members = self._directory(reference)
        names = [self._member_names(m) for m in members]
        mms = iec.IedConnection_getMmsConnection(self._connected())
        domain, item = _split_ref(reference)
        with unlocked.data_set_values(mms, domain, item) as (values, code):
            if code in _MMS_LINK_ERRORS:
                raise LinkLost(f"read data set {reference}: {iec.MmsError_toString(code)}")
            if code != 0 or not values:
                raise Refused(code, f"read data set {reference}: {iec.MmsError_toString(code)}")
            out = [
                to_json(iec.MmsValue_getElement(values, i), names[i]) for i in range(len(members))
            ]
        return {"members": members, "values": out}

    def read(self, request: wire.Message) -> wire.Message:
        results: list[wire.Message] = []
        for unit in request["units"]:
            try:
                if unit["kind"] == "data_set":
                    results.append(self._read_data_set(str(unit["ref"])))
                else:
                    results.append({"value": self._read_object(str(unit["ref"]), str(unit["fc"]))})
            except Refused as exc:  # one refused object never fails the others
                results.append(wire.ied_error(exc.code, str(exc)))
        return {"results": results}

    # writing and controls

    def write(self, request: wire.Message) -> wire.Message:
        reference, fc = str(request["ref"]), str(request["fc"])
        value = _new_value(str(request["type"]), request["value"])
        try:
            err = iec.pyWrap_IedConnection_writeObject(self._connected(), reference, _FC[fc], value)
        finally:
            iec.MmsValue_delete(value)
        _check(err, f"write {reference}@{fc}")
        return {"ok": True}

    def _control_object(self, reference: str) -> _Control:
        control = self.controls.get(reference)
        if control is None:
            # what ControlObjectClient_create asks the IED, asked over the lookup association
            model_ref = f"{reference}.ctlModel"
            con = self._lookup()
            spec, err = iec.IedConnection_getVariableSpecification(con, reference, _FC["CO"])
            _check(err, f"type of {reference}@CO")  # link lost or no such object, precisely
            ctl_model, err = iec.IedConnection_readObject(con, model_ref, _FC["CF"])
            try:
                _check(err, f"read {model_ref}@CF")
                model_value = int(iec.MmsValue_toInt32(ctl_model))
                iec.MmsValue_delete(ctl_model)
                client = iec.ControlObjectClient_createEx(
                    reference, self._connected(), model_value, spec
                )
            finally:
                iec.MmsVariableSpecification_destroy(spec)
            if not client:
                raise Refused(
                    iec.IED_ERROR_OBJECT_DOES_NOT_EXIST, f"{reference} is not a control object"
                )
            handler = _TerminationHandler()
            subscriber = iec.CommandTermSubscriber()
            subscriber.setLibiec61850ControlObjectClient(client)
            subscriber.setEventHandler(handler)
            subscriber.subscribe()
            model = int(iec.ControlObjectClient_getControlModel(client))
            control = _Control(client, model, handler, subscriber)
            self.controls[reference] = control
        return control

    def control(self, request: wire.Message) -> wire.Message:
        reference = str(request["ref"])
        sbo, enhanced = bool(request["sbo"]), bool(request["enhanced"])
        wanted = _CONTROL_MODELS[(sbo, enhanced)]
        control = self._control_object(reference)
        if control.model != wanted:
            return {
                "result": {
                    "ok": False,
                    "stage": "model",
                    "detail": f"{reference} is {_MODEL_NAMES.get(control.model, control.model)}"
                    f" on the IED, the mapping says {_MODEL_NAMES[wanted]}",
                }
            }
        client = control.client
        iec.ControlObjectClient_setOrigin(
            client, str(request["originator"]), iec.CONTROL_ORCAT_REMOTE_CONTROL
        )
        value = _new_value(str(request["type"]), request["value"])
        try:
            return {"result": self._operate(control, value, sbo, enhanced, request)}
        finally:
            iec.MmsValue_delete(value)

    def _operate(
        self, control: _Control, value: Any, sbo: bool, enhanced: bool, request: wire.Message
    ) -> wire.Message:
        client = control.client
        control.termination.done.clear()
        if sbo:
            selected = (
                unlocked.select_with_value(client, value) if enhanced else unlocked.select(client)
            )
            if not selected:
                return self._failed(control, "select")
        if not unlocked.operate(client, value):
            return self._failed(control, "operate")
        if not enhanced:
            return {"ok": True, "stage": "operate"}
        # the receive thread runs the termination handler once this thread waits (GIL free)
        if not control.termination.done.wait(float(request["termination_timeout"])):
            return {"ok": False, "stage": "termination", "timeout": True}
        term = control.termination
        ok = term.error == 0 and term.add_cause in (0, iec.ADD_CAUSE_NONE)
        return {"ok": ok, "stage": "termination", "add_cause": term.add_cause, "error": term.error}

    def _failed(self, control: _Control, stage: str) -> wire.Message:
        if iec.IedConnection_getState(self.con) != iec.IED_STATE_CONNECTED:
            raise LinkLost(f"{stage}: connection lost")
        err = iec.ControlObjectClient_getLastApplError(control.client)
        return {
            "ok": False,
            "stage": stage,
            "add_cause": int(err.addCause),
            "error": int(err.error),
        }

    # reports

    def _prepare(self, prepare: wire.Message) -> None:
        """Types, directories and control objects of the units and controls named, asked
        while no report can arrive; one the IED refuses is asked again when it is used,
        where the refusal reaches the request that needs it."""
        for unit in prepare.get("units", []):
            ref, fc = str(unit["ref"]), str(unit["fc"])
            try:
                if unit["kind"] == "data_set":
                    for member in self._directory(ref):
                        self._member_names(member)
                else:
                    self._names_of(ref, fc)
            except Refused:
                continue
        for ref in prepare.get("controls", []):
            try:
                self._control_object(str(ref))
            except Refused:
                continue

    def enable_reports(self, request: wire.Message) -> wire.Message:
        """Install the handler and enable each RCB on the IED's association (see module doc)."""
        handler = _ReportHandler(self.send)
        self.keep.append(handler)
        con = self._connected()
        self._prepare(request.get("prepare", {}))
        for item in request["items"]:  # the lookups first, while no report can arrive
            data_set, rcb_ref = str(item["data_set"]), str(item["rcb"])
            members = self._directory(data_set)
            names = [self._member_names(m) for m in members]
            handler.targets[rcb_ref] = _ReportTarget(data_set, members, names)
        for item in request["items"]:
            data_set, rcb_ref = str(item["data_set"]), str(item["rcb"])
            rcb = iec.ClientReportControlBlock_create(rcb_ref)
            self.keep.append(rcb)
            rcb, err = iec.pyWrap_IedConnection_getRCBValues(con, rcb_ref, rcb)
            _check(err, f"read report control block {rcb_ref}")
            actual = str(iec.ClientReportControlBlock_getDataSetReference(rcb) or "")
            if actual.replace("$", ".") != data_set:
                raise Refused(
                    iec.IED_ERROR_ENABLE_REPORT_FAILED_DATASET_MISMATCH,
                    f"{rcb_ref} reports data set {actual!r}, not {data_set!r}",
                )
            subscriber = iec.RCBSubscriber()
            subscriber.setIedConnection(con)
            subscriber.setRcbReference(rcb_ref)
            subscriber.setRcbRptId(str(iec.ClientReportControlBlock_getRptId(rcb) or rcb_ref))
            subscriber.setEventHandler(handler)
            subscriber.subscribe()
            self.keep.append(subscriber)
            iec.ClientReportControlBlock_setOptFlds(
                rcb,
                iec.RPT_OPT_SEQ_NUM
                | iec.RPT_OPT_TIME_STAMP
                | iec.RPT_OPT_REASON_FOR_INCLUSION
                | iec.RPT_OPT_DATA_SET,
            )
            iec.ClientReportControlBlock_setRptEna(rcb, True)
            iec.ClientReportControlBlock_setGI(rcb, True)
            mask = iec.RCB_ELEMENT_OPT_FLDS | iec.RCB_ELEMENT_RPT_ENA | iec.RCB_ELEMENT_GI
            self.reporting = True  # from this write on, reports may arrive
            _check(iec.pyWrap_IedConnection_setRCBValues(con, rcb, mask, True), f"enable {rcb_ref}")
        return {"ok": True}


def main() -> None:
    # the protocol owns the real stdout; anything the C library prints goes to stderr
    channel = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    lock = threading.Lock()

    def send(message: wire.Message) -> None:
        data = wire.encode(message)
        with lock:
            channel.write(data)

    worker = ClientWorker(send)
    for line in sys.stdin.buffer:
        try:
            request = wire.decode(line)
        except ValueError as exc:
            send(wire.ied_error(-1, f"bad request: {exc}"))
            continue
        if request.get("op") == wire.EXIT:  # not answered: the driver waits for the exit
            worker.close()
            break
        try:
            answer = worker.handle(request)
        except Exception as exc:  # a bug here must answer, not hang the driver  # noqa: BLE001
            traceback.print_exc()
            answer = wire.ied_error(-1, f"worker error: {exc!r}")
        send({"id": request.get("id"), **answer})
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
