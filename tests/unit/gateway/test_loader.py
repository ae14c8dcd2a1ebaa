"""Config and mapping files: every listed error is found and named precisely."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from drivers.modbus.protocol import DataType, ModbusAddress, Order, Table
from gateway.cli import main
from gateway.errors import ConfigError, Problem
from gateway.loader import check_files, load_config, load_mappings
from tests.support.procs import DEMO_CONFIG

GOOD_DEVICE = """
devices:
  - id: dev1
    protocol: modbus
    connection: {host: 127.0.0.1, port: 1502}
    points:
%s
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def mapping_with(tmp_path: Path, *points: str) -> Path:
    body = "\n".join("      " + p for p in points)
    return write(tmp_path, "m.yaml", GOOD_DEVICE % body)


def problems_of(path: Path) -> list[Problem]:
    return check_files([path])


def test_demo_config_is_valid() -> None:
    config = load_config(DEMO_CONFIG)
    assert config.gateway.microgrid.id == "demo-microgrid"
    assert all(d.points for d in config.devices)
    assert check_files([DEMO_CONFIG]) == []


def test_typed_address_parsed_once() -> None:
    config = load_config(DEMO_CONFIG)
    dev = next(d for d in config.devices if d.id == "bess1-inverter")
    addr = dev.address_of("bess1.capacity")
    assert addr == ModbusAddress(1, Table.HOLDING, 40111, DataType.FLOAT32, Order.LITTLE)


@pytest.mark.parametrize(
    ("point", "field", "needle"),
    [
        ("{id: a, address: 1/holding/1, type: int24, unit: KiloW}", "type", "unknown data type"),
        ("{id: a, address: 1/holding/1, type: int16}", "unit", "Field required"),
        ("{id: a, address: 1/holding/1, type: int16, unit: furlong}", "unit", "unknown unit"),
        ("{id: a, address: 1/holding/65535, type: int32, unit: KiloW}", "address", "out of range"),
        ("{id: a, address: 1/holding/-4, type: int16, unit: KiloW}", "address", "out of range"),
        ("{id: a, address: 300/holding/1, type: int16, unit: KiloW}", "address", "unit id"),
        ("{id: a, address: 1/registers/1, type: int16, unit: KiloW}", "address", "table"),
        ("{id: a, address: 1/holding, type: int16, unit: KiloW}", "address", "unit/table/address"),
        (
            "{id: a, address: 1/holding/1, type: int16, unit: KiloW, limits: {max: 5}}",
            "limits",
            "read-only",
        ),
        (
            "{id: a, address: 1/holding/1, type: int16, unit: KiloW, direction: read-write,"
            " limits: {min: 5, max: 1}}",
            "limits",
            "greater than max",
        ),
        ("{id: a, address: 1/holding/1, type: int16, unit: KiloW, scale: 0}", "scale", "not be 0"),
        ("{id: a, address: 1/coil/1, type: float32, unit: UNITLESS}", "type", "bool"),
        ("{id: a, address: 1/holding/1, type: bool, unit: UNITLESS}", "bit", "needs `bit`"),
        ("{id: a, address: 1/holding/1, type: uint16, bit: 16, unit: UNITLESS}", "bit", "0..15"),
        (
            "{id: a, address: 1/holding/1, type: int16, unit: KiloW, colour: red}",
            "colour",
            "`colour` does not apply to modbus points (its own fields: word_order, byte_order,"
            " bit)",
        ),
        (
            "{id: a, address: 1/holding/1, type: int32, unit: KiloW, word_order: middle}",
            "word_order",
            "'big' or 'little'",
        ),
        ("{id: 9lives, address: 1/holding/1, type: int16, unit: KiloW}", "id", "pattern"),
        (
            "{id: a, address: 1/holding/1, type: int16, unit: KiloW, quantity: voltage}",
            "unit",
            "unit KiloW does not fit quantity voltage (use KiloV, V)",
        ),
        (
            "{id: a, address: 1/holding/1, type: int16, unit: KiloW-HR, quantity: active_power}",
            "unit",
            "does not fit quantity active_power (use KiloW, MegaW, W)",
        ),
        (
            "{id: a, address: 1/holding/1, type: int16, unit: KiloW, quantity: state_of_charge}",
            "unit",
            "use PERCENT",
        ),
        (
            "{id: a, address: 1/holding/1, type: int16, unit: KiloVAR, direction: read-write,"
            " quantity: active_power_setpoint}",
            "unit",
            "does not fit quantity active_power_setpoint",
        ),
    ],
)
def test_bad_point_is_named(tmp_path: Path, point: str, field: str, needle: str) -> None:
    path = mapping_with(
        tmp_path, "- {id: ok, address: 1/holding/100, type: int16, unit: KiloW}", "- " + point
    )
    problems = problems_of(path)
    assert len(problems) == 1, problems
    p = problems[0]
    assert p.file == str(path)
    assert p.line == 8  # the line of the bad point
    assert p.device == "dev1"
    assert p.field == field
    assert needle in p.message
    assert str(path) in str(p) and "dev1" in str(p) and field in str(p)


@pytest.mark.parametrize(
    ("protocol", "address", "field"),
    [
        ("iec104", "1/1001/M_ME_NC_1", "bit"),
        ("iec104", "1/1001/M_ME_NC_1", "word_order"),
        ("iec61850", "LD0/MMXU1.TotW.mag.f@MX", "byte_order"),
        ("dlms", "3/1.0.1.8.0.255/2", "bit"),
    ],
)
def test_another_protocols_point_field_is_named(
    tmp_path: Path, protocol: str, address: str, field: str
) -> None:
    """Modbus's own point fields belong to Modbus: on another protocol's point they are
    refused, naming file, line, device, point and field."""
    path = write(
        tmp_path,
        "m.yaml",
        f"""
        devices:
          - id: dev1
            protocol: {protocol}
            connection: {{host: 127.0.0.1, port: 2404}}
            points:
              - {{id: ok, address: "{address}", unit: KiloW}}
              - {{id: a, address: "{address}", unit: KiloW, {field}: 3}}
        """,
    )
    problems = problems_of(path)
    assert len(problems) == 1, problems
    p = problems[0]
    assert (p.file, p.line, p.device, p.point, p.field) == (str(path), 8, "dev1", "a", field)
    assert p.message == f"`{field}` does not apply to {protocol} points"


def test_overlapping_registers(tmp_path: Path) -> None:
    path = mapping_with(
        tmp_path,
        "- {id: wide, address: 1/holding/10, type: float64, unit: KiloW}",  # 10..13
        "- {id: inside, address: 1/holding/13, type: int16, unit: KiloW}",
        "- {id: other_unit, address: 2/holding/10, type: int16, unit: KiloW}",
        "- {id: other_table, address: 1/input/10, type: int16, unit: KiloW}",
        "- {id: bit0, address: 1/holding/20, type: bool, bit: 0, unit: UNITLESS}",
        "- {id: bit1, address: 1/holding/20, type: bool, bit: 1, unit: UNITLESS}",
        "- {id: bit1_again, address: 1/holding/20, type: bool, bit: 1, unit: UNITLESS}",
    )
    problems = problems_of(path)
    assert [(p.point, p.field) for p in problems] == [
        ("inside", "address"),
        ("bit1_again", "address"),
    ]
    assert "overlaps point 'wide'" in problems[0].message
    assert problems[0].line == 8


def test_overlaps_out_of_file_order_name_the_first_earlier_point(tmp_path: Path) -> None:
    """Overlaps are found by sorting addresses; each point is still reported once, against
    the first point before it in the file that it overlaps, whatever the address order."""
    path = mapping_with(
        tmp_path,
        "- {id: high, address: 1/holding/31, type: float32, unit: KiloW}",  # 31..32
        "- {id: low, address: 1/holding/28, type: float64, unit: KiloW}",  # 28..31
        "- {id: mid, address: 1/holding/30, type: float32, unit: KiloW}",  # 30..31
        "- {id: apart, address: 1/holding/40, type: float32, unit: KiloW}",
        "- {id: span, address: 1/holding/20, type: float64, unit: KiloW}",  # 20..23: free
    )
    problems = problems_of(path)
    assert [(p.point, p.message.split(" overlaps ")[1]) for p in problems] == [
        ("low", "point 'high' at 1/holding/31"),
        ("mid", "point 'high' at 1/holding/31"),
    ]


def test_duplicate_point_ids_within_and_across_files(tmp_path: Path) -> None:
    a = mapping_with(
        tmp_path,
        "- {id: p1, address: 1/holding/1, type: int16, unit: KiloW}",
        "- {id: p1, address: 1/holding/2, type: int16, unit: KiloW}",
    )
    problems = problems_of(a)
    assert [(p.point, p.field, p.line) for p in problems] == [("p1", "id", 8)]
    assert "first defined" in problems[0].message

    b = write(
        tmp_path,
        "b.yaml",
        GOOD_DEVICE.replace("dev1", "dev2")
        % ("      - {id: shared, address: 1/holding/1, type: int16, unit: KiloW}"),
    )
    c = write(
        tmp_path,
        "c.yaml",
        GOOD_DEVICE.replace("dev1", "dev3")
        % ("      - {id: shared, address: 1/holding/1, type: int16, unit: KiloW}"),
    )
    problems = check_files([b, c])
    assert len(problems) == 1
    assert problems[0].file == str(c) and problems[0].point == "shared"
    assert str(b) in problems[0].message


def test_unknown_der_reference(tmp_path: Path) -> None:
    mapping = mapping_with(
        tmp_path, "- {id: p1, address: 1/holding/1, type: int16, unit: KiloW, der: ghost}"
    )
    config = write(
        tmp_path,
        "gw.yaml",
        f"""
        microgrid: {{id: mg}}
        state_dir: state
        mappings: [{mapping.name}]
        coupling_point: {{import_limit_kw: 10, export_limit_kw: 10}}
        ders:
          - {{id: bess, type: battery, ratings: {{p_min_kw: -1, p_max_kw: 1, energy_kwh: 2}}}}
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_config(config)
    (p,) = info.value.problems
    assert (p.file, p.point, p.field) == (str(mapping), "p1", "der")
    assert "unknown DER 'ghost'" in p.message and "bess" in p.message


def test_every_error_reported_in_one_pass(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.yaml",
        """
        devices:
          - id: d1
            protocol: modbus
            connection: {host: 127.0.0.1, port: 1502}
            poll_interval: -1
            points:
              - {id: a, address: 1/holding/1, type: int24, unit: KiloW}
              - {id: b, address: 1/holding/2, type: int16}
          - id: d2
            protocol: bacnet
            connection: {host: 127.0.0.1}
        """,
    )
    problems = problems_of(path)
    fields = sorted((p.device or "", p.point or "", p.field or "") for p in problems)
    assert fields == [
        ("d1", "", "poll_interval"),
        ("d1", "a", "type"),
        ("d1", "b", "unit"),
        ("d2", "", "protocol"),
    ]


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", "devices:\n  - id: d1\n    protocol: [modbus\n")
    (p,) = problems_of(path)
    assert p.line is not None and "invalid YAML" in p.message


def test_config_errors(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "gw.yaml",
        """
        microgrid: {id: mg}
        state_dir: state
        mappings: [missing.yaml]
        coupling_point: {import_limit_kw: -10, export_limit_kw: 10}
        ders:
          - {id: b1, type: battery, ratings: {p_min_kw: 5, p_max_kw: 1}}
          - {id: b2, type: flywheel}
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_config(config)
    text = str(info.value)
    assert "coupling_point.import_limit_kw" in text
    assert "ders.0.ratings" in text and "p_min_kw 5.0 is greater than p_max_kw 1.0" in text
    assert "ders.1.type" in text


def test_mapping_load_api_raises_config_error(tmp_path: Path) -> None:
    path = mapping_with(tmp_path, "- {id: a, address: 1/holding/1, type: int24, unit: KiloW}")
    with pytest.raises(ConfigError):
        load_mappings([path])


def test_check_command_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(DEMO_CONFIG)]) == 0
    bad = mapping_with(tmp_path, "- {id: a, address: 1/holding/1, type: int24, unit: KiloW}")
    assert main(["check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:7, device 'dev1', point 'a', field 'type': unknown data type 'int24'" in err


@pytest.mark.parametrize(
    ("meter", "quantity", "expected"),
    [
        ("nosuch", "energy_import", "billing meter 'nosuch' is no device of the mapping files"),
        ("dev1", "active_power", "billing meter 'dev1' maps no energy counter of 'pcc'"),
        ("dev1", "energy_import", None),
    ],
)
def test_billing_meter_must_be_a_mapped_meter_of_the_coupling_point(
    tmp_path: Path, meter: str, quantity: str, expected: str | None
) -> None:
    unit = "KiloW-HR" if quantity.startswith("energy") else "KiloW"
    mapping = mapping_with(
        tmp_path,
        f"- {{id: p1, address: 1/holding/1, type: int16, unit: {unit}, der: pcc, "
        f"quantity: {quantity}}}",
    )
    config = write(
        tmp_path,
        "gw.yaml",
        f"""
        microgrid: {{id: mg}}
        state_dir: state
        mappings: [{mapping.name}]
        coupling_point: {{import_limit_kw: 10, export_limit_kw: 10,
                          billing_meter: {meter}}}
        """,
    )
    if expected is None:
        assert load_config(config).gateway.coupling_point.billing_meter == meter
        return
    with pytest.raises(ConfigError) as info:
        load_config(config)
    (p,) = info.value.problems
    assert (p.file, p.line, p.device, p.field) == (str(config), 6, meter, "billing_meter")
    assert p.message == expected


def test_the_demo_settles_the_coupling_point_with_its_dlms_meter() -> None:
    config = load_config(DEMO_CONFIG)
    meter = config.gateway.coupling_point.billing_meter
    assert meter is not None
    assert next(d for d in config.devices if d.id == meter).protocol == "dlms"
