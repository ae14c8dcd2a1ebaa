"""IEC 61850 discovery: an IED's data model (browsed online, drivers/iec61850/browse.py,
or read from an SCL file, gateway/discover/scl.py) drafted into a mapping: a point per
readable data attribute (MX, ST, SP, CF), a control point per controllable data object with
the IED's ctlModel, and roles from what IEC 61850-7-4 and -7-420 name (MMXU.TotW, ZBAT,
DRCC set points, XCBR.Pos ...)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.discover.draft import Draft, DraftDevice, DraftPoint
from gateway.errors import DiscoveryError
from gateway.mapping import Quantity
from gateway.protocols.base import AddressError
from gateway.protocols.iec61850 import parse_fcd

#: attributes that describe another attribute (quality, time, origin ...), not a reading
_META = frozenset(
    {
        "q",
        "t",
        "ctlNum",
        "ctlModel",
        "sboTimeout",
        "sboClass",
        "operTimeout",
        "d",
        "dU",
        "cdcNs",
        "cdcName",
        "dataNs",
        "SIUnit",
        "multiplier",
    }
)
_META_PARENTS = frozenset({"origin", "units", "sVC", "rangeC", "NamPlt"})

#: ctlModel values (IEC 61850-7-2)
CTL_MODELS = {
    0: "status-only",
    1: "direct-with-normal-security",
    2: "sbo-with-normal-security",
    3: "direct-with-enhanced-security",
    4: "sbo-with-enhanced-security",
}

#: (LN class, data object[, sub data object]) -> role
_ROLES: dict[tuple[str, ...], Quantity] = {
    ("MMXU", "TotW"): Quantity.ACTIVE_POWER,
    ("MMXU", "TotVAr"): Quantity.REACTIVE_POWER,
    ("MMXU", "Hz"): Quantity.FREQUENCY,
    ("MMXU", "PhV", "phsA"): Quantity.VOLTAGE,
    ("MMXU", "A", "phsA"): Quantity.CURRENT,
    ("MMTR", "SupWh"): Quantity.ENERGY_EXPORT,
    ("MMTR", "DmdWh"): Quantity.ENERGY_IMPORT,
    ("MMTR", "SupVArh"): Quantity.REACTIVE_ENERGY_EXPORT,
    ("MMTR", "DmdVArh"): Quantity.REACTIVE_ENERGY_IMPORT,
    ("ZBAT", "SoC"): Quantity.STATE_OF_CHARGE,
    ("ZBAT", "SocPct"): Quantity.STATE_OF_CHARGE,
    ("DSTO", "SocPct"): Quantity.STATE_OF_CHARGE,
    ("DBAT", "SocPct"): Quantity.STATE_OF_CHARGE,
    ("ZBAT", "WHRtg"): Quantity.ENERGY_CAPACITY,
    ("DSTO", "WHRtg"): Quantity.ENERGY_CAPACITY,
    ("DRCC", "WSpt"): Quantity.ACTIVE_POWER_SETPOINT,
    ("DRCC", "OutWSet"): Quantity.ACTIVE_POWER_SETPOINT,
    ("DRCC", "VarSpt"): Quantity.REACTIVE_POWER_SETPOINT,
    ("DRCC", "OutVarSet"): Quantity.REACTIVE_POWER_SETPOINT,
    ("DRCC", "DERStr"): Quantity.SWITCH,
    ("DRCC", "WMaxLimPct"): Quantity.ACTIVE_POWER_LIMIT,
    ("DOPM", "WMaxLimPct"): Quantity.ACTIVE_POWER_LIMIT,
    ("DGEN", "TotW"): Quantity.ACTIVE_POWER,
    ("ZINV", "TotW"): Quantity.ACTIVE_POWER,
    ("XCBR", "Pos"): Quantity.SWITCH,
    ("XSWI", "Pos"): Quantity.SWITCH,
    ("STMP", "Tmp"): Quantity.TEMPERATURE,
}

#: the unit a role is drafted in when the IED gives none (units.SIUnit)
_DEFAULT_UNITS = {
    Quantity.ACTIVE_POWER: "KiloW",
    Quantity.ACTIVE_POWER_SETPOINT: "KiloW",
    Quantity.REACTIVE_POWER: "KiloVAR",
    Quantity.REACTIVE_POWER_SETPOINT: "KiloVAR",
    Quantity.ENERGY_IMPORT: "KiloW-HR",
    Quantity.ENERGY_EXPORT: "KiloW-HR",
    Quantity.ENERGY_CAPACITY: "KiloW-HR",
    Quantity.REACTIVE_ENERGY_IMPORT: "KiloVAR-HR",
    Quantity.REACTIVE_ENERGY_EXPORT: "KiloVAR-HR",
    Quantity.STATE_OF_CHARGE: "PERCENT",
    Quantity.ACTIVE_POWER_LIMIT: "PERCENT",
    Quantity.VOLTAGE: "V",
    Quantity.CURRENT: "A",
    Quantity.FREQUENCY: "HZ",
    Quantity.TEMPERATURE: "DEG_C",
    Quantity.SWITCH: "UNITLESS",
    Quantity.STATUS: "UNITLESS",
}

#: SIUnit (IEC 61850-7-3) -> QUDT name, and the kilo / mega names of it
_SI_UNITS: dict[int, tuple[str, str | None, str | None]] = {
    1: ("UNITLESS", None, None),
    4: ("SEC", None, None),
    5: ("A", None, None),
    23: ("DEG_C", None, None),
    29: ("V", "KiloV", None),
    33: ("HZ", None, None),
    38: ("W", "KiloW", "MegaW"),
    61: ("V-A", "KiloV-A", None),
    63: ("VAR", "KiloVAR", None),
    71: ("V-A-HR", None, None),
    72: ("W-HR", "KiloW-HR", "MegaW-HR"),
    73: ("VAR-HR", "KiloVAR-HR", None),
}


def si_unit(unit: str) -> tuple[int, int] | None:
    """(SIUnit, multiplier) of a gateway unit (`KiloW` -> (38, 3)); None when IEC 61850-7-3
    has no SIUnit for it (PERCENT). The inverse of how drafts read `units`."""
    for si, names in _SI_UNITS.items():
        if unit in names:
            return si, 3 * names.index(unit)
    return None


_NUMBERS = frozenset({"float32", "int32"})
_LN_CLASS = re.compile(r"([A-Z]{4})\d*$")


@dataclass(frozen=True)
class Leaf:
    """A readable data attribute: `path` is the data object and attribute names."""

    ld: str
    ln: str
    fc: str
    path: tuple[str, ...]
    #: float32, int32, bool, dbpos, or what it is when it cannot be mapped ("utc", ...)
    kind: str

    @property
    def reference(self) -> str:
        return f"{self.ld}/{self.ln}." + ".".join(self.path) + f"@{self.fc}"


@dataclass(frozen=True)
class Control:
    ld: str
    ln: str
    do: str
    #: float32 (APC), int32 (INC), bool (SPC), dbpos (DPC)
    kind: str
    ctl_model: int


@dataclass
class IedModel:
    name: str
    leaves: list[Leaf] = field(default_factory=list)
    controls: list[Control] = field(default_factory=list)
    #: "LD/LN.DO" -> (SIUnit, multiplier)
    units: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: "LD/LN.DO" -> the `units` the IED gives that this module does not understand
    odd_units: dict[str, str] = field(default_factory=dict)
    #: data set "LD/LN.Name" -> members "LD/LN.DO@FC"
    data_sets: dict[str, list[str]] = field(default_factory=dict)
    #: report control block "LD/LN.RP.name" (or .BR.) -> the data set it reports
    reports: dict[str, str] = field(default_factory=dict)


def ln_class(ln: str) -> str:
    if ln == "LLN0":
        return "LLN0"
    match = _LN_CLASS.search(ln)
    return match.group(1) if match else ln


def role(ln: str, path: tuple[str, ...]) -> Quantity | None:
    cls = ln_class(ln)
    return _ROLES.get((cls, *path[:2])) or _ROLES.get((cls, path[0]))


def _leaf_kind(item: Mapping[str, Any]) -> str:
    mms, size, name = item["mms"], item.get("size", 0), item["path"][-1]
    if mms == "float":
        return "float32" if size in (32, 0, -1) else f"float{size}"
    if mms in ("int", "unsigned"):
        return "int32" if size <= 32 else f"integer of {size} bits"
    if mms == "bool":
        return "bool"
    if mms == "bitstring" and size == 2 and name == "stVal":
        return "dbpos"
    return str(mms)


def from_browse(name: str, browsed: Mapping[str, Any]) -> IedModel:
    """The model from drivers/iec61850/browse.py's output."""
    if "error" in browsed:
        raise DiscoveryError(str(browsed["error"]))
    model = IedModel(name)
    status_kind: dict[str, str] = {}
    for ld, items in browsed["lds"].items():
        for item in items:
            ln, fc, path = item["ln"], item["fc"], tuple(item["path"])
            if fc == "CO":
                continue
            kind = _leaf_kind(item)
            model.leaves.append(Leaf(ld, ln, fc, path, kind))
            if fc == "ST" and path[1:] == ("stVal",):
                status_kind[f"{ld}/{ln}.{path[0]}"] = kind
    for ld, items in browsed["lds"].items():
        for item in items:
            if item["fc"] != "CO":
                continue
            ln, path = item["ln"], item["path"]
            do = f"{ld}/{ln}.{path[0]}"
            kind = _leaf_kind(item)
            if kind == "bool" and status_kind.get(do) == "dbpos":
                kind = "dbpos"
            model.controls.append(
                Control(ld, ln, path[0], kind, int(browsed["ctl_models"].get(do, 1)))
            )
    for do, unit in browsed.get("units", {}).items():
        if "SIUnit" in unit:
            model.units[do] = (int(unit["SIUnit"]), int(unit.get("multiplier", 0)))
    for reference, members in browsed.get("data_sets", {}).items():
        model.data_sets[reference] = [m.rstrip("]").replace("[", "@") for m in members]
    model.reports.update(browsed.get("reports", {}))
    return model


def _data_set_options(model: IedModel, draft: Draft) -> list[dict[str, Any]]:
    """The IED's data sets that the gateway can read as one (members are data objects in
    MX or ST), each with a report control block that reports it (unbuffered first)."""
    out: list[dict[str, Any]] = []
    for reference, members in sorted(model.data_sets.items()):
        try:
            for member in members:
                parse_fcd(member)
        except AddressError as exc:
            draft.unmapped.append(f"data set {reference}: {exc}")
            continue
        entry: dict[str, Any] = {"reference": reference, "members": members}
        blocks = sorted(r for r, d in model.reports.items() if d == reference)
        blocks.sort(key=lambda r: ".BR." in r)  # an unbuffered block first
        if blocks:
            entry["report"] = blocks[0]
        out.append(entry)
    return out


def _odd_units(model: IedModel) -> dict[str, str]:
    """`units` the IED gives that cannot be turned into a gateway unit, by data object."""
    unknown = {
        reference: f"SIUnit {si} x10^{multiplier}"
        for reference, (si, multiplier) in model.units.items()
        if si not in _SI_UNITS
    }
    return model.odd_units | unknown


def _unit(
    model: IedModel, ld: str, ln: str, do: str, quantity: Quantity | None
) -> tuple[str, float, str]:
    """(unit, scale, how it was found) of a data object's values."""
    reference = f"{ld}/{ln}.{do}"
    si = model.units.get(reference)
    odd_units = _odd_units(model)
    if reference in odd_units:
        odd = f"units {odd_units[reference]} not understood"
        if quantity is not None and quantity in _DEFAULT_UNITS:
            return _DEFAULT_UNITS[quantity], 1.0, f"{odd}: unit assumed from the role, check it"
        return "UNITLESS", 1.0, f"{odd}: unit unknown, set it"
    if si is not None:
        names, multiplier = _SI_UNITS[si[0]], si[1]
        by_multiplier = {0: names[0], 3: names[1], 6: names[2]}
        if by_multiplier.get(multiplier):
            return str(by_multiplier[multiplier]), 1.0, f"units SIUnit {si[0]} x10^{multiplier}"
        return names[0], float(10**multiplier), f"units SIUnit {si[0]} x10^{multiplier}"
    if quantity is not None and quantity in _DEFAULT_UNITS:
        unit = _DEFAULT_UNITS[quantity]
        if unit == "UNITLESS":
            return unit, 1.0, "a state, no unit"
        return unit, 1.0, "no units attribute: unit assumed from the role"
    return "UNITLESS", 1.0, "no units attribute: unit unknown, set it"


def _point_id(prefix: str, ld: str, ln: str, path: tuple[str, ...], many_lds: bool) -> str:
    plain = [p for p in path if p not in ("mag", "f", "i", "setMag", "cVal", "stVal", "mxVal")]
    parts = [prefix, *([ld] if many_lds else []), ln, *plain]
    return ".".join(parts)[:64]


def draft_ied(
    model: IedModel,
    *,
    connection: dict[str, Any],
    origin: str,
    device_id: str,
    der: str,
) -> Draft:
    draft = Draft(origin=origin)
    many_lds = len({leaf.ld for leaf in model.leaves}) > 1
    controlled = {f"{c.ld}/{c.ln}.{c.do}" for c in model.controls}
    points: list[DraftPoint] = []
    enhanced = [c.ctl_model in (3, 4) for c in model.controls if c.ctl_model]
    for control in model.controls:
        reference = f"{control.ld}/{control.ln}.{control.do}@CO"
        if control.ctl_model == 0:
            draft.unmapped.append(f"{reference}: status-only, no control")
            continue
        quantity = role(control.ln, (control.do,))
        unit, _, how = _unit(model, control.ld, control.ln, control.do, quantity)
        fields: dict[str, Any] = {
            "id": _point_id(device_id, control.ld, control.ln, (control.do,), many_lds),
            "address": reference,
            "type": control.kind,
        }
        if control.ctl_model in (2, 4):
            fields["sbo"] = True
        fields |= {"unit": unit, "direction": "read-write"}
        if quantity is not None:
            fields |= {"der": der, "quantity": quantity.value}
        cdc = {"float32": "APC", "int32": "INC", "bool": "SPC", "dbpos": "DPC"}[control.kind]
        fields["description"] = f"{ln_class(control.ln)}.{control.do} ({cdc})"
        points.append(
            DraftPoint(
                fields,
                f"control {cdc}, ctlModel {control.ctl_model} {CTL_MODELS.get(control.ctl_model)}"
                f"; {how}{'; set write limits before use' if control.kind in _NUMBERS else ''}",
            )
        )
    draft.unmapped += [
        f"{reference}: units {text} not understood: the drafted unit is a guess, check it"
        for reference, text in sorted(_odd_units(model).items())
    ]
    for leaf in model.leaves:
        do_ref = f"{leaf.ld}/{leaf.ln}.{leaf.path[0]}"
        if leaf.path[-1] in _META or _META_PARENTS.intersection(leaf.path[1:-1]):
            continue
        if do_ref in controlled and leaf.fc in ("MX", "ST") and leaf.path[1] in ("mxVal", "stVal"):
            continue  # the control point reads its status
        if leaf.ln == "LLN0" or leaf.kind not in ("float32", "int32", "bool", "dbpos"):
            if leaf.ln != "LLN0":
                draft.unmapped.append(f"{leaf.reference}: {leaf.kind}, no gateway type")
            continue
        quantity = role(leaf.ln, leaf.path)
        unit, scale, how = _unit(model, leaf.ld, leaf.ln, leaf.path[0], quantity)
        fields = {
            "id": _point_id(device_id, leaf.ld, leaf.ln, leaf.path, many_lds),
            "address": leaf.reference,
        }
        if leaf.path[-1] not in ("f", "i"):
            fields["type"] = leaf.kind
        if scale != 1.0:
            fields["scale"] = scale
        fields["unit"] = unit
        if leaf.fc == "SP":
            fields["direction"] = "read-write"
        if quantity is not None:
            fields |= {"der": der, "quantity": quantity.value}
        fields["description"] = f"{ln_class(leaf.ln)}.{'.'.join(leaf.path)}"
        writable = {
            "SP": "; a set point (SP): set write limits before use",
            "CF": "; configuration (CF): drafted read-only",
        }.get(leaf.fc, "")
        points.append(DraftPoint(fields, f"{leaf.fc} {leaf.kind}; {how}{writable}"))
    seen: set[str] = set()
    for point in points:  # ids cut at 64 characters may collide: number them
        base, n = point.id, 1
        while point.id in seen:
            n += 1
            point.fields["id"] = f"{base[:60]}.{n}"
        seen.add(point.id)
    device = DraftDevice(
        id=device_id,
        protocol="iec61850",
        connection=connection,
        description=f"IED {model.name}",
        options={"enhanced_security": all(enhanced) if enhanced else True, "originator": "mgms"},
        points=points,
    )
    lds = ", ".join(sorted({leaf.ld for leaf in model.leaves}))
    device.notes.append(f"IED {model.name}: logical devices {lds}")
    if enhanced and any(enhanced) and not all(enhanced):
        draft.remarks.append(
            "the IED mixes normal and enhanced security controls; the mapping has one"
            " enhanced_security per device: split the controls into two devices"
        )
    data_sets = _data_set_options(model, draft)
    if data_sets:
        device.options["data_sets"] = data_sets
    else:
        draft.remarks.append(
            "the IED has no data set the gateway can read as one: points are polled;"
            " add data sets and reports under options (docs/iec61850.md) for spontaneous data"
        )
    draft.devices.append(device)
    return draft
