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
    "KiloV-A": "kVA",
    "W-HR": "Wh",
    "KiloW-HR": "kWh",
    "MegaW-HR": "MWh",
    "KiloVAR-HR": "kvarh",
    "V": "V",
    "KiloV": "kV",
    "A": "A",
    "HZ": "Hz",
    "PERCENT": "%",
    "DEG_C": "°C",
    "SEC": "s",
    "UNITLESS": "",
}


def is_known(unit: str) -> bool:
    return unit in UNITS
