"""IEC 61850 addresses and device options: what parses, and what is refused with which
field named — also through the loader, with file, line, device and point."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from drivers.iec61850.protocol import (
    ControlCdc,
    DataType,
    Fc,
    Iec61850Address,
    Iec61850Options,
    ObjectRef,
    parse,
)
from gateway.cli import main
from gateway.loader import check_files
from gateway.protocols.base import AddressError, PointTyping


def typed(**kw: object) -> PointTyping:
    return PointTyping.model_validate(kw)


def test_measured_value_with_implied_type() -> None:
    address = parse("LD0/MMXU1.TotW.mag.f@MX", typed())
    assert address == Iec61850Address(
        ObjectRef("LD0", "MMXU1", ("TotW",)), ("mag", "f"), Fc.MX, DataType.FLOAT32
    )
    assert address.reference == "LD0/MMXU1.TotW.mag.f"
    assert str(address) == "LD0/MMXU1.TotW.mag.f@MX"
    assert (address.read_fc, address.read_attribute) == (Fc.MX, ("mag", "f"))


def test_nested_data_object_and_integer_attribute() -> None:
    address = parse("BESS2LD0/MMXU1.PhV.phsA.cVal.mag.i@mx", typed())
    assert address.obj == ObjectRef("BESS2LD0", "MMXU1", ("PhV", "phsA"))
    assert address.attribute == ("cVal", "mag", "i")
    assert address.data_type is DataType.INT32


@pytest.mark.parametrize(
    ("type_", "cdc", "read_fc", "read_attribute"),
    [
        ("float32", ControlCdc.APC, Fc.MX, ("mxVal", "f")),
        ("int32", ControlCdc.INC, Fc.ST, ("stVal",)),
        ("bool", ControlCdc.SPC, Fc.ST, ("stVal",)),
        ("dbpos", ControlCdc.DPC, Fc.ST, ("stVal",)),
    ],
)
def test_control_cdc_and_status_from_type(
    type_: str, cdc: ControlCdc, read_fc: Fc, read_attribute: tuple[str, ...]
) -> None:
    address = parse("LD0/DRCC1.WSpt@CO", typed(type=type_))
    assert address.is_control
    assert address.control_cdc is cdc
    assert (address.read_fc, address.read_attribute) == (read_fc, read_attribute)


def test_status_needs_a_declared_type() -> None:
    assert parse("LD0/XCBR1.Pos.stVal@ST", typed(type="dbpos")).data_type is DataType.DBPOS
    with pytest.raises(AddressError) as err:
        parse("LD0/XCBR1.Pos.stVal@ST", typed())
    assert err.value.field == "type"


@pytest.mark.parametrize(
    ("text", "typing", "field", "needle"),
    [
        ("LD0/MMXU1.TotW.mag.f", {}, "address", "functional constraint"),
        ("LD0/MMXU1.TotW.mag.f@XX", {}, "address", "'XX' not supported"),
        ("LD0/MMXU1.TotW.mag.f@SG", {}, "address", "not supported"),
        ("MMXU1.TotW.mag.f@MX", {}, "address", "must be 'LD/LN"),
        ("LD0/mmxu1.TotW.mag.f@MX", {}, "address", "logical node 'mmxu1'"),
        ("LD-0/MMXU1.TotW.mag.f@MX", {}, "address", "logical device name"),
        ("LD0/MMXU1@MX", {}, "address", "names no data object"),
        ("LD0/MMXU1.mag.f@MX", {}, "address", "before any data object"),
        ("LD0/MMXU1.TotW.mag.Sub@MX", {}, "address", "follows data attribute"),
        ("LD0/MMXU1$MX$TotW$mag$f@MX", {}, "address", "not MMS '$' names"),
        ("LD0/MMXU1.TotW@MX", {}, "address", "names no data attribute"),
        ("LD0/DRCC1.WSpt.ctlVal@CO", {"type": "float32"}, "address", "names its data object"),
        ("LD0/DRCC1.WSpt@CO", {}, "type", "a control needs a type"),
        ("LD0/MMXU1.TotW.mag.f@MX", {"type": "int32"}, "type", "holds float32"),
        ("LD0/MMXU1.TotW.mag.f@MX", {"type": "float64"}, "type", "unknown data type"),
    ],
)
def test_bad_addresses_name_the_field(
    text: str, typing: dict[str, object], field: str, needle: str
) -> None:
    with pytest.raises(AddressError) as err:
        parse(text, typed(**typing))
    assert err.value.field == field
    assert needle in str(err.value)


def test_same_attribute_and_fc_conflict_only() -> None:
    a = parse("LD0/MMXU1.TotW.mag.f@MX", typed())
    assert a.conflicts_with(parse("LD0/MMXU1.TotW.mag.f@MX", typed()))
    assert not a.conflicts_with(parse("LD0/MMXU1.TotVAr.mag.f@MX", typed()))
    assert not a.conflicts_with(parse("LD0/MMXU1.TotW.mag.f@SP", typed()))


DATA_SET = {
    "reference": "LD0/LLN0.Meas",
    "members": ["LD0/MMXU1.TotW@MX", "LD0/ZBAT1.SoC@MX"],
    "report": "LD0/LLN0.RP.urcbMeas",
}


def test_options_with_data_set_and_report() -> None:
    options = Iec61850Options.model_validate({"data_sets": [DATA_SET]})
    data_set = options.data_sets[0]
    assert data_set.fcds == [
        (ObjectRef("LD0", "MMXU1", ("TotW",)), Fc.MX),
        (ObjectRef("LD0", "ZBAT1", ("SoC",)), Fc.MX),
    ]
    assert (data_set.name, data_set.owner, data_set.report_name) == (
        "Meas",
        ("LD0", "LLN0"),
        "urcbMeas",
    )
    assert not data_set.buffered
    assert options.enhanced_security


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"reference": "LD0.Meas"}, "must be 'LD/LN.Name'"),
        ({"members": []}, "at least 1 item"),
        ({"members": ["LD0/MMXU1.TotW.mag.f@MX"]}, "names a data object"),
        ({"members": ["LD0/DRCC1.WSpt@CO"]}, "MX or ST"),
        ({"members": ["LD0/MMXU1.TotW@MX", "LD0/MMXU1.TotW@MX"]}, "listed twice"),
        ({"report": "LD0/LLN0.urcbMeas"}, "'LD/LN.RP.name'"),
        ({"report": "LD0/MMXU1.RP.urcbMeas"}, "in the data set's logical node"),
    ],
)
def test_bad_data_set_options(change: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError) as err:
        Iec61850Options.model_validate({"data_sets": [{**DATA_SET, **change}]})
    assert needle in str(err.value)


def test_duplicate_data_sets_and_reports_refused() -> None:
    with pytest.raises(ValidationError, match="listed twice"):
        Iec61850Options.model_validate({"data_sets": [DATA_SET, DATA_SET]})
    other = {**DATA_SET, "reference": "LD0/LLN0.Other"}
    with pytest.raises(ValidationError, match="serves two data sets"):
        Iec61850Options.model_validate({"data_sets": [DATA_SET, other]})


MAPPING = """\
devices:
  - id: ied1
    protocol: iec61850
    connection: {host: 127.0.0.1, port: 10102}
    options:
      data_sets:
        - reference: LD0/LLN0.Meas
          members: [LD0/MMXU1.TotW.mag.f@MX]
    points:
      - {id: p, address: LD0/MMXU1.TotW.mag.f@MX, unit: KiloW}
      - {id: p_set, address: LD0/DRCC1.WSpt@CO, unit: KiloW, direction: read-write}
      - {id: p2, address: LD0/MMXU1.TotW.mag.f@MX, unit: KiloW}
      - {id: pos, address: LD0/XCBR1.Pos.stVal@ST, type: int24, unit: UNITLESS}
"""


def test_loader_names_file_line_device_point_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ied.yaml"
    path.write_text(textwrap.dedent(MAPPING), encoding="utf-8")
    problems = check_files([path])
    found = {(p.point, p.field): p for p in problems}
    assert set(found) == {
        (None, "data_sets.0.members"),
        ("p_set", "type"),
        ("p2", "address"),
        ("pos", "type"),
    }
    assert all(p.file == str(path) and p.device == "ied1" for p in problems)
    assert found[("p_set", "type")].line == 11
    assert "a control needs a type" in found[("p_set", "type")].message
    assert found[("p2", "address")].line == 12
    assert "overlaps point 'p'" in found[("p2", "address")].message
    assert "unknown data type 'int24'" in found[("pos", "type")].message
    assert found[(None, "data_sets.0.members")].line == 8
    assert "names a data object" in found[(None, "data_sets.0.members")].message
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:11, device 'ied1', point 'p_set', field 'type': a control needs a type" in err
    assert "4 problem(s) found" in err
