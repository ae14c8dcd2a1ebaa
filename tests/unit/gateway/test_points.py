"""The point table hands every value on in its quantity's canonical unit."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from gateway.config import LoadedConfig
from gateway.loader import load_config
from gateway.mapping import Quantity
from gateway.model import Acquired, Reading
from gateway.points import PointTable
from tests.support.procs import DEMO_CONFIG


def demo_with_units(units: dict[str, str]) -> LoadedConfig:
    """The demo config with some points mapped in other units."""
    config = load_config(DEMO_CONFIG)
    for mapping in config.mappings.values():
        for device in mapping.devices:
            device.points = [
                p.model_copy(update={"unit": units[p.id]}) if p.id in units else p
                for p in device.points
            ]
    return config


def test_readings_enter_in_the_canonical_unit() -> None:
    table = PointTable(demo_with_units({"bess1.p": "W", "pcc.p": "MegaW", "pcc.e_import": "W-HR"}))
    table.update(
        [
            Reading("bess1.p", -12345.5, "W"),
            Reading("pcc.p", 0.0125, "MegaW"),
            Reading("pcc.e_import", 1500, "W-HR"),
            Reading("bess1.soc", 55.0, "PERCENT"),
        ]
    )
    assert table.value("bess1", Quantity.ACTIVE_POWER) == pytest.approx(-12.3455)
    assert table.value("pcc", Quantity.ACTIVE_POWER) == pytest.approx(12.5)
    assert table.value("pcc", Quantity.ENERGY_IMPORT) == pytest.approx(1.5)
    assert table.value("bess1", Quantity.STATE_OF_CHARGE) == 55.0
    latest = table.latest("bess1.p")
    assert latest is not None and latest.unit == "KiloW"
    mapped = table.mapped("pcc.e_import")
    assert mapped is not None and mapped.unit == "KiloW-HR"


def test_a_point_without_a_quantity_keeps_its_unit() -> None:
    table = PointTable(load_config(DEMO_CONFIG))
    table.update([Reading("pcc.meter.demand", 7.5, "KiloW")])
    latest = table.latest("pcc.meter.demand")
    assert latest is not None and (latest.value, latest.unit) == (7.5, "KiloW")


def test_invalid_readings_carry_the_canonical_unit() -> None:
    config = demo_with_units({"bess1.p": "W"})
    table = PointTable(config)
    device = next(d for d in config.devices if d.id == "bess1-inverter")
    table.mark_device_down(device, "link down")
    latest = table.latest("bess1.p")
    assert latest is not None and latest.value is None and latest.unit == "KiloW"


def test_roles_follow_a_remap() -> None:
    """Points by role, in mapping order, as the mapping now says (the index is rebuilt)."""
    config = load_config(DEMO_CONFIG)
    table = PointTable(config)
    assert [m.point.id for m in table.find("pcc", Quantity.ACTIVE_POWER)] == [
        "pcc.p",
        "pcc.meter.p",
    ]
    for mapping in config.mappings.values():
        for device in mapping.devices:
            device.points = [p for p in device.points if p.id != "pcc.p"]
    table.remap(config)
    assert [m.point.id for m in table.find("pcc", Quantity.ACTIVE_POWER)] == ["pcc.meter.p"]
    assert table.find("nobody", Quantity.ACTIVE_POWER) == []


def test_listeners_hear_each_update_once_with_the_whole_batch() -> None:
    """One call per update (a poll), after the table holds every reading of it: mapped
    points only, in order, in the canonical unit."""
    table = PointTable(demo_with_units({"bess1.p": "W"}))
    heard: list[tuple[list[tuple[str, object, str]], bool]] = []

    def listener(batches: Sequence[Acquired]) -> None:
        readings = [r for batch in batches for r in batch.readings()]
        held = all(table.latest(r.point) == r for r in readings)
        heard.append(([(r.point, r.value, r.unit) for r in readings], held))

    table.listen(listener)
    table.update(
        [
            Reading("bess1.p", 2500.0, "W"),
            Reading("nobody.knows", 1.0, "KiloW"),
            Reading("bess1.soc", 55.0, "PERCENT"),
        ]
    )
    table.update([Reading("nobody.knows", 1.0, "KiloW")])  # nothing mapped: no call
    assert heard == [([("bess1.p", 2.5, "KiloW"), ("bess1.soc", 55.0, "PERCENT")], True)]
