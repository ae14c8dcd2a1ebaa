"""One unit module: which unit fits which quantity, and conversion to and from the
quantity's canonical unit."""

from __future__ import annotations

import pytest

from gateway.mapping import Quantity
from gateway.units import (
    CANONICAL,
    DIMENSIONS,
    canonical_unit,
    convert,
    from_canonical,
    misfit,
    to_canonical,
)


@pytest.mark.parametrize(
    ("value", "unit", "quantity", "canonical"),
    [
        (1234.5, "W", "active_power", 1.2345),
        (0.05, "MegaW", "active_power_setpoint", 50.0),
        (-2500.0, "VAR", "reactive_power", -2.5),
        (12345.0, "W-HR", "energy_import", 12.345),
        (2.0, "MegaW-HR", "energy_export", 2000.0),
        (500.0, "VAR-HR", "reactive_energy_import", 0.5),
        (0.4, "KiloV", "voltage", 400.0),
        (37.5, "PERCENT", "state_of_charge", 37.5),
        (7.0, "KiloW", "other", 7.0),  # no canonical unit: as mapped
        (7.0, "W", "other", 7.0),
    ],
)
def test_to_and_from_canonical(value: float, unit: str, quantity: str, canonical: float) -> None:
    assert to_canonical(value, unit, quantity) == pytest.approx(canonical, rel=1e-12)
    assert from_canonical(canonical, quantity, unit) == pytest.approx(value, rel=1e-12)


def test_every_quantity_has_a_canonical_unit_or_keeps_its_own() -> None:
    for quantity in Quantity:
        if quantity is Quantity.OTHER:
            assert quantity.value not in CANONICAL
            assert canonical_unit(quantity.value, "W") == "W"
        else:
            assert CANONICAL[quantity.value] in DIMENSIONS, quantity


def test_conversion_is_exact_as_typed() -> None:
    # multiply then divide: 1234.5 W is 1.2345 kW, not 1.2345000000000002
    assert convert(1234.5, "W", "KiloW") == 1.2345


def test_units_of_different_dimensions_do_not_convert() -> None:
    with pytest.raises(ValueError, match="cannot convert KiloW to V"):
        convert(1.0, "KiloW", "V")


def test_misfit_names_the_units_that_fit() -> None:
    assert misfit("voltage", "KiloW") == "unit KiloW does not fit quantity voltage (use KiloV, V)"
    assert misfit("voltage", "KiloV") is None
    assert misfit("other", "KiloW") is None  # anything goes where no quantity is claimed
