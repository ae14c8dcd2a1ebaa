"""DLMS address syntax, device options, and bad mapping entries through the loader."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers.dlms.protocol import CosemClass, DlmsAddress, DlmsOptions, Kind, Obis, parse
from gateway.cli import main
from gateway.loader import check_files, load_mappings
from gateway.protocols.base import AddressError, PointTyping

NO_TYPING = PointTyping()

# --- OBIS -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "groups"),
    [
        ("1.0.1.8.0.255", (1, 0, 1, 8, 0, 255)),
        ("0.0.96.3.10.255", (0, 0, 96, 3, 10, 255)),
        ("1-0:1.8.0*255", (1, 0, 1, 8, 0, 255)),
        ("1-0:1.8.0", (1, 0, 1, 8, 0, 255)),  # IEC short form: F defaults to 255
        ("1-1:99.1.0*101", (1, 1, 99, 1, 0, 101)),
        (" 0.0.1.0.0.255 ", (0, 0, 1, 0, 0, 255)),
    ],
)
def test_obis_forms(text: str, groups: tuple[int, ...]) -> None:
    assert Obis.parse(text).groups == groups


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1.0.1.8.0", "malformed OBIS code"),
        ("1.0.1.8.0.255.1", "malformed OBIS code"),
        ("1.0.x.8.0.255", "malformed OBIS code"),
        ("1-0:1.8", "malformed OBIS code"),
        ("1:0-1.8.0", "malformed OBIS code"),
        ("", "malformed OBIS code"),
        ("1.0.256.8.0.255", "value group C is 256"),
        ("1-0:1.8.0*300", "value group F is 300"),
    ],
)
def test_malformed_obis(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Obis.parse(text)


@given(st.tuples(*[st.integers(0, 255)] * 6))
def test_obis_round_trip(groups: tuple[int, int, int, int, int, int]) -> None:
    obis = Obis(*groups)
    assert Obis.parse(str(obis)) == obis
    a, b, c, d, e, f = groups
    assert Obis.parse(f"{a}-{b}:{c}.{d}.{e}*{f}") == obis


# --- addresses ------------------------------------------------------------------------------


def test_attribute_address() -> None:
    address = parse("3/1.0.1.8.0.255/2", NO_TYPING)
    assert address == DlmsAddress(CosemClass.REGISTER, Obis(1, 0, 1, 8, 0, 255), attribute=2)
    assert str(address) == "3/1.0.1.8.0.255/2"
    assert address.member.kind is Kind.SCALED
    assert address.scaler_unit == 3
    assert not address.is_method


def test_method_address() -> None:
    address = parse("70/0.0.96.3.10.255/m1", NO_TYPING)
    assert address.is_method and address.method == 1
    assert address.method_info.name == "remote_disconnect"
    assert str(address) == "70/0.0.96.3.10.255/m1"
    assert address.scaler_unit is None


def test_iec_form_normalizes() -> None:
    assert str(parse("3/1-0:2.8.0/2", NO_TYPING)) == "3/1.0.2.8.0.255/2"


@pytest.mark.parametrize(
    ("text", "scaler_unit"),
    [
        ("4/1.0.32.7.0.255/2", 3),
        ("5/1.0.1.4.0.255/2", 4),
        ("5/1.0.1.4.0.255/3", 4),
        ("5/1.0.1.4.0.255/8", None),  # period is no scaled value
        ("1/0.0.96.14.0.255/2", None),
        ("71/0.0.17.0.0.255/4", None),
    ],
)
def test_scaler_unit_attribute(text: str, scaler_unit: int | None) -> None:
    assert parse(text, NO_TYPING).scaler_unit == scaler_unit


def test_datetime_attributes() -> None:
    for text in ("8/0.0.1.0.0.255/2", "4/1.0.1.6.0.255/5", "5/1.0.1.4.0.255/6"):
        assert parse(text, NO_TYPING).member.kind is Kind.DATETIME


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("3/1.0.1.8.0/2", "malformed OBIS code '1.0.1.8.0'"),
        ("3/1.0.1.8.0.256/2", "value group F is 256"),
        ("99/1.0.1.8.0.255/2", "unknown COSEM class id '99'"),
        ("x/1.0.1.8.0.255/2", "unknown COSEM class id 'x'"),
        ("15/0.0.40.0.0.255/2", "unknown COSEM class id '15'"),
        (
            "3/1.0.1.8.0.255/4",
            "attribute 4 out of range for Register (class 3 has attributes 1..3)",
        ),
        ("3/1.0.1.8.0.255/0", "attribute 0 out of range"),
        ("71/0.0.17.0.0.255/12", "attribute 12 out of range for Limiter"),
        ("3/1.0.1.8.0.255/3", "scaler_unit) of Register is no point"),
        ("3/1.0.1.8.0.255/1", "logical_name) of Register is no point"),
        ("7/1.0.99.1.0.255/2", "read by time range"),
        ("3/1.0.1.8.0.255/two", "neither a number nor m<method>"),
        ("70/0.0.96.3.10.255/m3", "method 3 out of range for Disconnect control"),
        ("71/0.0.17.0.0.255/m1", "the class has no methods"),
        ("70/0.0.96.3.10.255/mx", "must be m<number>"),
        ("3/1.0.1.8.0.255", "must be 'class_id/OBIS/attribute'"),
        ("3/1.0.1.8.0.255/2/1", "must be 'class_id/OBIS/attribute'"),
    ],
)
def test_bad_addresses_name_the_part(text: str, message: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse(text, NO_TYPING)
    assert caught.value.field == "address"
    assert message in str(caught.value)


def test_typing_fields_are_refused() -> None:
    with pytest.raises(AddressError) as caught:
        parse("3/1.0.1.8.0.255/2", PointTyping(type="uint32"))
    assert caught.value.field == "type"


def test_same_attribute_conflicts() -> None:
    a = parse("3/1.0.1.8.0.255/2", NO_TYPING)
    assert a.conflicts_with(parse("3/1-0:1.8.0/2", NO_TYPING))
    assert not a.conflicts_with(parse("3/1.0.2.8.0.255/2", NO_TYPING))
    assert not a.conflicts_with(parse("4/1.0.1.8.0.255/2", NO_TYPING))
    m1 = parse("70/0.0.96.3.10.255/m1", NO_TYPING)
    assert not m1.conflicts_with(parse("70/0.0.96.3.10.255/2", NO_TYPING))
    assert m1.conflicts_with(parse("70/0.0.96.3.10.255/m1", NO_TYPING))


def test_address_is_attribute_xor_method() -> None:
    obis = Obis(0, 0, 1, 0, 0, 255)
    with pytest.raises(ValueError):
        DlmsAddress(CosemClass.CLOCK, obis)
    with pytest.raises(ValueError):
        DlmsAddress(CosemClass.CLOCK, obis, attribute=2, method=1)


# --- options --------------------------------------------------------------------------------

KEYS = (
    "block_cipher_key: 000102030405060708090A0B0C0D0E0F\n"
    "authentication_key: D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF\n"
)


def options(tmp_path: Path, **raw: object) -> DlmsOptions:
    return DlmsOptions.model_validate(raw, context={"base_dir": tmp_path})


def test_defaults() -> None:
    o = DlmsOptions()
    assert (o.client_address, o.server_address, o.authentication.value) == (16, 1, "none")
    assert o.profile == Obis(1, 0, 99, 1, 0, 255)
    assert o.secrets.password is None


def test_password_file_is_read_relative_to_the_mapping(tmp_path: Path) -> None:
    (tmp_path / "meter.pw").write_text("s3cret\n")
    o = options(tmp_path, authentication="low", password_file="meter.pw")
    assert o.secrets.password is not None
    assert o.secrets.password.get_secret_value() == b"s3cret"
    assert "s3cret" not in repr(o) and "s3cret" not in str(o) and "s3cret" not in repr(o.secrets)


def test_keys_file(tmp_path: Path) -> None:
    (tmp_path / "meter.keys").write_text(KEYS)
    o = options(tmp_path, authentication="high", keys_file="meter.keys")
    assert o.secrets.block_cipher_key is not None
    assert o.secrets.block_cipher_key.get_secret_value() == bytes(range(16))
    assert "000102" not in repr(o)


@pytest.mark.parametrize(
    ("raw", "files", "message"),
    [
        ({"authentication": "low"}, {}, "authentication 'low' needs password_file"),
        ({"authentication": "high"}, {}, "authentication 'high' needs keys_file"),
        ({"password_file": "pw"}, {"pw": "x"}, "password_file given but authentication is 'none'"),
        ({"authentication": "low", "password_file": "missing"}, {}, "cannot be read"),
        ({"authentication": "low", "password_file": "pw"}, {"pw": "\n"}, "is empty"),
        (
            {"authentication": "high", "keys_file": "k"},
            {"k": "block_cipher_key: 0011\nauthentication_key: 0011\n"},
            "block_cipher_key must be 32 hex digits",
        ),
        (
            {"authentication": "high", "keys_file": "k"},
            {"k": KEYS + "master_key: 00\n"},
            "unknown entries ['master_key']",
        ),
        ({"authentication": "high", "keys_file": "k"}, {"k": "- a\n"}, "must map key names"),
        ({"authentication": "high", "keys_file": "k"}, {"k": "a: [\n"}, "cannot be read"),
        ({"authentication": "medium"}, {}, "Input should be 'none', 'low' or 'high'"),
        ({"system_title": "XYZ"}, {}, "String should match pattern"),
        ({"profile_obis": "1.0.99"}, {}, "malformed OBIS code"),
        ({"client_address": 0}, {}, "greater than or equal to 1"),
        ({"secret": "x"}, {}, "Extra inputs are not permitted"),
    ],
)
def test_bad_options(
    tmp_path: Path, raw: dict[str, object], files: dict[str, str], message: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ValidationError) as caught:
        options(tmp_path, **raw)
    assert message in str(caught.value)


def test_key_errors_never_quote_the_file(tmp_path: Path) -> None:
    (tmp_path / "k").write_text("block_cipher_key: 00112233445566778899AABBCCDDEEF\n")  # 31
    with pytest.raises(ValidationError) as caught:
        options(tmp_path, authentication="high", keys_file="k")
    assert "00112233" not in str(caught.value)


# --- through the loader and `mgms check` ----------------------------------------------------

MAPPING = """\
devices:
  - id: meter
    protocol: dlms
    connection: {host: 127.0.0.1, port: 4059}
    points:
      - {id: ok, address: 3/1.0.1.8.0.255/2, unit: KiloW-HR}
      - {id: bad_obis, address: 3/1.0.1.8.0/2, unit: KiloW-HR}
      - {id: bad_class, address: 42/1.0.1.8.0.255/2, unit: KiloW}
      - {id: bad_attr, address: 3/1.0.2.8.0.255/7, unit: KiloW-HR}
      - {id: bad_method, address: 70/0.0.96.3.10.255/m9, unit: UNITLESS, direction: write}
      - {id: dup, address: 3/1-0:1.8.0/2, unit: KiloW-HR}
"""


def test_loader_reports_each_bad_entry(tmp_path: Path) -> None:
    path = tmp_path / "dlms.yaml"
    path.write_text(MAPPING)
    problems = {p.point: p for p in check_files([path])}
    assert set(problems) == {"bad_obis", "bad_class", "bad_attr", "bad_method", "dup"}
    for point_id, line, text in [
        ("bad_obis", 7, "malformed OBIS code '1.0.1.8.0'"),
        ("bad_class", 8, "unknown COSEM class id '42'"),
        ("bad_attr", 9, "attribute 7 out of range for Register"),
        ("bad_method", 10, "method 9 out of range for Disconnect control"),
        ("dup", 11, "overlaps point 'ok'"),
    ]:
        problem = problems[point_id]
        assert (problem.file, problem.line, problem.device, problem.field) == (
            str(path),
            line,
            "meter",
            "address",
        )
        assert text in problem.message


def test_loader_reports_bad_options_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "dlms.yaml"
    path.write_text(
        MAPPING.replace(
            "connection: {host: 127.0.0.1, port: 4059}",
            "connection: {host: 127.0.0.1, port: 4059}\n    options: {authentication: low}",
        ).replace("      - {id: bad", "      - {id: good")
    )
    with pytest.raises(Exception) as caught:
        load_mappings([path])
    text = str(caught.value)
    assert "dlms.yaml:5" in text and "device 'meter'" in text and "needs password_file" in text


def test_mgms_check_rejects_bad_dlms_entries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dlms.yaml"
    path.write_text(MAPPING)
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert "malformed OBIS code" in err and "unknown COSEM class id '42'" in err
    assert "attribute 7 out of range" in err and "5 problem(s) found" in err


def test_shipped_demo_mapping_checks(capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(__file__).resolve().parents[4]
    assert main(["check", str(root / "config" / "demo.yaml")]) == 0
    assert "ok:" in capsys.readouterr().out
