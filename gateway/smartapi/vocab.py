"""Every namespace and term the Smart API profile uses, in one place.

Current QUDT (qudt.org/schema/qudt, qudt.org/vocab/unit, qudt.org/vocab/quantitykind) is
what we emit; the Smart API 1.1 forms (NASA QUDT unit and quantity properties and units,
quantity kinds in the Smart API namespace) are accepted on input and rewritten by
`gateway.smartapi.legacy`. Terms Smart API lacks (interval roles, references between the
flexibility messages, reading quality) live in the product namespace `MGMS`.
"""

from __future__ import annotations

import enum
from typing import Final

from rdflib import Namespace, URIRef
from rdflib.namespace import DCTERMS, RDF, XSD

from gateway import units
from gateway.smartapi import keep_literals_as_written

keep_literals_as_written()

__all__ = [
    "DCTERMS",
    "MGMS",
    "NASA_QUDT",
    "NASA_UNIT",
    "PREFIXES",
    "QK",
    "QUDT",
    "RDF",
    "SEC",
    "SMARTAPI",
    "UNIT",
    "XSD",
    "EntityKind",
    "QuantityKind",
    "curie",
    "unit_fits",
]


class _Namespace(Namespace):
    """An rdflib Namespace that keeps each term it has made as an attribute: the decoder
    and the shape check read terms such as `SMARTAPI.timeSeries` in their loops, and
    rdflib builds and checks a new URIRef at each read."""

    def __getattr__(self, name: str) -> URIRef:
        found = Namespace.__getattr__(self, name)
        setattr(self, name, found)  # found by plain attribute lookup from now on
        return found


SMARTAPI: Final = _Namespace("http://smart-api.io/ontology/1.0/smartapi#")
QUDT: Final = _Namespace("http://qudt.org/schema/qudt/")
UNIT: Final = _Namespace("http://qudt.org/vocab/unit/")
QK: Final = _Namespace("http://qudt.org/vocab/quantitykind/")
NASA_QUDT: Final = _Namespace("http://data.nasa.gov/qudt/owl/qudt#")
NASA_UNIT: Final = _Namespace("http://data.nasa.gov/qudt/owl/unit#")
#: product terms: roles of time series, references between flexibility messages, quality
MGMS: Final = _Namespace("urn:mgms:profile:1.0#")
#: product secure profile: graph signatures and encrypted parts
SEC: Final = _Namespace("urn:mgms:security:1.0#")

#: prefixes bound in every serialization we emit (Turtle prefixes, JSON-LD @context)
PREFIXES: Final[dict[str, str]] = {
    "smartapi": str(SMARTAPI),
    "qudt": str(QUDT),
    "unit": str(UNIT),
    "quantitykind": str(QK),
    "mgms": str(MGMS),
    "sec": str(SEC),
    "dcterms": str(DCTERMS),
    "rdf": str(RDF),
    "xsd": str(XSD),
}

# Smart API message classes and core properties.
REQUEST: Final = SMARTAPI.Request
RESPONSE: Final = SMARTAPI.Response
NOTIFICATION: Final = SMARTAPI.Notification
ERROR: Final = SMARTAPI.Error
ACTIVITY: Final = SMARTAPI.Activity
READ: Final = SMARTAPI.Read
WRITE: Final = SMARTAPI.Write
VALUE_OBJECT: Final = SMARTAPI.ValueObject
TIME_SERIES: Final = SMARTAPI.TimeSeries
TEMPORAL_CONTEXT: Final = SMARTAPI.TemporalContext
EVALUATION: Final = SMARTAPI.Evaluation
ENTITY: Final = SMARTAPI.Entity
MESSAGE_TYPES: Final = (REQUEST, RESPONSE, NOTIFICATION, ERROR)

# Legacy signing/encryption stubs (Smart API 1.1).
REFERENCE: Final = SMARTAPI.Reference
MULTIPART_REFERENCE: Final = SMARTAPI.MultipartReference
ENCRYPTED_REFERENCE: Final = SMARTAPI.EncryptedReference
PUBLIC_KEY_TYPE: Final = SMARTAPI.PublicKey


# Terms the decoder and the shape check compare in their loops. The parser hands out these
# very objects for them (`INTERNED`), so dictionary and set lookups match by identity:
# rdflib compares two distinct but equal terms in Python, thousands of times a message.
FIRST: Final = RDF.first
REST: Final = RDF.rest
NIL: Final = RDF.nil
VALUE: Final = RDF.value
TYPE: Final = RDF.type
BOOLEAN: Final = XSD.boolean
DOUBLES: Final = frozenset({XSD.double, XSD.float})
NUMERIC: Final = frozenset(
    {
        *DOUBLES,
        XSD.decimal,
        XSD.integer,
        XSD.int,
        XSD.long,
        XSD.short,
        XSD.byte,
        XSD.nonNegativeInteger,
        XSD.positiveInteger,
        XSD.nonPositiveInteger,
        XSD.negativeInteger,
        XSD.unsignedInt,
        XSD.unsignedLong,
        XSD.unsignedShort,
        XSD.unsignedByte,
    }
)
#: the interned terms by IRI
INTERNED: Final[dict[str, URIRef]] = {
    str(t): t for t in (FIRST, REST, NIL, VALUE, TYPE, BOOLEAN, *NUMERIC, XSD.dateTime)
}


class QuantityKind(enum.StrEnum):
    """QUDT quantity kinds the profile carries (local names under qudt.org/vocab/quantitykind)."""

    ACTIVE_POWER = "ActivePower"
    REACTIVE_POWER = "ReactivePower"
    APPARENT_POWER = "ApparentPower"
    ENERGY = "Energy"
    REACTIVE_ENERGY = "ReactiveEnergy"
    STATE_OF_CHARGE = "StateOfCharge"
    VOLTAGE = "Voltage"
    ELECTRIC_CURRENT = "ElectricCurrent"
    FREQUENCY = "Frequency"
    TEMPERATURE = "Temperature"
    DIMENSIONLESS = "Dimensionless"

    @property
    def iri(self) -> URIRef:
        return QK[self.value]


#: the dimension (gateway.units) each quantity kind measures; a kind takes every unit of
#: its dimensions, anything else is a wrong unit on input
_DIMENSIONS_OF: Final[dict[QuantityKind, tuple[str, ...]]] = {
    QuantityKind.ACTIVE_POWER: ("active_power",),
    QuantityKind.REACTIVE_POWER: ("reactive_power",),
    QuantityKind.APPARENT_POWER: ("apparent_power",),
    QuantityKind.ENERGY: ("active_energy",),
    QuantityKind.REACTIVE_ENERGY: ("reactive_energy",),
    QuantityKind.STATE_OF_CHARGE: ("ratio",),
    QuantityKind.VOLTAGE: ("voltage",),
    QuantityKind.ELECTRIC_CURRENT: ("current",),
    QuantityKind.FREQUENCY: ("frequency",),
    QuantityKind.TEMPERATURE: ("temperature",),
    QuantityKind.DIMENSIONLESS: ("none", "ratio", "time"),
}

#: units (gateway.units local names) each quantity kind may carry
UNITS_OF: Final[dict[QuantityKind, frozenset[str]]] = {
    kind: units.units_of(*dims) for kind, dims in _DIMENSIONS_OF.items()
}

#: factor that turns a value in the unit into the profile's base unit of its kind
#: (kW, kvar, kWh, kvarh), so decoders hand the flexibility code one unit
TO_BASE: Final[dict[str, float]] = {
    u: units.conversion_factor(u, base)
    for base in ("KiloW", "KiloVAR", "KiloW-HR", "KiloVAR-HR")
    for u in units.units_of(units.dimension(base))
}


def unit_fits(kind: QuantityKind, unit: str) -> bool:
    return unit in UNITS_OF[kind]


#: Smart API 1.1 / NASA QUDT unit local names -> current QUDT local names
LEGACY_UNITS: Final[dict[str, str]] = {
    "Watt": "W",
    "Kilowatt": "KiloW",
    "Megawatt": "MegaW",
    "VoltAmpereReactive": "VAR",
    "KilovoltAmpereReactive": "KiloVAR",
    "KilovoltAmpere": "KiloV-A",
    "WattHour": "W-HR",
    "Kilowatthour": "KiloW-HR",
    "KilowattHour": "KiloW-HR",
    "Megawatthour": "MegaW-HR",
    "Volt": "V",
    "Kilovolt": "KiloV",
    "Ampere": "A",
    "Hertz": "HZ",
    "Percent": "PERCENT",
    "DegreeCelsius": "DEG_C",
    "SecondTime": "SEC",
    "Unitless": "UNITLESS",
}

#: Smart API 1.1 quantity kinds (in the smartapi namespace) -> current QUDT quantity kinds
LEGACY_QUANTITIES: Final[dict[URIRef, QuantityKind]] = {
    SMARTAPI.ActivePower: QuantityKind.ACTIVE_POWER,
    SMARTAPI.ReactivePower: QuantityKind.REACTIVE_POWER,
    SMARTAPI.ApparentPower: QuantityKind.APPARENT_POWER,
    SMARTAPI.Energy: QuantityKind.ENERGY,
    SMARTAPI.StateOfCharge: QuantityKind.STATE_OF_CHARGE,
    SMARTAPI.Voltage: QuantityKind.VOLTAGE,
    SMARTAPI.Current: QuantityKind.ELECTRIC_CURRENT,
    SMARTAPI.Frequency: QuantityKind.FREQUENCY,
    SMARTAPI.Temperature: QuantityKind.TEMPERATURE,
}


class EntityKind(enum.StrEnum):
    """Entity classes: Smart API's where it has one, the product namespace otherwise."""

    DEVICE = str(SMARTAPI.Device)
    DER = str(SMARTAPI.DistributedEnergyResource)
    BATTERY = str(SMARTAPI.Battery)
    PV = str(SMARTAPI.PhotovoltaicPanel)
    INVERTER = str(SMARTAPI.Inverter)
    ENERGY_STORAGE = str(SMARTAPI.EnergyStorage)
    MICROGRID = str(MGMS.Microgrid)
    COUPLING_POINT = str(MGMS.CouplingPoint)
    CONTROLLABLE_LOAD = str(MGMS.ControllableLoad)
    GENERATOR = str(MGMS.Generator)
    EV_CHARGER = str(MGMS.EvCharger)

    @property
    def iri(self) -> URIRef:
        return URIRef(self.value)


_SORTED_PREFIXES = sorted(PREFIXES.items(), key=lambda kv: -len(kv[1]))


def curie(iri: object) -> str:
    """An IRI as prefix:local for messages (the longest namespace wins), else <iri>."""
    text = str(iri)
    for prefix, ns in _SORTED_PREFIXES:
        if text.startswith(ns):
            return f"{prefix}:{text[len(ns) :]}"
    return f"<{text}>"
