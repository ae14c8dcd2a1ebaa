"""Units a point may carry: QUDT unit local names (http://qudt.org/vocab/unit/<name>)."""

from __future__ import annotations

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


def is_known(unit: str) -> bool:
    return unit in UNITS


def conversion_factor(source: str, target: str) -> float:
    """The factor that turns a value in `source` units into `target` units (Wh -> kWh:
    0.001); ValueError when the two measure different things."""
    src, dst = DIMENSIONS.get(source), DIMENSIONS.get(target)
    if src is None or dst is None or src[0] != dst[0]:
        raise ValueError(f"cannot convert {source} to {target}")
    return src[1] / dst[1]
