"""Pure translation between the gateway's points and the worker's JSON (no I/O).

A read plan groups points into as few requests as the mapping allows: every point whose
data object is a member of a configured data set comes from one data set read; the others
are read per data object and FC, so a DO's value, `q` and `t` arrive in one request.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from drivers.base import invalid, to_engineering
from drivers.iec61850.protocol import DataSetOptions, DataType, Iec61850Address, ObjectRef
from gateway.mapping import Point
from gateway.model import (
    Command,
    CommandResult,
    CommandStatus,
    Quality,
    QualityFlag,
    Reading,
    Validity,
)

#: IEC 61850-7-2 AddCause (the numbering libiec61850 uses)
ADD_CAUSES = {
    0: "Unknown",
    1: "Not-supported",
    2: "Blocked-by-switching-hierarchy",
    3: "Select-failed",
    4: "Invalid-position",
    5: "Position-reached",
    6: "Parameter-change-in-execution",
    7: "Step-limit",
    8: "Blocked-by-Mode",
    9: "Blocked-by-process",
    10: "Blocked-by-interlocking",
    11: "Blocked-by-synchrocheck",
    12: "Command-already-in-execution",
    13: "Blocked-by-health",
    14: "1-of-n-control",
    15: "Abortion-by-cancel",
    16: "Time-limit-over",
    17: "Abortion-by-trip",
    18: "Object-not-selected",
    19: "Object-already-selected",
    20: "No-access-authority",
    21: "Ended-with-overshoot",
    22: "Abortion-due-to-deviation",
    23: "Abortion-by-communication-loss",
    24: "Abortion-by-command",
    25: "None",
    26: "Inconsistent-parameters",
    27: "Locked-by-other-client",
}

# quality bit string, bit 0 first (IEC 61850-8-1): validity (2 bits), detail, source, ...
_VALIDITY = {0: Validity.GOOD, 1: Validity.QUESTIONABLE, 2: Validity.INVALID}  # 1 is reserved
_DETAIL_FLAGS = {
    2: QualityFlag.OVERFLOW,
    3: QualityFlag.OUT_OF_RANGE,
    6: QualityFlag.FAILURE,
    7: QualityFlag.OLD,
    8: QualityFlag.INCONSISTENT,
    10: QualityFlag.SUBSTITUTED,
    12: QualityFlag.BLOCKED,
}
_DETAIL_NAMES = {4: "badReference", 5: "oscillatory", 9: "inaccurate", 11: "test"}

_DBPOS = {0: "intermediate-state", 1: "off", 2: "on", 3: "bad-state"}


def quality(bits: Sequence[bool]) -> tuple[Quality, str]:
    """An IEC 61850 quality bit string as the gateway's Quality, with the details the
    gateway has no flag for spelled out."""
    code = sum(1 << i for i, bit in enumerate(bits) if bit)
    validity = _VALIDITY.get(code & 3, Validity.QUESTIONABLE)
    flags = frozenset(flag for bit, flag in _DETAIL_FLAGS.items() if code >> bit & 1)
    details = [name for bit, name in _DETAIL_NAMES.items() if code >> bit & 1]
    return Quality(validity, flags), ",".join(details)


def source_time(value: Any) -> datetime | None:
    """A UtcTime as a datetime; None when absent or zero (never set by the IED)."""
    if not isinstance(value, dict) or not value.get("$utc_ms"):
        return None
    return datetime.fromtimestamp(int(value["$utc_ms"]) / 1000, UTC)


def member_key(obj: ObjectRef, fc: str) -> str:
    """A data set member as the IED's directory names it: `LD/LN.DO[FC]`."""
    return f"{obj}[{fc}]"


@dataclass(frozen=True)
class Unit:
    """One request of a read: a data set, or one data object under one FC."""

    kind: str  # "data_set" | "object"
    ref: str
    fc: str = ""

    def to_wire(self) -> dict[str, str]:
        return {"kind": self.kind, "ref": self.ref, "fc": self.fc}


@dataclass(frozen=True)
class Slot:
    """Where a point's value sits in the answer to its unit."""

    unit: int
    member: str  # the data set member key, "" for an object read
    inner: tuple[str, ...]  # sub data objects below the unit's data object
    attribute: tuple[str, ...]  # the value's attribute path inside that data object


@dataclass(frozen=True)
class ReadPlan:
    units: tuple[Unit, ...]
    slots: tuple[Slot, ...]  # one per point, in the order of the points


def _member_of(
    address: Iec61850Address, data_sets: Sequence[DataSetOptions]
) -> tuple[int, ObjectRef] | None:
    obj, fc = address.obj, address.read_fc
    for i, data_set in enumerate(data_sets):
        for member, member_fc in data_set.fcds:
            n = len(member.data_object)
            if (
                member_fc is fc
                and (member.ld, member.ln) == (obj.ld, obj.ln)
                and obj.data_object[:n] == member.data_object
            ):
                return i, member
    return None


def plan_reads(
    addresses: Sequence[Iec61850Address], data_sets: Sequence[DataSetOptions]
) -> ReadPlan:
    units: list[Unit] = []
    index: dict[Unit, int] = {}
    slots: list[Slot] = []

    def unit_index(unit: Unit) -> int:
        if unit not in index:
            index[unit] = len(units)
            units.append(unit)
        return index[unit]

    for address in addresses:
        found = _member_of(address, data_sets)
        if found is not None:
            ds, member = found
            slot = Slot(
                unit_index(Unit("data_set", data_sets[ds].reference)),
                member_key(member, address.read_fc.value),
                address.obj.data_object[len(member.data_object) :],
                address.read_attribute,
            )
        else:
            unit = Unit("object", str(address.obj), address.read_fc.value)
            slot = Slot(unit_index(unit), "", (), address.read_attribute)
        slots.append(slot)
    return ReadPlan(tuple(units), tuple(slots))


def _dig(value: Any, path: Sequence[str]) -> Any:
    for name in path:
        if not isinstance(value, dict) or name not in value:
            raise KeyError(name)
        value = value[name]
    return value


def _typed(point: Point, data_type: DataType, raw: Any) -> tuple[Any, str]:
    """The engineering value of a raw attribute, or None and why not."""
    if isinstance(raw, dict) and "$error" in raw:
        return None, f"data access error {raw['$error']}"
    if data_type is DataType.DBPOS:
        bits = raw.get("$bits") if isinstance(raw, dict) else None
        if not bits or len(bits) != 2:
            return None, f"expected a Dbpos, got {raw!r}"
        state = _DBPOS[(int(bits[0]) << 1) | int(bits[1])]
        return {"on": True, "off": False}.get(state), state
    if data_type is DataType.BOOL:
        if not isinstance(raw, bool):
            return None, f"expected a boolean, got {raw!r}"
        return raw, ""
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None, f"expected a number, got {raw!r}"
    if isinstance(raw, float) and not math.isfinite(raw):
        return None, f"non-finite value {raw}"
    return to_engineering(point, raw), ""


def reading(point: Point, address: Iec61850Address, data_object: Any, slot: Slot) -> Reading:
    """The reading of `point` from the JSON of the data object (or data set member) that
    holds it; the value's `q` and `t` are the ones of its own data object."""
    try:
        owner = _dig(data_object, slot.inner)
        raw = _dig(owner, slot.attribute)
    except KeyError as exc:
        path = ".".join((*slot.inner, *slot.attribute))
        return invalid(point, f"the IED has no {path!r} (missing {exc.args[0]!r})")
    value, why = _typed(point, address.data_type, raw)
    q, detail = (
        quality(owner["q"]["$bits"])
        if isinstance(owner.get("q"), dict) and "$bits" in owner["q"]
        else (Quality(), "")
    )
    if value is None:  # no usable value: a moving switch is questionable, else invalid
        if why == "intermediate-state":
            q = Quality(Validity.QUESTIONABLE, q.flags)
        else:
            q = Quality(Validity.INVALID, q.flags or frozenset({QualityFlag.FAILURE}))
    detail = ", ".join(d for d in (why, detail) if d)
    return Reading(
        point=point.id,
        value=value,
        unit=point.unit,
        quality=q,
        source_time=source_time(owner.get("t")),
        detail=detail,
    )


def readings(
    points: Sequence[Point],
    addresses: Sequence[Iec61850Address],
    plan: ReadPlan,
    results: Sequence[dict[str, Any]],
) -> list[Reading]:
    out: list[Reading] = []
    for point, address, slot in zip(points, addresses, plan.slots, strict=True):
        result = results[slot.unit]
        if "error" in result:
            out.append(invalid(point, str(result["error"].get("message", "refused"))))
            continue
        if not slot.member:
            out.append(reading(point, address, result.get("value"), slot))
            continue
        members = list(result.get("members", []))
        if slot.member not in members:
            unit = plan.units[slot.unit]
            out.append(invalid(point, f"{slot.member} is not a member of {unit.ref} on the IED"))
            continue
        out.append(reading(point, address, result["values"][members.index(slot.member)], slot))
    return out


def write_result(command: Command, answer: dict[str, Any]) -> CommandResult:
    error = answer.get("error")
    if error is None:
        return CommandResult(command, CommandStatus.CONFIRMED, "written")
    if error.get("link"):
        return CommandResult(command, CommandStatus.LINK_DOWN, str(error.get("message", "")))
    return CommandResult(command, CommandStatus.REJECTED, str(error.get("message", "refused")))


def add_cause_text(code: int) -> str:
    return f"AddCause {code} {ADD_CAUSES.get(code, 'unknown')}"


def control_result(command: Command, answer: dict[str, Any], timeout_s: float) -> CommandResult:
    """An operate's outcome; enhanced security reports the CommandTermination's."""
    if "error" in answer:
        return write_result(command, answer)
    result = answer["result"]
    stage = str(result.get("stage", ""))
    if result.get("ok"):
        detail = "CommandTermination+" if stage == "termination" else "operated"
        return CommandResult(command, CommandStatus.CONFIRMED, detail)
    if result.get("timeout"):
        return CommandResult(
            command, CommandStatus.TIMEOUT, f"no CommandTermination within {timeout_s:g} s"
        )
    if "detail" in result:
        return CommandResult(command, CommandStatus.REJECTED, str(result["detail"]))
    what = {"termination": "CommandTermination-"}.get(stage, f"{stage} refused")
    detail = f"{what}: {add_cause_text(int(result.get('add_cause', 0)))}"
    if result.get("error"):
        detail += f" (LastApplError error {result['error']})"
    return CommandResult(command, CommandStatus.REJECTED, detail)
