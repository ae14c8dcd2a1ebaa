"""IEC 104 addresses and device options: parsed once, every mistake named."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from drivers.iec104.protocol import (
    Iec104Address,
    Iec104Options,
    InfoObject,
    Kind,
    TypeId,
    parse,
)
from gateway.cli import main
from gateway.loader import check_files, load_config
from gateway.protocols.base import AddressError, PointTyping
from tests.support.procs import DEMO_CONFIG


def typing(direction: str = "read", **kw: object) -> PointTyping:
    return PointTyping(direction=direction, **kw)


def test_read_point() -> None:
    addr = parse("1/1001/M_ME_TF_1", typing())
    assert addr == Iec104Address(1, InfoObject(1001, TypeId.M_ME_TF_1), None)
    assert str(addr) == "1/1001/M_ME_TF_1"


def test_type_by_number_and_any_case_with_spaces() -> None:
    addr = parse(" 65534 / 16777215 / 13 ", typing())
    assert addr.monitor == InfoObject(16_777_215, TypeId.M_ME_NC_1)
    assert addr.common_address == 65534
    assert parse("2/5/m_sp_na_1", typing()).monitor == InfoObject(5, TypeId.M_SP_NA_1)


def test_read_write_point_names_both_objects() -> None:
    addr = parse("1/1004/M_ME_NC_1 + 2001/C_SE_NC_1", typing("read-write"))
    assert addr.monitor == InfoObject(1004, TypeId.M_ME_NC_1)
    assert addr.command == InfoObject(2001, TypeId.C_SE_NC_1)
    assert str(addr) == "1/1004/M_ME_NC_1+2001/C_SE_NC_1"
    # the same objects in the other order are the same address
    assert parse("1/2001/C_SE_NC_1+1004/M_ME_NC_1", typing("read-write")) == addr


def test_write_point_with_select_before_execute() -> None:
    addr = parse("1/2003/C_DC_NA_1", typing("write", sbo=True))
    assert addr.monitor is None and addr.command == InfoObject(2003, TypeId.C_DC_NA_1)


def test_type_families_and_kinds() -> None:
    assert TypeId.M_ME_NC_1.family == {TypeId.M_ME_NC_1, TypeId.M_ME_TF_1}
    assert TypeId.M_IT_TB_1.family == {TypeId.M_IT_NA_1, TypeId.M_IT_TB_1}
    assert TypeId.C_SE_NB_1.family == {TypeId.C_SE_NB_1}
    assert TypeId.M_DP_TB_1.time_tagged and not TypeId.M_DP_NA_1.time_tagged
    assert TypeId.C_SE_NA_1.kind is Kind.NORMALIZED and TypeId.C_SE_NA_1.is_command
    assert all(t.kind for t in TypeId)


@pytest.mark.parametrize(
    ("text", "direction", "field", "needle"),
    [
        ("1/1001", "read", "address", "'IOA/TYPE'"),
        ("1001/M_ME_NC_1", "read", "address", "'IOA/TYPE'"),
        ("1/2/M_ME_NC_1+3/C_SE_NC_1+4/C_SE_NC_1", "read-write", "address", "CA/IOA/TYPE"),
        ("0/1/M_ME_NC_1", "read", "address", "common address 0 out of range 1..65534"),
        ("65535/1/M_ME_NC_1", "read", "address", "out of range 1..65534"),
        ("x/1/M_ME_NC_1", "read", "address", "common address 'x' is not a number"),
        ("1/0/M_ME_NC_1", "read", "address", "IOA 0 out of range 1..16777215"),
        ("1/16777216/M_ME_NC_1", "read", "address", "IOA 16777216 out of range"),
        ("1/1/M_ME_XX_1", "read", "address", "unknown or unsupported"),
        ("1/1/M_ST_NA_1", "read", "address", "unknown or unsupported"),
        ("1/1/99", "read", "address", "type id 99 is not supported"),
        ("1/1/M_ME_TC_1", "read", "address", "CP24Time2a"),
        ("1/1/C_SE_NC_1", "read", "address", "needs a monitoring type"),
        ("1/1/M_ME_NC_1+2/C_SE_NC_1", "read", "address", "needs a monitoring type"),
        ("1/1/M_ME_NC_1", "write", "address", "names only its command object"),
        ("1/1/M_ME_NC_1", "read-write", "address", "needs a command object"),
        ("1/2/C_SE_NC_1", "read-write", "address", "return-information object first"),
        ("1/1/M_ME_NC_1+2/M_ME_NC_1", "read-write", "address", "one monitoring and one command"),
        ("1/1/M_ME_NC_1+1/C_SE_NC_1", "read-write", "address", "share IOA 1"),
        ("1/1/M_SP_NA_1+2/C_SE_NC_1", "read-write", "address", "cannot report back"),
        ("1/1/M_IT_NA_1+2/C_SE_NC_1", "read-write", "address", "cannot report back"),
        ("1/1/M_ME_NB_1+2/C_DC_NA_1", "read-write", "address", "cannot report back"),
    ],
)
def test_bad_addresses(text: str, direction: str, field: str, needle: str) -> None:
    with pytest.raises(AddressError) as info:
        parse(text, typing(direction))
    assert info.value.field == field
    assert needle in str(info.value)


def test_a_type_is_refused_and_named() -> None:
    with pytest.raises(AddressError) as info:
        parse("1/1/M_ME_NC_1", typing(type="float32"))
    assert info.value.field == "type"


def test_sbo_only_on_commands() -> None:
    with pytest.raises(AddressError) as info:
        parse("1/1/M_SP_NA_1", typing(sbo=True))
    assert info.value.field == "sbo"


def test_conflicts_by_station_and_any_ioa() -> None:
    rw = parse("1/10/M_ME_NC_1+20/C_SE_NC_1", typing("read-write"))
    assert rw.conflicts_with(parse("1/20/C_SE_NC_1", typing("write")))
    assert rw.conflicts_with(parse("1/10/M_ME_TF_1", typing()))
    assert not rw.conflicts_with(parse("2/10/M_ME_NC_1", typing()))
    assert not rw.conflicts_with(parse("1/11/M_ME_NC_1", typing()))


def test_options_defaults_and_timer_rules() -> None:
    o = Iec104Options()
    assert (o.t0, o.t1, o.t2, o.t3, o.k, o.w) == (30, 15, 10, 20, 12, 8)
    with pytest.raises(ValidationError, match=r"t2 \(5 s\) must be less than t1 \(5 s\)"):
        Iec104Options(t1=5, t2=5)
    with pytest.raises(ValidationError, match=r"w \(13\) must not exceed k \(12\)"):
        Iec104Options(w=13)
    with pytest.raises(ValidationError, match="tick_rate_ms"):
        Iec104Options(tick_rate_ms=20)
    with pytest.raises(ValidationError, match="originator_address"):
        Iec104Options(originator_address=256)
    with pytest.raises(ValidationError, match="Extra inputs"):
        Iec104Options.model_validate({"gi_cycle": 5})


MAPPING = """
devices:
  - id: rtu
    protocol: iec104
    connection: {host: 127.0.0.1, port: 2404}
    options: {interrogation_cycle: 30}
    points:
      - {id: ok, address: 1/1/M_ME_NC_1, unit: KiloW}
%s
"""


def write_mapping(tmp_path: Path, *points: str) -> Path:
    body = "\n".join("      " + p for p in points)
    path = tmp_path / "m.yaml"
    path.write_text(textwrap.dedent(MAPPING % body), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("point", "field", "needle"),
    [
        ("- {id: a, address: 1/2/M_ME_TC_1, unit: KiloW}", "address", "CP24Time2a"),
        ("- {id: a, address: 1/2/C_SE_NC_1, unit: KiloW}", "address", "monitoring type"),
        ("- {id: a, address: 1/1/M_ME_TF_1, unit: KiloW}", "address", "overlaps point 'ok'"),
        ("- {id: a, address: 1/2/M_ME_NC_1, type: float32, unit: KiloW}", "type", "address"),
        ("- {id: a, address: 1/2/M_SP_NA_1, unit: UNITLESS, sbo: true}", "sbo", "command"),
        (
            "- {id: a, address: 1/2/M_ME_NC_1, unit: KiloW, direction: read-write}",
            "address",
            "needs a command object",
        ),
    ],
)
def test_loader_names_file_line_point_and_field(
    tmp_path: Path, point: str, field: str, needle: str
) -> None:
    path = write_mapping(tmp_path, point)
    problems = check_files([path])
    assert len(problems) == 1, problems
    p = problems[0]
    assert (p.file, p.line, p.device, p.point, p.field) == (str(path), 9, "rtu", "a", field)
    assert needle in p.message


def test_loader_rejects_bad_options(tmp_path: Path) -> None:
    path = write_mapping(tmp_path)
    path.write_text(path.read_text().replace("interrogation_cycle: 30", "t1: 3, t2: 4"))
    (p,) = check_files([path])
    assert (p.device, p.field, p.line) == ("rtu", "t2", 6)
    assert "t2 (4 s) must be less than t1 (3 s)" in p.message


def test_check_command_names_the_culprit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_mapping(tmp_path, "- {id: bad, address: 1/2/M_ME_NC_9, unit: KiloW}")
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:9, device 'rtu', point 'bad', field 'address': IEC 104 type" in err


def test_demo_mapping_parses_to_typed_addresses() -> None:
    config = load_config(DEMO_CONFIG)
    dev = next(d for d in config.devices if d.protocol == "iec104")
    p_set = dev.address_of("chp1.p_set")
    assert isinstance(p_set, Iec104Address)
    assert p_set.command == InfoObject(2001, TypeId.C_SE_NC_1)
    assert isinstance(dev.typed_options, Iec104Options)
    assert config.der("chp1") is not None
