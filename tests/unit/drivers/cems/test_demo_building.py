"""The demo's building behind its CEMS is a controllable load for the flexibility
functions, like the Modbus-controlled load of the demo."""

from __future__ import annotations

from gateway.flex.capability import DerCapability
from gateway.loader import load_config
from gateway.points import PointTable
from tests.support.procs import DEMO_CONFIG


def test_the_building_load_and_its_charger_are_controllable_through_the_cems() -> None:
    config = load_config(DEMO_CONFIG)
    table = PointTable(config)
    ders = {d.id: d for d in config.gateway.ders}
    for der_id, curtail_max in (("load2", 60.0), ("ev1", 100.0)):
        (device,) = {m.device.protocol for m in table if m.point.der == der_id}
        assert device == "cems"
        capability = DerCapability.of(ders[der_id], table)
        assert capability.p_controllable, der_id
        assert capability.curtail_max_pct == curtail_max
