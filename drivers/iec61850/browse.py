"""Browse an IED's data model, in a process of its own: `python -m drivers.iec61850.browse
HOST PORT TIMEOUT` prints one JSON object and exits (os._exit, as worker.py does).

The bindings' blocking calls hold the GIL, so discovery runs them here rather than in the
caller's event loop. Nothing is written to the IED: the browse is GetNameList (logical
devices and their variables), GetVariableAccessAttributes (each leaf's MMS type) and a read
of each control's `ctlModel`.

Output: {"lds": {LD: [{"ln", "fc", "path", "mms", "size"}...]}, "ctl_models": {DO: int},
"units": {DO: {"SIUnit": int, "multiplier": int}}, "data_sets": {LD/LN.Name: [LD/LN.DO[FC]]},
"reports": {LD/LN.RP.name: LD/LN.Name}} or {"error": message}. `path` is the data object
and attribute names after the FC.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import pyiec61850.pyiec61850 as iec

FCS = {
    "MX": iec.IEC61850_FC_MX,
    "ST": iec.IEC61850_FC_ST,
    "SP": iec.IEC61850_FC_SP,
    "CF": iec.IEC61850_FC_CF,
    "CO": iec.IEC61850_FC_CO,
}
MMS_TYPES = {
    iec.MMS_FLOAT: "float",
    iec.MMS_INTEGER: "int",
    iec.MMS_UNSIGNED: "unsigned",
    iec.MMS_BOOLEAN: "bool",
    iec.MMS_BIT_STRING: "bitstring",
    iec.MMS_UTC_TIME: "utc",
    iec.MMS_VISIBLE_STRING: "string",
    iec.MMS_OCTET_STRING: "octets",
    iec.MMS_STRING: "string",
}


#: associations tried before giving up (as the worker does)
OPEN_ATTEMPTS = 4


class BrowseError(Exception):
    def __init__(self, message: str, lost_connection: bool) -> None:
        super().__init__(message)
        self.lost_connection = lost_connection


def _strings(linked: Any) -> list[str]:
    out = []
    element = iec.LinkedList_getNext(linked)
    while element:
        out.append(str(iec.toCharP(element.data)))
        element = iec.LinkedList_getNext(element)
    iec.LinkedList_destroy(linked)
    return out


def _ok(result: Any, what: str) -> Any:
    value, err = result if isinstance(result, tuple) else (None, result)
    if err != iec.IED_ERROR_OK:
        lost = err == iec.IED_ERROR_CONNECTION_LOST and not what.startswith("connect")
        raise BrowseError(f"{what}: {iec.IedClientError_toString(err)} ({err})", lost)
    return value


def _leaves(names: list[str]) -> list[str]:
    ordered = sorted(names)
    return [
        n
        for i, n in enumerate(ordered)
        if not any(m.startswith(n + "$") for m in ordered[i + 1 : i + 2])
    ]


def browse(con: Any) -> dict[str, Any]:
    lds: dict[str, list[dict[str, Any]]] = {}
    ctl_models: dict[str, int] = {}
    units: dict[str, dict[str, int]] = {}
    data_sets: dict[str, list[str]] = {}
    reports: dict[str, str] = {}
    for ld in _strings(_ok(iec.IedConnection_getLogicalDeviceList(con), "logical devices")):
        names = _strings(_ok(iec.IedConnection_getLogicalDeviceVariables(con, ld), ld))
        leaves = []
        for name in _leaves(names):
            ln, fc, *path = name.split("$")
            if fc not in FCS or not path:
                continue
            reference = f"{ld}/{ln}." + ".".join(path)
            if fc == "CF" and path[-1] == "ctlModel" and len(path) == 2:
                value = _ok(iec.IedConnection_readObject(con, reference, FCS[fc]), reference)
                ctl_models[f"{ld}/{ln}.{path[0]}"] = int(iec.MmsValue_toInt32(value))
                iec.MmsValue_delete(value)
            if fc == "CF" and path[-2:-1] == ["units"] and len(path) == 3:
                value = _ok(iec.IedConnection_readObject(con, reference, FCS[fc]), reference)
                units.setdefault(f"{ld}/{ln}.{path[0]}", {})[path[-1]] = int(
                    iec.MmsValue_toInt32(value)
                )
                iec.MmsValue_delete(value)
            if fc == "CO" and path[1:] not in (
                ["Oper", "ctlVal"],
                ["Oper", "ctlVal", "f"],
                ["Oper", "ctlVal", "i"],
            ):
                continue
            spec = _ok(
                iec.IedConnection_getVariableSpecification(con, reference, FCS[fc]), reference
            )
            kind = iec.MmsVariableSpecification_getType(spec)
            leaves.append(
                {
                    "ln": ln,
                    "fc": fc,
                    "path": path,
                    "mms": MMS_TYPES.get(kind, f"mms-{kind}"),
                    "size": int(iec.MmsVariableSpecification_getSize(spec)),
                }
            )
            iec.MmsVariableSpecification_destroy(spec)
        lds[ld] = leaves
        data_sets.update(_data_sets(con, ld))
        reports.update(_reports(con, ld, names))
    return {
        "lds": lds,
        "ctl_models": ctl_models,
        "units": units,
        "data_sets": data_sets,
        "reports": reports,
    }


def _data_sets(con: Any, ld: str) -> dict[str, list[str]]:
    """The logical device's data sets (`LD/LN.Name`) and their members (`LD/LN.DO[FC]`)."""
    out = {}
    listed = iec.IedConnection_getLogicalDeviceDataSets(con, ld)
    for name in _strings(_ok(listed, f"data sets of {ld}")):
        ln, _, data_set = name.partition("$")
        reference = f"{ld}/{ln}.{data_set}"
        entries = iec.IedConnection_getDataSetDirectory(con, reference, None)
        out[reference] = _strings(_ok(entries, f"directory of data set {reference}"))
    return out


def _reports(con: Any, ld: str, names: list[str]) -> dict[str, str]:
    """Report control blocks (`LD/LN.RP.name`, `.BR.`) -> the data set they report."""
    out = {}
    for name in names:
        parts = name.split("$")
        if len(parts) != 3 or parts[1] not in ("RP", "BR"):
            continue
        ln, fc, rcb = parts
        fc_code = iec.IEC61850_FC_RP if fc == "RP" else iec.IEC61850_FC_BR
        reference = f"{ld}/{ln}.{rcb}.DatSet"
        value = _ok(iec.IedConnection_readObject(con, reference, fc_code), reference)
        data_set = str(iec.MmsValue_toString(value) or "").replace("$", ".")
        iec.MmsValue_delete(value)
        if data_set:
            out[f"{ld}/{ln}.{fc}.{rcb}"] = data_set
    return out


def _browse_once(host: str, port: int, timeout: float) -> dict[str, Any]:
    con = iec.IedConnection_create()
    iec.IedConnection_setConnectTimeout(con, int(timeout * 1000))
    iec.IedConnection_setRequestTimeout(con, int(timeout * 1000))
    try:
        _ok(iec.IedConnection_connect(con, host, port), f"connect to {host}:{port}")
        return browse(con)
    finally:
        iec.IedConnection_close(con)
        iec.IedConnection_destroy(con)


def main(argv: list[str]) -> int:
    host, port, timeout = argv[0], int(argv[1]), float(argv[2])
    out: dict[str, Any] = {}
    # Some associations the library reports as open are dead on arrival (every request
    # fails with connection-lost; see docs/iec61850.md): the browse only reads, so it
    # is simply tried again on a fresh association.
    for _ in range(OPEN_ATTEMPTS):
        try:
            out = _browse_once(host, port, timeout)
            break
        except BrowseError as exc:
            out = {"error": str(exc)}
            if exc.lost_connection is False:
                break
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0 if "error" not in out else 1


if __name__ == "__main__":
    os._exit(main(sys.argv[1:]))
