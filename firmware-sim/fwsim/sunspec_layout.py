"""A SunSpec register layout around a Modbus device's mapped points.

A mapping device whose options name a SunSpec layout (`sunspec: [{unit, base, models}]`)
is served as a SunSpec device: the `SunS` marker at `base`, each model's ID and L, the
common model (manufacturer, model, serial number), the scale-factor registers and the end
model, with every point the mapping does not map reading SunSpec's "not implemented". The
mapped points stay live through the Modbus front end; their scale factors follow from the
mapping's `scale` and `unit` (W_SF = -1 for a point read as int16 x 0.0001 KiloW), and a
mapping that cannot be expressed so (a scale that is no power of ten, a type that is not
the model's) is refused at start, naming the point.
"""

from __future__ import annotations

from collections.abc import Sequence

from fwsim.modbus_server import UnitImage
from gateway.discover.sunspec import encode_string
from gateway.discover.sunspec_models import (
    MARKER,
    NOT_IMPLEMENTED,
    ModelDef,
    model_def,
    qudt_unit,
    scale_factor_for,
)
from gateway.mapping import Device
from gateway.protocols.modbus import ModbusAddress, ModbusOptions, SunSpecLayout, Table
from gateway.units import conversion_factor

#: what the common model (1) of a simulated device says
MANUFACTURER = "MGMS fwsim"
VERSION = "1.0"


class LayoutError(ValueError):
    """The mapping and its SunSpec layout contradict each other."""


def _model(model_id: int, device: Device) -> ModelDef:
    definition = model_def(model_id)
    if definition is None:
        raise LayoutError(f"device {device.id!r}: SunSpec model {model_id} has no definition")
    return definition


def _common(definition: ModelDef, device: Device, unit: int) -> dict[str, list[int]]:
    strings = {"Mn": MANUFACTURER, "Md": device.id, "Vr": VERSION, "SN": f"{device.id}-{unit}"}
    out = {}
    for point in definition.points:
        if point.name in strings:
            out[point.name] = encode_string(strings[point.name], point.size)
    out["DA"] = [unit]
    return out


def layout_words(device: Device, layout: SunSpecLayout) -> dict[int, int]:
    """address -> word of the static part of a unit's layout: marker, headers, common
    model, "not implemented" for every point and the scale factors of the mapped points."""
    words: dict[int, int] = {layout.base: MARKER[0], layout.base + 1: MARKER[1]}
    mapped = _mapped_points(device, layout.unit)
    address = layout.base + 2
    for model_id in layout.models:
        definition = _model(model_id, device)
        common = _common(definition, device, layout.unit) if model_id == 1 else {}
        sfs: dict[str, int] = {}
        for point in definition.points:
            at = address + point.offset
            fill: Sequence[int] = common.get(point.name) or NOT_IMPLEMENTED.get(
                point.type, (0,) * point.size
            )
            if point.name == "ID":
                fill = [model_id]
            elif point.name == "L":
                fill = [definition.fixed_length]
            for i, word in enumerate(fill):
                words[at + i] = word
            served = mapped.get(at)
            if served is not None:
                _check_point(device, definition, point.name, served, sfs)
        for name, value in sfs.items():
            sf_point = definition.point(name)
            assert sf_point is not None  # _check_point found it
            words[address + sf_point.offset] = value & 0xFFFF
        address += 2 + definition.fixed_length
    words[address], words[address + 1] = 0xFFFF, 0
    return words


def _mapped_points(device: Device, unit: int) -> dict[int, tuple[str, ModbusAddress]]:
    out = {}
    for point in device.points:
        address = device.address_of(point.id)
        assert isinstance(address, ModbusAddress)
        if address.unit == unit and address.table is Table.HOLDING:
            out[address.address] = (point.id, address)
    return out


def _check_point(
    device: Device,
    definition: ModelDef,
    name: str,
    served: tuple[str, ModbusAddress],
    sfs: dict[str, int],
) -> None:
    """The mapped point fits the SunSpec point at its address; record its scale factor."""
    point_id, address = served
    sunspec = definition.point(name)
    assert sunspec is not None
    where = f"device {device.id!r}, point {point_id!r} (SunSpec {definition.id}.{name})"
    if sunspec.data_type != address.data_type.value:
        raise LayoutError(f"{where}: type {address.data_type.value}, the model says {sunspec.type}")
    point = next(p for p in device.points if p.id == point_id)
    unit = qudt_unit(sunspec.units)
    if unit is None:
        raise LayoutError(f"{where}: the model's unit {sunspec.units!r} has no gateway unit")
    try:
        scale = point.scale * conversion_factor(point.unit, unit[0])
    except ValueError:
        raise LayoutError(
            f"{where}: unit {point.unit} is not the model's {sunspec.units}"
        ) from None
    sf = scale_factor_for(scale, unit[1])
    if point.offset != 0 or sf is None:
        raise LayoutError(f"{where}: scale {point.scale} is no SunSpec scale factor")
    if not isinstance(sunspec.sf, str):
        if sf != (sunspec.sf or 0):
            raise LayoutError(f"{where}: scale {point.scale} but the model fixes {sunspec.sf}")
        return
    if sfs.setdefault(sunspec.sf, sf) != sf:
        raise LayoutError(f"{where}: scale factor {sunspec.sf} differs between its points")
    if definition.point(sunspec.sf) is None:
        raise LayoutError(f"{where}: scale factor {sunspec.sf} is not in the model")


def serve_sunspec(device: Device, units: Sequence[UnitImage]) -> None:
    """Lay the device's SunSpec layouts into the register images of its units."""
    options = device.typed_options
    assert isinstance(options, ModbusOptions)
    for layout in options.sunspec:
        image = next((u for u in units if u.unit == layout.unit), None)
        if image is None:
            raise LayoutError(f"device {device.id!r}: SunSpec unit {layout.unit} has no points")
        words = layout_words(device, layout)
        low, values = image.image.get(Table.HOLDING, (min(words), []))
        new_low = min(low, min(words))
        new_high = max(low + len(values), max(words) + 1)
        grown = [0] * (new_high - new_low)
        grown[low - new_low : low - new_low + len(values)] = values
        for at, word in words.items():
            grown[at - new_low] = word
        image.image[Table.HOLDING] = (new_low, grown)
