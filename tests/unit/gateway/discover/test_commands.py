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
    assert f"import scl: {bad}: refused: DTDForbidden" in capsys.readouterr().err
    assert not (tmp_path / "x.yaml").exists()


def test_dlms_options_are_checked_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["discover", "dlms", "127.0.0.1:1", "--auth", "low", "-o", str(tmp_path / "m.yaml")]
    assert main(args) == 2
    assert "authentication 'low' needs password_file" in capsys.readouterr().err


def test_modbus_unit_ids_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["discover", "modbus", "h", "--units", "0,300", "-o", "x.yaml"])
    assert "unit ids are 1..247" in capsys.readouterr().err
