"""SunSpec discovery: find the `SunS` marker on each unit, walk the model chain and draft
the points of every model with the model's own definition (pysunspec2), scale factors
resolved into each point's `scale` and roles taken from what the model says a point is.

Reads only, through a `WordReader` (drivers/modbus/scan.py on a live device). Everything
below `discover` is a pure function of the registers read, so it is tested on register
images as well as against the simulator.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gateway.discover.draft import DraftPoint
from gateway.discover.sunspec_models import (
    END_MODEL_ID,
    MARKER,
    NOT_IMPLEMENTED,
    ModelDef,
    SunSpecPoint,
    model_def,
    qudt_unit,
    scale_of,
)
from gateway.errors import DiscoveryError
from gateway.mapping import Quantity
from gateway.protocols.modbus import Table

#: where a SunSpec device puts its marker, in the order the specification says to look
BASES = (40000, 50000, 0)
#: registers per read request
CHUNK = 125
#: a chain longer than this is not a SunSpec device (or a broken one)
MAX_MODELS = 64

INVERTERS = frozenset({101, 102, 103, 111, 112, 113})
METERS = frozenset({201, 202, 203, 204, 211, 212, 213, 214})

#: (model ids, point name) -> the role the model gives the point
_ROLES: tuple[tuple[frozenset[int], str, Quantity], ...] = (
    (INVERTERS, "W", Quantity.ACTIVE_POWER),
    (INVERTERS, "VAr", Quantity.REACTIVE_POWER),
    (INVERTERS, "Hz", Quantity.FREQUENCY),
    (INVERTERS, "WH", Quantity.ENERGY_EXPORT),
    (INVERTERS, "A", Quantity.CURRENT),
    (INVERTERS, "PhVphA", Quantity.VOLTAGE),
    (INVERTERS, "St", Quantity.STATUS),
    (INVERTERS, "TmpCab", Quantity.TEMPERATURE),
    (METERS, "W", Quantity.ACTIVE_POWER),
    (METERS, "VAR", Quantity.REACTIVE_POWER),
    (METERS, "Hz", Quantity.FREQUENCY),
    (METERS, "TotWhImp", Quantity.ENERGY_IMPORT),
    (METERS, "TotWhExp", Quantity.ENERGY_EXPORT),
    (METERS, "PhV", Quantity.VOLTAGE),
    (METERS, "A", Quantity.CURRENT),
    (frozenset({701}), "W", Quantity.ACTIVE_POWER),
    (frozenset({701}), "Var", Quantity.REACTIVE_POWER),
    (frozenset({701}), "Hz", Quantity.FREQUENCY),
    (frozenset({701}), "A", Quantity.CURRENT),
    (frozenset({701}), "LNV", Quantity.VOLTAGE),
    (frozenset({123}), "WMaxLimPct", Quantity.ACTIVE_POWER_LIMIT),
    (frozenset({123}), "Conn", Quantity.SWITCH),
    (frozenset({704}), "WMaxLimPct", Quantity.ACTIVE_POWER_LIMIT),
    (frozenset({704}), "WSet", Quantity.ACTIVE_POWER_SETPOINT),
    (frozenset({704}), "VarSet", Quantity.REACTIVE_POWER_SETPOINT),
    (frozenset({124}), "ChaState", Quantity.STATE_OF_CHARGE),
    (frozenset({802}), "SoC", Quantity.STATE_OF_CHARGE),
    (frozenset({713}), "SoC", Quantity.STATE_OF_CHARGE),
)

#: write limits the model's definition implies (percentages of a rating)
_LIMITS: dict[Quantity, dict[str, float]] = {
    Quantity.ACTIVE_POWER_LIMIT: {"min": 0.0, "max": 100.0},
}


def role(model_id: int, point: str) -> Quantity | None:
    """What the SunSpec model says a point is, in the gateway's terms (None: no role)."""
    return next((q for ids, name, q in _ROLES if model_id in ids and name == point), None)


class WordReader(Protocol):
    """Reads registers; a list, None when the unit did not answer, or a refusal with a
    `detail` (drivers.modbus.scan.Refused)."""

    async def read_words(self, unit: int, table: Table, address: int, count: int) -> object: ...


@dataclass(frozen=True)
class FoundModel:
    unit: int
    #: address of the model's ID register
    address: int
    id: int
    #: L: registers after ID and L
    length: int
    #: the whole block, ID and L included
    words: tuple[int, ...]

    @property
    def definition(self) -> ModelDef | None:
        return model_def(self.id)


@dataclass(frozen=True)
class SunSpecUnit:
    unit: int
    base: int
    models: tuple[FoundModel, ...]

    @property
    def common(self) -> dict[str, str]:
        """Manufacturer, model, version and serial number from the common model."""
        found = next((m for m in self.models if m.id == 1), None)
        definition = model_def(1)
        if found is None or definition is None:
            return {}
        out = {}
        for name in ("Mn", "Md", "Opt", "Vr", "SN"):
            point = definition.point(name)
            if point is not None and point.offset + point.size <= len(found.words):
                out[name] = decode_string(found.words[point.offset : point.offset + point.size])
        return out


def decode_string(words: Sequence[int]) -> str:
    raw = b"".join(w.to_bytes(2, "big") for w in words)
    return raw.split(b"\0", 1)[0].decode("latin-1").strip()


def encode_string(text: str, size: int) -> list[int]:
    """A SunSpec string point: latin-1 bytes, NUL padded to `size` registers."""
    raw = text.encode("latin-1")[: 2 * size].ljust(2 * size, b"\0")
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, 2 * size, 2)]


# -- reading the chain ---------------------------------------------------------------------


async def read_block(reader: WordReader, unit: int, address: int, count: int) -> list[int]:
    """`count` holding registers from `address`, in requests of at most CHUNK."""
    out: list[int] = []
    while len(out) < count:
        at = address + len(out)
        n = min(CHUNK, count - len(out))
        answer = await reader.read_words(unit, Table.HOLDING, at, n)
        if not isinstance(answer, list):
            why = "no answer" if answer is None else getattr(answer, "detail", str(answer))
            raise DiscoveryError(f"unit {unit}: reading {n} registers at {at}: {why}")
        out += answer
    return out


async def find_marker(reader: WordReader, unit: int) -> int | None:
    """The base address of the `SunS` marker on a unit, or None."""
    for base in BASES:
        answer = await reader.read_words(unit, Table.HOLDING, base, 2)
        if answer is None:
            return None  # the unit is silent: no point asking at the other bases
        if isinstance(answer, list) and tuple(answer) == MARKER:
            return base
    return None


async def walk(reader: WordReader, unit: int, base: int) -> SunSpecUnit:
    """The model chain after the marker at `base`, up to the end model (0xFFFF)."""
    models: list[FoundModel] = []
    address = base + 2
    for _ in range(MAX_MODELS):
        model_id, length = await read_block(reader, unit, address, 2)
        if model_id == END_MODEL_ID:
            return SunSpecUnit(unit, base, tuple(models))
        if address + 2 + length > 65536:
            raise DiscoveryError(
                f"unit {unit}: model {model_id} at {address} has length {length},"
                " beyond the end of the register space"
            )
        body = await read_block(reader, unit, address + 2, length) if length else []
        models.append(FoundModel(unit, address, model_id, length, (model_id, length, *body)))
        address += 2 + length
    raise DiscoveryError(f"unit {unit}: no end model after {MAX_MODELS} models from {base}")


async def discover_units(reader: WordReader, units: Sequence[int]) -> list[SunSpecUnit]:
    found = []
    for unit in units:
        base = await find_marker(reader, unit)
        if base is not None:
            found.append(await walk(reader, unit, base))
    return found


# -- drafting ------------------------------------------------------------------------------


def _signed16(word: int) -> int:
    return word - 0x10000 if word & 0x8000 else word


def _value(point: SunSpecPoint, words: Sequence[int]) -> float | int:
    """The raw value of a point (before its scale factor) from its registers."""
    raw = b"".join(w.to_bytes(2, "big") for w in words)
    data_type = point.data_type
    if data_type == "float32":
        return float(struct.unpack(">f", raw)[0])
    if data_type == "float64":
        return float(struct.unpack(">d", raw)[0])
    signed = data_type in ("int16", "int32")
    return int.from_bytes(raw, "big", signed=signed)


@dataclass(frozen=True)
class DraftNames:
    """How drafted points are named and which DER they describe."""

    prefix: str
    der: str
    #: add the unit id to point ids (several SunSpec units on one device)
    per_unit: bool = False
    #: unit id -> DER id, where the units are different DERs (a hybrid inverter)
    der_of_unit: Mapping[int, str] = field(default_factory=dict)

    def der_for(self, unit: int) -> str:
        return self.der_of_unit.get(unit, self.der)


def _model_names(models: Sequence[FoundModel]) -> list[str]:
    """A short name per model for point ids: the definition's name, numbered on repeats."""
    names = [m.definition.name if m.definition else f"model{m.id}" for m in models]
    out = []
    for i, name in enumerate(names):
        repeats = names.count(name)
        out.append(name if repeats == 1 else f"{name}{names[: i + 1].count(name)}")
    return out


def draft_unit(found: SunSpecUnit, names: DraftNames) -> tuple[list[DraftPoint], list[str]]:
    """Draft points for every implemented point of every model of a unit; and what was
    left unmapped, each as "where: why"."""
    points: list[DraftPoint] = []
    unmapped: list[str] = []
    for model, model_name in zip(found.models, _model_names(found.models), strict=True):
        where = f"unit {found.unit} model {model.id} at {model.address}"
        definition = model.definition
        if definition is None:
            unmapped.append(f"{where} ({model.length} registers): no SunSpec definition")
            continue
        if model.id == 1:
            continue  # identification: goes into the device description
        stem = f"{names.prefix}.u{found.unit}" if names.per_unit else names.prefix
        drafted, left, absent = _draft_model(
            model, definition, f"{stem}.{model_name}", names.der_for(found.unit)
        )
        points += drafted
        unmapped += [f"{where} {what}" for what in left]
        if absent:
            unmapped.append(
                f"{where}: {len(absent)} mandatory point(s) read 'not implemented':"
                f" {', '.join(absent)}"
            )
        fixed = definition.fixed_length
        if definition.repeating and model.length > fixed:
            groups = ", ".join(definition.repeating)
            unmapped.append(
                f"{where} repeating group(s) {groups} ({model.length - fixed} registers):"
                " not drafted, map them by hand"
            )
        elif model.length > fixed:
            unmapped.append(
                f"{where}: {model.length - fixed} registers beyond the model's definition"
                f" (L {model.length}, defined {fixed}): not drafted"
            )
    return points, unmapped


def _draft_model(
    model: FoundModel, definition: ModelDef, stem: str, der: str
) -> tuple[list[DraftPoint], list[str], list[str]]:
    """Points, what was not mapped and why, and the mandatory points the device leaves
    unimplemented (optional ones it leaves out are not worth a line)."""
    words = model.words
    points: list[DraftPoint] = []
    unmapped: list[str] = []
    absent: list[str] = []
    for point in definition.points[2:]:  # after ID and L
        what = f"{point.name} ({point.type})"
        if point.offset + point.size > len(words):
            unmapped.append(f"{what}: beyond the model's length {model.length}")
            continue
        if point.type in ("pad", "sunssf"):
            continue  # padding; scale factors go into the points that use them
        piece = words[point.offset : point.offset + point.size]
        if point.data_type is None:
            if point.type != "string":  # strings are identification, not readings
                unmapped.append(f"{what}: no gateway data type for it")
            continue
        if tuple(piece) == NOT_IMPLEMENTED.get(point.type):
            if point.mandatory:
                absent.append(point.name)
            continue
        scale_text, sf = "", 0
        if point.sf is not None:
            resolved = _scale_factor(point.sf, definition, words)
            if isinstance(resolved, str):
                unmapped.append(f"{what}: {resolved}")
                continue
            sf = resolved
            scale_text = f", {point.sf} = {sf}" if isinstance(point.sf, str) else f", sf {sf}"
        unit = qudt_unit(point.units)
        if unit is None:
            unmapped.append(f"{what}: unit {point.units!r} has no gateway unit")
            continue
        unit_name, shift = unit
        scale = scale_of(sf, shift)
        raw = _value(point, piece)
        fields: dict[str, object] = {
            "id": f"{stem}.{point.name}",
            "address": f"{model.unit}/holding/{model.address + point.offset}",
            "type": point.data_type,
        }
        if scale != 1.0:
            fields["scale"] = scale
        fields["unit"] = unit_name
        quantity = role(model.id, point.name)
        if point.writable:
            fields["direction"] = "read-write"
            if quantity in _LIMITS:
                fields["limits"] = dict(_LIMITS[quantity])
        if quantity is not None:
            fields["der"] = der
            fields["quantity"] = quantity.value
        fields["description"] = f"{definition.label}: {point.label}"
        notes = [
            f"{definition.id} {definition.name}.{point.name} {point.type}"
            f"{' ' + point.units if point.units else ''}{scale_text}",
            f"read {raw * scale if scale != 1.0 else raw:g} {unit_name}",
        ]
        if point.type.startswith("bitfield"):
            notes.append("a bit field: add `bit:` points for the flags you need")
        if point.type.startswith("enum"):
            notes.append("an enumeration (see the SunSpec model for its values)")
        points.append(DraftPoint(fields, ": ".join(notes)))
    return points, unmapped, absent


def _scale_factor(sf: str | int, definition: ModelDef, words: Sequence[int]) -> int | str:
    """The scale factor a point uses, or why it cannot be resolved."""
    if isinstance(sf, int):
        return sf
    sf_point = definition.point(sf)
    if sf_point is None:
        return f"scale factor {sf} is not in the model"
    if sf_point.offset >= len(words):
        return f"scale factor {sf} is beyond the model's length"
    word = words[sf_point.offset]
    if word == 0x8000:
        return f"scale factor {sf} reads 'not implemented'"
    value = _signed16(word)
    if not -10 <= value <= 10:
        return f"scale factor {sf} = {value} is outside -10..10"
    return value
