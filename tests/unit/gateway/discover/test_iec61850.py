"""IEC 61850 drafting from a browsed model: roles from LN classes, units from SIUnit,
controls with their ctlModel, and what cannot be mapped said so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.discover import iec61850
from gateway.discover.draft import render
from gateway.loader import check_files


def leaf(ln: str, fc: str, path: str, mms: str, size: int = 32) -> dict[str, Any]:
    return {"ln": ln, "fc": fc, "path": path.split("."), "mms": mms, "size": size}


BROWSED = {
    "lds": {
        "IED1LD0": [
            leaf("MMXU1", "MX", "TotW.mag.f", "float"),
            leaf("MMXU1", "MX", "TotW.q", "bitstring", 13),
            leaf("MMXU1", "MX", "TotW.t", "utc"),
            leaf("MMXU1", "CF", "TotW.units.SIUnit", "int", 8),
            leaf("MMXU1", "MX", "Hz.mag.f", "float"),
            leaf("Bat1ZBAT1", "MX", "SocPct.mag.f", "float"),
            leaf("XCBR1", "ST", "Pos.stVal", "bitstring", 2),
            leaf("XCBR1", "CF", "Pos.ctlModel", "int", 8),
            leaf("XCBR1", "CO", "Pos.Oper.ctlVal", "bool", -1),
            leaf("GGIO1", "CO", "SPCSO1.Oper.ctlVal", "bool", -1),
            leaf("GGIO1", "ST", "SPCSO1.stVal", "bool", -1),
            leaf("GGIO1", "ST", "Cnt.stVal", "int", 64),
            leaf("LPHD1", "DC", "PhyNam.vendor", "string"),
        ]
    },
    "ctl_models": {"IED1LD0/XCBR1.Pos": 4, "IED1LD0/GGIO1.SPCSO1": 0},
    "units": {"IED1LD0/MMXU1.TotW": {"SIUnit": 38, "multiplier": 3}},
    "data_sets": {
        "IED1LD0/LLN0.Meas": ["IED1LD0/MMXU1.TotW[MX]", "IED1LD0/MMXU1.Hz[MX]"],
        "IED1LD0/LLN0.Leaves": ["IED1LD0/MMXU1.TotW.mag.f[MX]"],
    },
    "reports": {
        "IED1LD0/LLN0.BR.brcbMeas": "IED1LD0/LLN0.Meas",
        "IED1LD0/LLN0.RP.urcbMeas": "IED1LD0/LLN0.Meas",
    },
}


def test_roles_units_and_controls(tmp_path: Path) -> None:
    model = iec61850.from_browse("IED1", BROWSED)
    draft = iec61850.draft_ied(
        model, connection={"host": "10.0.0.5", "port": 102}, origin="t", device_id="ied1", der="b"
    )
    points = {p.fields["address"]: p.fields for p in draft.devices[0].points}
    tot_w = points["IED1LD0/MMXU1.TotW.mag.f@MX"]
    assert (tot_w["unit"], tot_w["quantity"], tot_w["der"]) == ("KiloW", "active_power", "b")
    assert points["IED1LD0/MMXU1.Hz.mag.f@MX"]["unit"] == "HZ"
    assert points["IED1LD0/Bat1ZBAT1.SocPct.mag.f@MX"]["quantity"] == "state_of_charge"
    breaker = points["IED1LD0/XCBR1.Pos@CO"]  # DPC: bool ctlVal, Dbpos stVal
    assert (breaker["type"], breaker["sbo"], breaker["quantity"]) == ("dbpos", True, "switch")
    assert "IED1LD0/XCBR1.Pos.stVal@ST" not in points  # the control point reads it
    assert "IED1LD0/GGIO1.SPCSO1@CO" not in points  # status-only
    assert "IED1LD0/GGIO1.SPCSO1@CO: status-only, no control" in draft.unmapped
    assert "IED1LD0/GGIO1.Cnt.stVal@ST: integer of 64 bits, no gateway type" in draft.unmapped
    assert not any("TotW.q" in a or "TotW.t" in a or "units" in a for a in points)
    # a data set of data objects is drafted with its unbuffered report; one of attributes
    # cannot be read as one by the gateway and is listed
    assert draft.devices[0].options["data_sets"] == [
        {
            "reference": "IED1LD0/LLN0.Meas",
            "members": ["IED1LD0/MMXU1.TotW@MX", "IED1LD0/MMXU1.Hz@MX"],
            "report": "IED1LD0/LLN0.RP.urcbMeas",
        }
    ]
    assert any(u.startswith("data set IED1LD0/LLN0.Leaves: ") for u in draft.unmapped)
    path = tmp_path / "d.yaml"
    path.write_text(render(draft))
    assert check_files([path]) == []


def test_class_of_prefixed_logical_nodes() -> None:
    assert iec61850.ln_class("Bat1ZBAT1") == "ZBAT"
    assert iec61850.ln_class("MMXU12") == "MMXU"
    assert iec61850.ln_class("LLN0") == "LLN0"


def test_units_the_ied_gives_but_are_not_understood_are_not_called_missing() -> None:
    browsed = BROWSED | {"units": {"IED1LD0/MMXU1.TotW": {"SIUnit": 99, "multiplier": 3}}}
    draft = iec61850.draft_ied(
        iec61850.from_browse("IED1", browsed),
        connection={"host": "10.0.0.5", "port": 102},
        origin="t",
        device_id="ied1",
        der="b",
    )
    (tot_w,) = (p for p in draft.devices[0].points if p.fields["id"] == "ied1.MMXU1.TotW")
    assert tot_w.found_as.startswith("MX float32; units SIUnit 99 x10^3 not understood: unit")
    finding = "IED1LD0/MMXU1.TotW: units SIUnit 99 x10^3 not understood: the drafted unit"
    assert any(item.startswith(finding) for item in draft.unmapped)
