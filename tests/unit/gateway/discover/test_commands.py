"""The `mgms discover` / `mgms import` commands: what they print and return."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main

ROOT = Path(__file__).resolve().parents[4]


def test_import_scl_writes_a_checked_draft(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ied.yaml"
    icd = ROOT / "mappings" / "demo" / "bess2-ied.icd"
    assert main(["import", "scl", str(icd), "--der", "bess2", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "drafted 7 point(s), 7 with a role" in printed and "`mgms check" in printed
    assert "address: BESS2LD0/DRCC1.WSpt@CO, type: float32, sbo: true" in out.read_text()


def test_import_scl_names_a_hostile_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.icd"
    bad.write_text('<!DOCTYPE SCL [<!ENTITY a "x">]><SCL>&a;</SCL>')
    assert main(["import", "scl", str(bad), "-o", str(tmp_path / "x.yaml")]) == 1
    err = capsys.readouterr().err
    assert f"import scl: {bad}: refused: the file declares a DTD (<!DOCTYPE SCL>)" in err
    assert not (tmp_path / "x.yaml").exists()


def test_dlms_options_are_checked_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["discover", "dlms", "127.0.0.1:1", "--auth", "low", "-o", str(tmp_path / "m.yaml")]
    assert main(args) == 2
    assert "discover dlms: --auth 'low' needs --password-file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (["--system-title", "zz"], "discover dlms: --system-title 'zz': String should match"),
        (["--client-address", "0"], "discover dlms: --client-address 0: Input should be"),
        (["--auth", "none", "--keys-file", "k"], "--keys-file given but --auth is 'none'"),
    ],
)
def test_dlms_option_errors_name_the_option(
    option: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["discover", "dlms", "127.0.0.1:1", *option, "-o", str(tmp_path / "m.yaml")]
    assert main(args) == 2
    assert expected in capsys.readouterr().err


def test_modbus_unit_ids_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["discover", "modbus", "h", "--units", "0,300", "-o", "x.yaml"])
    assert "unit ids are 1..247" in capsys.readouterr().err


def test_an_existing_mapping_is_not_overwritten_unasked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ied.yaml"
    out.write_text("# reviewed by hand\n")
    icd = str(ROOT / "mappings" / "demo" / "bess2-ied.icd")
    assert main(["import", "scl", icd, "-o", str(out)]) == 2
    assert f"import scl: -o {out}: the file exists; give --force" in capsys.readouterr().err
    assert out.read_text() == "# reviewed by hand\n"
    assert main(["import", "scl", icd, "-o", str(out), "--force"]) == 0
    assert "BESS2LD0/DRCC1.WSpt@CO" in out.read_text()


def test_an_output_in_a_missing_directory_is_refused_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "missing" / "m.yaml"
    # port 1 on loopback: a connection attempt would fail with exit 1, not 2
    assert main(["discover", "modbus", "127.0.0.1:1", "-o", str(out)]) == 2
    assert f"discover modbus: -o {out}: no directory {out.parent}" in capsys.readouterr().err
    assert main(["discover", "dlms", "127.0.0.1:1", "-o", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        ["discover", "modbus", "127.0.0.1:abc"],
        ["discover", "iec104", "127.0.0.1:0"],
        ["discover", "iec61850", "127.0.0.1:70000"],
        ["discover", "dlms", "[::1"],
    ],
)
def test_a_bad_target_is_a_usage_error_naming_it(
    args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*args, "-o", str(tmp_path / "m.yaml")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument HOST[:PORT]" in err and repr(args[2]) in err


def test_an_scl_port_out_of_range_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    icd = str(ROOT / "mappings" / "demo" / "bess2-ied.icd")
    with pytest.raises(SystemExit) as exit_:
        main(["import", "scl", icd, "--port", "99999", "-o", str(tmp_path / "m.yaml")])
    assert exit_.value.code == 2
    assert "argument --port: a port is a number 1..65535, not '99999'" in capsys.readouterr().err
    assert not (tmp_path / "m.yaml").exists()


def test_a_der_per_unit_must_match_the_probed_units(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "m.yaml")
    args = ["discover", "modbus", "127.0.0.1:1", "--units", "1,2", "--der", "1=bess3,3=pv2"]
    assert main([*args, "-o", out]) == 2
    err = capsys.readouterr().err
    assert "--der gives DERs for units [1, 3] but --units probes [1, 2]" in err


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (["--timeout", "-1"], "argument --timeout: seconds > 0, not '-1'"),
        (["--timeout", "0"], "argument --timeout: seconds > 0, not '0'"),
        (["--listen", "nan"], "argument --listen: a number of seconds, not 'nan'"),
    ],
)
def test_times_are_checked(
    option: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    protocol = "iec104" if option[0] == "--listen" else "modbus"
    with pytest.raises(SystemExit) as exit_:
        main(["discover", protocol, "127.0.0.1:1", *option, "-o", str(tmp_path / "m.yaml")])
    assert exit_.value.code == 2
    assert expected in capsys.readouterr().err


@pytest.mark.parametrize(
    "option",
    [
        ["import", "scl", "ICD", "--device-id", "1 bad"],
        ["import", "scl", "ICD", "--der", "x y"],
        ["discover", "modbus", "127.0.0.1:1", "--der", "1=bess3,2=pv 2"],
        ["discover", "dlms", "127.0.0.1:1", "--der", "load#1"],
    ],
)
def test_ids_are_checked_before_anything_is_read(
    option: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [str(ROOT / "mappings/demo/bess2-ied.icd") if a == "ICD" else a for a in option]
    with pytest.raises(SystemExit) as exit_:
        main([*args, "-o", str(tmp_path / "m.yaml")])
    assert exit_.value.code == 2
    assert "is no id: a letter, then up to 63 letters" in capsys.readouterr().err
    assert not (tmp_path / "m.yaml").exists()


def test_an_output_that_cannot_be_written_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a dangling link: passes the checks made before reading, fails when written
    out = tmp_path / "m.yaml"
    out.symlink_to(tmp_path / "gone" / "m.yaml")
    icd = str(ROOT / "mappings" / "demo" / "bess2-ied.icd")
    assert main(["import", "scl", icd, "-o", str(out)]) == 1
    assert f"-o {out}: cannot write the draft: No such file or directory" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (["modbus", "h", "--units", "1_0"], "unit ids are numbers separated by commas: '1_0'"),
        (["modbus", "h:5\u0660\u0662"], "port 1..65535"),
        (["iec104", "h", "--ca", "1,x"], "common addresses are numbers separated by commas"),
        (["iec104", "h", "--ca", "0"], "common addresses are 1..65534: '0'"),
    ],
)
def test_numbers_are_ascii_digits_in_range(
    option: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["discover", *option, "-o", str(tmp_path / "m.yaml")])
    assert exit_.value.code == 2
    assert expected in capsys.readouterr().err
