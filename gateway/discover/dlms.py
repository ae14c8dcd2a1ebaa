"""DLMS/COSEM discovery: the association's object list drafted into a mapping: registers
with the unit their scaler_unit gives (the driver applies the scaler and converts the
unit), data, clock, demand registers, the disconnector (state and its two methods) and the
limiter (thresholds in the unit of the register it monitors); profiles become the device's
`profile_obis` with their capture objects listed. Roles from the OBIS code (IEC 62056-61:
1.x.1.8 active energy import, 1.x.16.7 active power ...)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.discover.draft import Draft, DraftDevice, DraftPoint
from gateway.mapping import Quantity

#: DLMS unit code -> (draft unit, power of ten from the meter's unit to it, symbol)
UNITS: dict[int, tuple[str, int, str]] = {
    27: ("KiloW", -3, "W"),
    28: ("KiloV-A", -3, "VA"),
    29: ("KiloVAR", -3, "var"),
    30: ("KiloW-HR", -3, "Wh"),
    31: ("V-A-HR", 0, "VAh"),
    32: ("KiloVAR-HR", -3, "varh"),
    33: ("A", 0, "A"),
    35: ("V", 0, "V"),
    44: ("HZ", 0, "Hz"),
    7: ("SEC", 0, "s"),
    9: ("DEG_C", 0, "°C"),
    56: ("PERCENT", 0, "%"),
}

#: (C, D) of an electricity OBIS code (A = 1) -> role
_ROLES: dict[tuple[int, int], Quantity] = {
    (1, 8): Quantity.ENERGY_IMPORT,
    (2, 8): Quantity.ENERGY_EXPORT,
    (3, 8): Quantity.REACTIVE_ENERGY_IMPORT,
    (4, 8): Quantity.REACTIVE_ENERGY_EXPORT,
    (16, 7): Quantity.ACTIVE_POWER,
    (1, 7): Quantity.ACTIVE_POWER,
    (3, 7): Quantity.REACTIVE_POWER,
    (32, 7): Quantity.VOLTAGE,
    (31, 7): Quantity.CURRENT,
    (14, 7): Quantity.FREQUENCY,
}
_ROLE_UNITS = {
    Quantity.FREQUENCY: "HZ",
    Quantity.VOLTAGE: "V",
    Quantity.CURRENT: "A",
}
_CLASS_NAMES = {
    1: "Data",
    3: "Register",
    4: "Extended register",
    5: "Demand register",
    7: "Profile generic",
    8: "Clock",
    15: "Association LN",
    70: "Disconnect control",
    71: "Limiter",
}


@dataclass(frozen=True)
class Found:
    """One object of the association's object list and what a mapping needs of it
    (read by drivers/dlms/scan.py)."""

    class_id: int
    obis: str
    #: registers: the exponent of ten and the DLMS unit code of their values
    scaler: int | None = None
    unit: int | None = None
    capture: tuple[tuple[int, str, int], ...] = ()
    monitored: tuple[int, str, int] | None = None
    control_mode: int | None = None
    problem: str | None = None


def role(obis: str) -> Quantity | None:
    a, _b, c, d, _e, _f = (int(x) for x in obis.split("."))
    return _ROLES.get((c, d)) if a == 1 else None


def _power_sign(der: str, coupling_point: str | None) -> str:
    if coupling_point is None:
        return "import positive: for a DER (positive when it injects) set scale -1"
    if der == coupling_point:
        return "import positive, as at the coupling point"
    return f"import positive: scale -1 for {der!r}, a DER (positive when it injects)"


def _power_scale(quantity: Quantity | None, der: str, coupling_point: str | None) -> dict[str, Any]:
    """`scale: -1` for a DER's active power read from a meter (meters count import positive)."""
    if quantity is Quantity.ACTIVE_POWER and coupling_point is not None and der != coupling_point:
        return {"scale": -1}
    return {}


def draft_meter(
    objects: Sequence[Found],
    *,
    connection: dict[str, Any],
    options: Mapping[str, Any],
    origin: str,
    device_id: str,
    der: str,
    coupling_point: str | None = None,
) -> Draft:
    """A draft of the meter's objects. With `coupling_point` (the site's id for it), the
    active power of a meter whose `der` is not the coupling point is drafted with scale -1:
    meters count import positive, a DER's power is positive when it injects."""
    draft = Draft(origin=origin)
    by_ref = {(o.class_id, o.obis): o for o in objects}
    points: list[DraftPoint] = []
    device_options = dict(options)
    notes: list[str] = []

    def add(obj: Found, attribute: str, what: str, found: str, **extra: Any) -> None:
        quantity = extra.pop("quantity", None) or Quantity.OTHER
        fields: dict[str, Any] = {
            "id": f"{device_id}.{obj.obis}.{attribute}",
            "address": f"{obj.class_id}/{obj.obis}/{attribute}",
            **extra,
            "der": der,
        }
        if quantity is not Quantity.OTHER:
            fields["quantity"] = quantity.value
        fields["description"] = f"{_CLASS_NAMES.get(obj.class_id)} {obj.obis} {what}"
        points.append(DraftPoint(fields, found))

    for obj in objects:
        name = f"class {obj.class_id} ({_CLASS_NAMES.get(obj.class_id, '?')}) {obj.obis}"
        if obj.problem is not None:
            draft.unmapped.append(f"{name}: {obj.problem}")
            continue
        quantity = role(obj.obis)
        if obj.class_id in (3, 4, 5):
            unit = UNITS.get(obj.unit or 0)
            if unit is None:
                draft.unmapped.append(f"{name}: unit code {obj.unit} has no gateway unit")
                continue
            found = f"{name}: scaler {obj.scaler}, unit {unit[2]} ({obj.unit}), read as {unit[0]}"
            sign = _power_scale(quantity, der, coupling_point)
            if quantity is Quantity.ACTIVE_POWER:
                found += f"; {_power_sign(der, coupling_point)}"
            values = {3: ("2", "value"), 4: ("2", "value"), 5: ("2", "current average")}
            attribute, what = values[obj.class_id]
            add(obj, attribute, what, found, unit=unit[0], **sign, quantity=quantity)
            if obj.class_id == 4:
                add(obj, "5", "capture time", f"{name}: capture time, POSIX seconds", unit="SEC")
            if obj.class_id == 5:
                add(obj, "3", "last average", found, unit=unit[0])
        elif obj.class_id == 1:
            unit_name = _ROLE_UNITS.get(quantity, "UNITLESS") if quantity else "UNITLESS"
            how = "unit from the OBIS code" if quantity else "no unit known: set it"
            add(obj, "2", "value", f"{name}: {how}", unit=unit_name, quantity=quantity)
        elif obj.class_id == 8:
            add(obj, "2", "time", f"{name}: meter time, POSIX seconds", unit="SEC")
        elif obj.class_id == 7:
            columns = ", ".join(f"{c}/{o}/{a}" for c, o, a in obj.capture)
            notes.append(f"profile {obj.obis}: capture objects {columns}")
            device_options.setdefault("profile_obis", obj.obis)
        elif obj.class_id == 70:
            mode = f"control mode {obj.control_mode}"
            add(
                obj,
                "2",
                "output_state",
                f"{name}: output state ({mode})",
                unit="UNITLESS",
                quantity=Quantity.STATUS,
            )
            add(obj, "3", "control_state", f"{name}: control state", unit="UNITLESS")
            for method, what in (("m1", "remote_disconnect"), ("m2", "remote_reconnect")):
                add(
                    obj,
                    method,
                    what,
                    f"{name}: method {what} (write 1)",
                    unit="UNITLESS",
                    direction="write",
                )
        elif obj.class_id == 71:
            monitored = by_ref.get((obj.monitored[0], obj.monitored[1])) if obj.monitored else None
            unit = UNITS.get(monitored.unit or 0) if monitored is not None else None
            if unit is None or monitored is None:
                draft.unmapped.append(f"{name}: monitored value {obj.monitored} not a register")
                continue
            scale = float(10 ** ((monitored.scaler or 0) + unit[1]))
            found = (
                f"{name}: monitors {monitored.class_id}/{monitored.obis}, thresholds in {unit[2]}"
            )
            for attribute, what, direction in (
                ("3", "threshold_active", "read"),
                ("4", "threshold_normal", "read-write"),
                ("5", "threshold_emergency", "read-write"),
            ):
                extra: dict[str, Any] = {"unit": unit[0], "scale": scale}
                if direction != "read":
                    extra["direction"] = direction
                add(obj, attribute, what, found, **extra)
            for attribute, what in (
                ("6", "min_over_threshold_duration"),
                ("7", "min_under_threshold_duration"),
            ):
                add(obj, attribute, what, f"{name}: seconds", unit="SEC", direction="read-write")
        elif obj.class_id != 15:
            draft.unmapped.append(f"{name}: class not drafted")
    draft.remarks.append("set write limits on the read-write points before use")
    draft.devices.append(
        DraftDevice(
            id=device_id,
            protocol="dlms",
            connection=connection,
            description="DLMS/COSEM meter",
            timeout=2.0,
            options=device_options,
            points=points,
            notes=notes,
        )
    )
    return draft
