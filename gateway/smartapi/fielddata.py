"""Field data as Smart API objects: the microgrid, its DERs, coupling point and devices as
entities, each mapped point as a value object (quantity kind, unit, value, quality, time).

`entities` builds the model objects from the config and a point-table snapshot;
`describe` wraps them into a Notification and `describe_graph` gives the rdflib graph, so
the gateway can publish its structure and live state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from rdflib import Graph

from gateway.config import DerType, LoadedConfig
from gateway.mapping import Point, Quantity
from gateway.model import Reading, utcnow
from gateway.points import MappedPoint, PointTable
from gateway.smartapi.encode import der_iri, device_iri, microgrid_iri, to_tree
from gateway.smartapi.messages import (
    Activity,
    Entity,
    Method,
    Notification,
    ValueObject,
    new_message_id,
)
from gateway.smartapi.tree import to_graph
from gateway.smartapi.vocab import UNITS_OF, EntityKind, QuantityKind
from gateway.units import canonical_unit

_QK = QuantityKind
#: the quantity kind a point's role suggests; the unit decides when they disagree
ROLE_KINDS: dict[Quantity, QuantityKind] = {
    Quantity.ACTIVE_POWER: _QK.ACTIVE_POWER,
    Quantity.ACTIVE_POWER_SETPOINT: _QK.ACTIVE_POWER,
    Quantity.ACTIVE_POWER_LIMIT: _QK.ACTIVE_POWER,
    Quantity.AVAILABLE_POWER: _QK.ACTIVE_POWER,
    Quantity.REACTIVE_POWER: _QK.REACTIVE_POWER,
    Quantity.REACTIVE_POWER_SETPOINT: _QK.REACTIVE_POWER,
    Quantity.STATE_OF_CHARGE: _QK.STATE_OF_CHARGE,
    Quantity.ENERGY_IMPORT: _QK.ENERGY,
    Quantity.ENERGY_EXPORT: _QK.ENERGY,
    Quantity.ENERGY_CAPACITY: _QK.ENERGY,
    Quantity.REACTIVE_ENERGY_IMPORT: _QK.REACTIVE_ENERGY,
    Quantity.REACTIVE_ENERGY_EXPORT: _QK.REACTIVE_ENERGY,
    Quantity.VOLTAGE: _QK.VOLTAGE,
    Quantity.CURRENT: _QK.ELECTRIC_CURRENT,
    Quantity.FREQUENCY: _QK.FREQUENCY,
    Quantity.TEMPERATURE: _QK.TEMPERATURE,
    Quantity.STATUS: _QK.DIMENSIONLESS,
    Quantity.SWITCH: _QK.DIMENSIONLESS,
    Quantity.OTHER: _QK.DIMENSIONLESS,
}

#: the set point role a Write on (entity, quantity kind) goes to
SETPOINT_ROLES: dict[QuantityKind, Quantity] = {
    _QK.ACTIVE_POWER: Quantity.ACTIVE_POWER_SETPOINT,
    _QK.REACTIVE_POWER: Quantity.REACTIVE_POWER_SETPOINT,
}

DER_KINDS: dict[DerType, frozenset[EntityKind]] = {
    DerType.BATTERY: frozenset({EntityKind.DER, EntityKind.BATTERY, EntityKind.ENERGY_STORAGE}),
    DerType.PV: frozenset({EntityKind.DER, EntityKind.PV}),
    DerType.LOAD: frozenset({EntityKind.DER, EntityKind.CONTROLLABLE_LOAD}),
    DerType.GENERATOR: frozenset({EntityKind.DER, EntityKind.GENERATOR}),
    DerType.EV_CHARGER: frozenset({EntityKind.DER, EntityKind.EV_CHARGER}),
}


def quantity_kind(point: Point) -> QuantityKind:
    kind = ROLE_KINDS[point.quantity]
    if point.unit in UNITS_OF[kind]:
        return kind
    # e.g. a curtailment limit in PERCENT: dimensionless, not active power
    if point.unit in UNITS_OF[QuantityKind.DIMENSIONLESS]:
        return QuantityKind.DIMENSIONLESS
    return next(k for k, units in UNITS_OF.items() if point.unit in units)


def value_object(point: Point, reading: Reading | None) -> ValueObject:
    value = reading.value if reading is not None else None
    if isinstance(value, float) and not math.isfinite(value):
        value = None  # only possible on an invalid reading; its quality says so
    # the point table holds values in the quantity's canonical unit
    unit = canonical_unit(point.quantity.value, point.unit)
    return ValueObject(
        quantity=quantity_kind(point),
        unit=reading.unit if reading is not None else unit,
        value=value,
        point=point.id,
        role=point.quantity.value,
        quality=reading.quality if reading is not None else None,
        time=(reading.source_time or reading.gateway_time) if reading is not None else None,
    )


@dataclass(frozen=True)
class Owner:
    """Which entity a point belongs to: its DER (or the coupling point), else its device."""

    iri: str
    der: str | None
    device: str | None


def owner_of(config: LoadedConfig, mapped: MappedPoint) -> Owner:
    mg = config.gateway.microgrid.id
    if mapped.point.der is not None:
        return Owner(der_iri(mg, mapped.point.der), mapped.point.der, None)
    return Owner(device_iri(mg, mapped.device.id), None, mapped.device.id)


def entities(
    config: LoadedConfig, table: PointTable, snapshot: Mapping[str, Reading] | None = None
) -> tuple[Entity, ...]:
    """The microgrid entity and one entity per DER, coupling point and device that has
    points without a DER; `snapshot` defaults to the table's latest readings."""
    latest = snapshot if snapshot is not None else table.snapshot()
    mg = config.gateway.microgrid.id
    pcc = config.gateway.coupling_point.id
    values: dict[str, list[ValueObject]] = {}
    for mapped in table:
        owner = owner_of(config, mapped)
        values.setdefault(owner.iri, []).append(
            value_object(mapped.point, latest.get(mapped.point.id))
        )
    out: list[Entity] = []
    for der in config.gateway.ders:
        iri = der_iri(mg, der.id)
        out.append(
            Entity(
                iri=iri,
                kinds=DER_KINDS[der.type],
                identifier=der.id,
                name=der.description or None,
                value_objects=tuple(values.pop(iri, ())),
            )
        )
    pcc_iri = der_iri(mg, pcc)
    out.append(
        Entity(
            iri=pcc_iri,
            kinds=frozenset({EntityKind.COUPLING_POINT, EntityKind.DEVICE}),
            identifier=pcc,
            value_objects=tuple(values.pop(pcc_iri, ())),
        )
    )
    for device in config.devices:
        iri = device_iri(mg, device.id)
        if iri in values:
            out.append(
                Entity(
                    iri=iri,
                    kinds=frozenset({EntityKind.DEVICE}),
                    identifier=device.id,
                    name=device.description or None,
                    value_objects=tuple(values.pop(iri)),
                )
            )
    # the loader rejects points of unknown DERs, so nothing is left over
    microgrid = Entity(
        iri=microgrid_iri(mg),
        kinds=frozenset({EntityKind.MICROGRID}),
        identifier=mg,
        name=config.gateway.microgrid.name or None,
        parts=tuple(e.iri for e in out),
    )
    return (microgrid, *out)


def describe(
    config: LoadedConfig,
    table: PointTable,
    *,
    sender: str,
    message_id: str | None = None,
    now: datetime | None = None,
) -> Notification:
    """The microgrid and its live state as one Smart API Notification."""
    return Notification(
        id=message_id or new_message_id(),
        sender=sender,
        generated_at=now or utcnow(),
        activities=(Activity(method=Method.READ, entities=entities(config, table)),),
    )


def describe_graph(config: LoadedConfig, table: PointTable, *, sender: str) -> Graph:
    return to_graph(to_tree(describe(config, table, sender=sender)))


def gateway_sender(config: LoadedConfig) -> str:
    """The IRI this gateway signs its messages with (smartapi:generatedBy)."""
    return f"urn:mgms:gateway:{config.gateway.microgrid.id}"
