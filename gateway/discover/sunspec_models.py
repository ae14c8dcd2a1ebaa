"""SunSpec model definitions as typed layouts, from the JSON definitions pysunspec2 ships.

A model block is `ID`, `L` and `L` registers of points; `offset` counts from the `ID`
register. Only the fixed part of a model (its top-level points) is laid out here; models
with repeating groups say so (`repeating`), and their groups are not mapped.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sunspec2 import device as sunspec_device

#: SunSpec point type -> gateway Modbus data type (None: not mapped as a value)
DATA_TYPES: dict[str, str | None] = {
    "int16": "int16",
    "uint16": "uint16",
    "acc16": "uint16",
    "enum16": "uint16",
    "bitfield16": "uint16",
    "count": "uint16",
    "int32": "int32",
    "uint32": "uint32",
    "acc32": "uint32",
    "enum32": "uint32",
    "bitfield32": "uint32",
    "float32": "float32",
    "float64": "float64",
    "sunssf": "int16",
    "int64": None,
    "uint64": None,
    "acc64": None,
    "string": None,
    "pad": None,
    "ipaddr": None,
    "ipv6addr": None,
    "eui48": None,
}

#: the raw register words a point of each type holds when the device does not implement it
NOT_IMPLEMENTED: dict[str, tuple[int, ...]] = {
    "int16": (0x8000,),
    "sunssf": (0x8000,),
    "uint16": (0xFFFF,),
    "enum16": (0xFFFF,),
    "bitfield16": (0xFFFF,),
    "count": (0xFFFF,),
    "acc16": (0x0000,),
    "int32": (0x8000, 0x0000),
    "uint32": (0xFFFF, 0xFFFF),
    "enum32": (0xFFFF, 0xFFFF),
    "bitfield32": (0xFFFF, 0xFFFF),
    "acc32": (0x0000, 0x0000),
    "float32": (0x7FC0, 0x0000),
    "float64": (0x7FF8, 0, 0, 0),
}

#: SunSpec unit -> (QUDT unit the draft uses, power of ten from the SunSpec unit to it)
UNITS: dict[str, tuple[str, int]] = {
    "W": ("KiloW", -3),
    "var": ("KiloVAR", -3),
    "Var": ("KiloVAR", -3),
    "VAr": ("KiloVAR", -3),
    "VA": ("KiloV-A", -3),
    "Wh": ("KiloW-HR", -3),
    "varh": ("KiloVAR-HR", -3),
    "Varh": ("KiloVAR-HR", -3),
    "VAh": ("V-A-HR", 0),
    "A": ("A", 0),
    "V": ("V", 0),
    "Hz": ("HZ", 0),
    "C": ("DEG_C", 0),
    "Secs": ("SEC", 0),
    "Pct": ("PERCENT", 0),
}

#: the repeated models the common model starts and the chain ends with
END_MODEL_ID = 0xFFFF
MARKER = (0x5375, 0x6E53)  # "SunS"


def qudt_unit(sunspec_unit: str | None) -> tuple[str, int] | None:
    """The draft's unit and power-of-ten shift for a SunSpec unit; None when the gateway
    has no name for it (e.g. Ah)."""
    if not sunspec_unit:
        return ("UNITLESS", 0)
    text = sunspec_unit.strip()
    if text.startswith("%"):  # "% WMax", "%WHRtg", "% WChaMax": a percentage of something
        return ("PERCENT", 0)
    return UNITS.get(text)


def scale_of(sf: int, shift: int) -> float:
    """10 ** (sf + shift) as the float nearest the exact decimal (no 0.30000000000000004)."""
    return float(Decimal(1).scaleb(sf + shift))


def scale_factor_for(scale: float, shift: int) -> int | None:
    """The SunSpec scale factor a mapping's `scale` stands for, or None if it is no power
    of ten (inverse of `scale_of`)."""
    if scale <= 0:
        return None
    exponent = round(math.log10(scale)) - shift
    return exponent if math.isclose(scale_of(exponent, shift), scale, rel_tol=1e-9) else None


@dataclass(frozen=True)
class SunSpecPoint:
    name: str
    type: str
    offset: int
    size: int
    sf: str | int | None
    units: str | None
    writable: bool
    mandatory: bool
    label: str

    @property
    def data_type(self) -> str | None:
        return DATA_TYPES.get(self.type)


@dataclass(frozen=True)
class ModelDef:
    id: int
    name: str
    label: str
    points: tuple[SunSpecPoint, ...]
    #: the model has repeating groups after its fixed part
    repeating: tuple[str, ...]

    @property
    def fixed_length(self) -> int:
        """`L` of the fixed part: registers after ID and L."""
        return sum(p.size for p in self.points) - 2

    def point(self, name: str) -> SunSpecPoint | None:
        return next((p for p in self.points if p.name == name), None)

    def at(self, offset: int) -> SunSpecPoint | None:
        return next((p for p in self.points if p.offset == offset), None)


def _point(raw: dict[str, Any], offset: int) -> SunSpecPoint:
    return SunSpecPoint(
        name=str(raw["name"]),
        type=str(raw["type"]),
        offset=offset,
        size=int(raw["size"]),
        sf=raw.get("sf"),
        units=raw.get("units"),
        writable=raw.get("access") == "RW",
        mandatory=raw.get("mandatory") == "M",
        label=str(raw.get("label") or raw["name"]),
    )


@functools.cache
def model_def(model_id: int) -> ModelDef | None:
    """The layout of a SunSpec model, or None when pysunspec2 has no definition of it."""
    try:
        raw = sunspec_device.get_model_def(model_id)
    except Exception:  # pysunspec2 raises a bare Exception for an unknown model id  # noqa: BLE001
        return None
    group = raw["group"]
    points: list[SunSpecPoint] = []
    offset = 0
    for item in group["points"]:
        point = _point(item, offset)
        points.append(point)
        offset += point.size
    return ModelDef(
        id=model_id,
        name=str(group["name"]),
        label=str(group.get("label") or group["name"]),
        points=tuple(points),
        repeating=tuple(str(g["name"]) for g in group.get("groups", ())),
    )
