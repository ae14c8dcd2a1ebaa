"""DLMS drafting from an object list: roles from OBIS, units from scaler_unit, limiter
thresholds in the monitored register's unit, and what cannot be drafted said so."""

from __future__ import annotations

from pathlib import Path

from gateway.discover import dlms
from gateway.discover.draft import Draft, render
from gateway.loader import check_files


def draft_of(objects: list[dlms.Found], der: str, coupling_point: str | None = None) -> Draft:
    return dlms.draft_meter(
        objects,
        connection={"host": "h", "port": 4059},
        options={"client_address": 16, "authentication": "none"},
        origin="t",
        device_id="m",
        der=der,
        coupling_point=coupling_point,
    )


def test_object_list_drafted(tmp_path: Path) -> None:
    objects = [
        dlms.Found(15, "0.0.40.0.0.255"),
        dlms.Found(3, "1.0.2.8.0.255", scaler=2, unit=30),  # hectowatt-hours
        dlms.Found(3, "1.0.21.7.0.255", scaler=0, unit=27),
        dlms.Found(3, "1.0.99.9.0.255", scaler=0, unit=13),  # a unit the gateway lacks
        dlms.Found(71, "0.0.17.0.0.255", monitored=(3, "1.0.21.7.0.255", 2)),
        dlms.Found(71, "0.0.17.0.1.255", monitored=(1, "0.0.96.1.0.255", 2)),
        dlms.Found(7, "1.0.99.1.0.255", capture=((8, "0.0.1.0.0.255", 2),)),
        dlms.Found(9, "0.0.10.0.0.255"),
        dlms.Found(1, "1.0.14.7.0.255"),
        dlms.Found(3, "1.0.1.8.0.255", problem="attribute 3: access denied"),
    ]
    draft = draft_of(objects, "pcc")
    points = {p.fields["address"]: p.fields for p in draft.devices[0].points}
    export = points["3/1.0.2.8.0.255/2"]
    assert (export["unit"], export["quantity"]) == ("KiloW-HR", "energy_export")
    assert "scale" not in export  # the driver applies the meter's scaler and converts Wh
    assert "quantity" not in points["3/1.0.21.7.0.255/2"]  # phase-1 power: no role
    assert points["1/1.0.14.7.0.255/2"]["unit"] == "HZ"
    threshold = points["71/0.0.17.0.0.255/4"]
    assert (threshold["unit"], threshold["scale"], threshold["direction"]) == (
        "KiloW",
        0.001,
        "read-write",
    )
    assert draft.devices[0].options["profile_obis"] == "1.0.99.1.0.255"
    assert draft.unmapped == [
        "class 3 (Register) 1.0.99.9.0.255: unit code 13 has no gateway unit",
        "class 71 (Limiter) 0.0.17.0.1.255: monitored value (1, '0.0.96.1.0.255', 2) not a"
        " register",
        "class 9 (?) 0.0.10.0.0.255: class not drafted",
        "class 3 (Register) 1.0.1.8.0.255: attribute 3: access denied",
    ]
    path = tmp_path / "d.yaml"
    path.write_text(render(draft))
    assert check_files([path]) == []


def test_a_ders_meter_power_is_drafted_in_the_der_sign_convention() -> None:
    objects = [
        dlms.Found(3, "1.0.1.7.0.255", scaler=0, unit=27),  # import power
        dlms.Found(3, "1.0.16.7.0.255", scaler=0, unit=27),  # import minus export
    ]

    def powers(der: str, coupling_point: str | None) -> list[dict[str, object]]:
        return [p.fields for p in draft_of(objects, der, coupling_point).devices[0].points]

    assert [p.get("scale") for p in powers("load1", "pcc")] == [-1, -1]
    assert [p.get("scale") for p in powers("pcc", "pcc")] == [None, None]
    assert [p.get("scale") for p in powers("load1", None)] == [None, None]  # not known
