"""SCL import: the shipped ICD of the demo IED drafts the demo mapping's points; hostile or
wrong files are refused with the file and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.discover import iec61850, scl
from gateway.errors import DiscoveryError
from gateway.loader import load_mappings

ROOT = Path(__file__).resolve().parents[4]
ICD = ROOT / "mappings" / "demo" / "bess2-ied.icd"
DEMO = ROOT / "mappings" / "demo" / "iec61850.yaml"


def test_shipped_icd_drafts_the_demo_ied() -> None:
    ied = scl.load_ied(ICD, None)
    assert ied.host == "127.0.0.1"
    assert ied.model.units == {
        "BESS2LD0/MMXU1.TotW": (38, 3),
        "BESS2LD0/MMXU1.TotVAr": (63, 3),
        "BESS2LD0/ZBAT1.WHRtg": (72, 3),
        "BESS2LD0/DRCC1.VarSpt": (63, 3),
    }
    controls = {c.do: (c.kind, c.ctl_model) for c in ied.model.controls}
    # WSpt: the instance's ctlModel overrides the template's; DERStr: the template's
    assert controls == {"WSpt": ("float32", 4), "DERStr": ("bool", 3)}
    draft = iec61850.draft_ied(
        ied.model, connection={"host": "h", "port": 102}, origin="t", device_id="d", der="bess2"
    )
    drafted = {p.fields["address"]: p.fields for p in draft.devices[0].points}
    (mapping,) = load_mappings([DEMO]).values()
    for point in mapping.devices[0].points:
        fields = drafted[point.address]
        assert (fields["unit"], fields["quantity"]) == (point.unit, point.quantity.value)
        assert fields.get("sbo", False) == point.sbo
    assert len(drafted) == len(mapping.devices[0].points)
    # the data set and its report, as the demo mapping has them
    assert draft.devices[0].options["data_sets"] == mapping.devices[0].options["data_sets"]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.scd"
    path.write_text(text)
    return path


def test_entity_expansion_is_refused(tmp_path: Path) -> None:
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE SCL [<!ENTITY a "aaaaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><SCL>&b;</SCL>'
    )
    refused = r"x\.scd: refused: the file declares a DTD \(<!DOCTYPE SCL>\)"
    with pytest.raises(DiscoveryError, match=refused):
        scl.load_ied(write(tmp_path, bomb), None)


def test_external_entity_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read")
    xxe = (
        f'<?xml version="1.0"?><!DOCTYPE SCL [<!ENTITY x SYSTEM "file://{secret}">]>'
        '<SCL><IED name="&x;"/></SCL>'
    )
    with pytest.raises(DiscoveryError, match="refused") as caught:
        scl.load_ied(write(tmp_path, xxe), None)
    assert "do not read" not in str(caught.value)


def test_several_ieds_need_a_choice_and_a_wrong_name_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, '<SCL><IED name="A"/><IED name="B"/></SCL>')
    with pytest.raises(DiscoveryError, match="2 IEDs, choose one with --ied: A, B"):
        scl.load_ied(path, None)
    with pytest.raises(DiscoveryError, match="no IED 'C' \\(the file has A, B\\)"):
        scl.load_ied(path, "C")
    assert scl.load_ied(path, "B").model.name == "B"


def test_not_scl_or_broken_xml_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DiscoveryError, match="root element is 'html', not SCL"):
        scl.load_ied(write(tmp_path, "<html/>"), None)
    with pytest.raises(DiscoveryError, match=r"not well-formed XML: .*line 1"):
        scl.load_ied(write(tmp_path, "<SCL><IED></SCL>"), None)
    with pytest.raises(DiscoveryError, match="lnType 'nope' not defined"):
        scl.load_ied(
            write(
                tmp_path,
                '<SCL><IED name="I"><AccessPoint><Server><LDevice inst="LD0">'
                '<LN lnClass="MMXU" inst="1" lnType="nope"/></LDevice></Server></AccessPoint>'
                "</IED></SCL>",
            ),
            None,
        )


def test_an_undefined_attribute_type_is_named_not_skipped(tmp_path: Path) -> None:
    text = ICD.read_text().replace('type="AV_T" fc="MX"', 'type="NOAV" fc="MX"')
    with pytest.raises(DiscoveryError, match=r"BESS2LD0/MMXU1\.TotW: DAType 'NOAV' of 'mag'"):
        scl.load_ied(write(tmp_path, text), None)


def test_units_not_understood_are_findings_not_silently_dropped(tmp_path: Path) -> None:
    text = ICD.read_text().replace("<Val>W</Val>", "<Val>Furlong</Val>")
    ied = scl.load_ied(write(tmp_path, text), None)
    assert "BESS2LD0/MMXU1.TotW" not in ied.model.units
    assert ied.model.odd_units == {"BESS2LD0/MMXU1.TotW": "SIUnit 'Furlong' multiplier 'k'"}
