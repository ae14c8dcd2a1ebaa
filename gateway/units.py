"""Units: the one place that knows which units exist, which quantity each may measure, and
how values convert between them.

Units are QUDT unit local names (http://qudt.org/vocab/unit/<name>). Every quantity of the
mapping vocabulary (`gateway.mapping.Quantity`, keyed here by its value so this module
imports nothing of the gateway) has a canonical unit: kW, kvar, kWh, kvarh, %, V, A, Hz,
°C. The point table converts each reading into it once, on the way in
(`gateway.points.PointTable.update`), and writes convert back from it into the point's unit
(`from_canonical`), so flexibility, status and Smart API summaries never see a W or a MWh.
"""

from __future__ import annotations

from typing import Final

QUDT_UNIT_BASE = "http://qudt.org/vocab/unit/"

#: local name -> human symbol
UNITS: dict[str, str] = {
    "W": "W",
    "KiloW": "kW",
    "MegaW": "MW",
    "VAR": "var",
    "KiloVAR": "kvar",
    "V-A": "VA",
    "KiloV-A": "kVA",
    "W-HR": "Wh",
    "KiloW-HR": "kWh",
    "MegaW-HR": "MWh",
    "VAR-HR": "varh",
    "KiloVAR-HR": "kvarh",
    "V-A-HR": "VAh",
    "V": "V",
    "KiloV": "kV",
    "A": "A",
    "HZ": "Hz",
    "PERCENT": "%",
    "DEG_C": "°C",
    "SEC": "s",
    "UNITLESS": "",
}


#: local name -> (dimension, factor to the dimension's base unit); units of one dimension
#: convert into each other by the ratio of their factors
DIMENSIONS: dict[str, tuple[str, float]] = {
    "W": ("active_power", 1.0),
    "KiloW": ("active_power", 1e3),
    "MegaW": ("active_power", 1e6),
    "VAR": ("reactive_power", 1.0),
    "KiloVAR": ("reactive_power", 1e3),
    "V-A": ("apparent_power", 1.0),
    "KiloV-A": ("apparent_power", 1e3),
    "W-HR": ("active_energy", 1.0),
    "KiloW-HR": ("active_energy", 1e3),
    "MegaW-HR": ("active_energy", 1e6),
    "VAR-HR": ("reactive_energy", 1.0),
    "KiloVAR-HR": ("reactive_energy", 1e3),
    "V-A-HR": ("apparent_energy", 1.0),
    "V": ("voltage", 1.0),
    "KiloV": ("voltage", 1e3),
    "A": ("current", 1.0),
    "HZ": ("frequency", 1.0),
    "PERCENT": ("ratio", 1.0),
    "DEG_C": ("temperature", 1.0),
    "SEC": ("time", 1.0),
    "UNITLESS": ("none", 1.0),
}

#: quantity (a `gateway.mapping.Quantity` value) -> its canonical unit; the point's unit
#: must measure the same dimension. `other` is absent: such a point keeps its own unit.
CANONICAL: Final[dict[str, str]] = {
    "active_power": "KiloW",
    "active_power_setpoint": "KiloW",
    "available_power": "KiloW",
    "reactive_power": "KiloVAR",
    "reactive_power_setpoint": "KiloVAR",
    # a ceiling (PV) or curtailment share (load) in percent, as the flexibility control writes
    "active_power_limit": "PERCENT",
    "state_of_charge": "PERCENT",
    "energy_import": "KiloW-HR",
    "energy_export": "KiloW-HR",
    "energy_capacity": "KiloW-HR",
    "reactive_energy_import": "KiloVAR-HR",
    "reactive_energy_export": "KiloVAR-HR",
    "voltage": "V",
    "current": "A",
    "frequency": "HZ",
    "temperature": "DEG_C",
    "status": "UNITLESS",
    "switch": "UNITLESS",
}


def is_known(unit: str) -> bool:
    return unit in UNITS


def dimension(unit: str) -> str:
    return DIMENSIONS[unit][0]


def units_of(*dimensions: str) -> frozenset[str]:
    """Every known unit that measures one of `dimensions`."""
    return frozenset(u for u, (dim, _) in DIMENSIONS.items() if dim in dimensions)


def conversion_factor(source: str, target: str) -> float:
    """The factor that turns a value in `source` units into `target` units (Wh -> kWh:
    0.001); ValueError when the two measure different things."""
    src, dst = DIMENSIONS.get(source), DIMENSIONS.get(target)
    if src is None or dst is None or src[0] != dst[0]:
        raise ValueError(f"cannot convert {source} to {target}")
    return src[1] / dst[1]


def convert(value: float, source: str, target: str) -> float:
    """`value` in `source` units expressed in `target` units; ValueError when they measure
    different things. Multiplies then divides, so 1234.5 W is 1.2345 kW exactly as typed."""
    if source == target:
        return value
    src, dst = DIMENSIONS.get(source), DIMENSIONS.get(target)
    if src is None or dst is None or src[0] != dst[0]:
        raise ValueError(f"cannot convert {source} to {target}")
    return value * src[1] / dst[1]


def canonical_unit(quantity: str, unit: str) -> str:
    """The unit a value of `quantity` measured in `unit` is handed on in: the quantity's
    canonical unit, or `unit` itself for a quantity without one (`other`)."""
    return CANONICAL.get(quantity, unit)


def to_canonical(value: float, unit: str, quantity: str) -> float:
    return convert(value, unit, canonical_unit(quantity, unit))


def from_canonical(value: float, quantity: str, unit: str) -> float:
    """A value in the quantity's canonical unit expressed in the point's `unit`."""
    return convert(value, canonical_unit(quantity, unit), unit)


def misfit(quantity: str, unit: str) -> str | None:
    """Why `unit` cannot measure `quantity` (None when it can)."""
    canonical = CANONICAL.get(quantity)
    if canonical is None or unit not in DIMENSIONS:
        return None
    wanted = dimension(canonical)
    if dimension(unit) == wanted:
        return None
    fitting = ", ".join(sorted(units_of(wanted)))
    return f"unit {unit} does not fit quantity {quantity} (use {fitting})"
