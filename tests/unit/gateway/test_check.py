"""`mgms check` reports every problem of a config and its mappings in one run."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.cli import main
from gateway.errors import ConfigError
from gateway.loader import check_files, load_config
from gateway.north.certs import init_dev_pki
from tests.support.sites import SITE_CONFIG, write_site
from tests.unit.north.test_config import NORTH_YAML

MAPPING = """
devices:
  - id: inverter
    protocol: modbus
    connection: {host: 127.0.0.1, port: 1502}
    points:
      - {id: p, address: 1/holding/0, type: int24, unit: KiloW, der: bess}
      - {id: q, address: 1/holding/2, type: int16, unit: KiloVAR, der: ghost}
"""


def found(path: Path) -> set[tuple[str, str | None, str | None]]:
    return {(Path(p.file).name, p.point, p.field) for p in check_files([path])}


def test_unknown_der_shows_with_the_other_errors_of_its_device(tmp_path: Path) -> None:
    problems = check_files([write_site(tmp_path, MAPPING)])
    assert {(p.point, p.field) for p in problems} == {("p", "type"), ("q", "der")}
    ghost = next(p for p in problems if p.field == "der")
    assert ghost.line == 8 and ghost.device == "inverter"
    assert "unknown DER 'ghost' (known: bess, pcc)" in ghost.message


def test_a_config_error_does_not_hide_the_mapping_errors(tmp_path: Path) -> None:
    broken = SITE_CONFIG.replace("import_limit_kw: 100", "import_limit_kw: -5")
    assert found(write_site(tmp_path, MAPPING, broken)) == {
        ("gw.yaml", None, "coupling_point.import_limit_kw"),
        ("m.yaml", "p", "type"),
        ("m.yaml", "q", "der"),  # DER ids are read from the config even though it is wrong
    }


def test_a_broken_der_list_still_checks_the_mappings(tmp_path: Path) -> None:
    broken = SITE_CONFIG.replace("ders:\n", "ders: 5\nunused:\n")
    got = found(write_site(tmp_path, MAPPING, broken))
    assert ("m.yaml", "p", "type") in got
    assert not any(field == "der" for _, _, field in got)  # no DER list to check against


IED = """
devices:
  - id: ied
    protocol: iec61850
    connection: {host: 127.0.0.1, port: 102}
    points:
%s
"""


@pytest.mark.parametrize(
    ("point", "field", "needle"),
    [
        # `$` names are wrong before anything else (here the missing @FC)
        (
            "{id: a, address: LD0/MMXU1$MX$TotW$mag$f, unit: KiloW}",
            "address",
            "not MMS '$' names (here: LD0/MMXU1.TotW.mag.f@MX)",
        ),
        ("{id: a, address: LD0/MMXU1.TotW$mag$f@MX, unit: KiloW}", "address", "'$' names"),
        # a set point attribute under MX
        (
            "{id: a, address: LD0/DRCC1.WSpt.setMag.f@MX, unit: KiloW, direction: read-write}",
            "address",
            "'setMag' is a set point attribute: its functional constraint is SP (or CF), not MX",
        ),
        # measurands and status are not written
        (
            "{id: a, address: LD0/MMXU1.TotW.mag.f@MX, unit: KiloW, direction: read-write}",
            "direction",
            "MX attributes are read-only in IEC 61850",
        ),
        (
            "{id: a, address: LD0/XCBR1.Pos.stVal@ST, type: dbpos, unit: UNITLESS,"
            " direction: write}",
            "direction",
            "ST attributes are read-only",
        ),
    ],
)
def test_iec61850_address_mistakes(tmp_path: Path, point: str, field: str, needle: str) -> None:
    path = tmp_path / "ied.yaml"
    path.write_text(textwrap.dedent(IED) % ("      - " + point))
    (problem,) = check_files([path])
    assert (problem.point, problem.field, problem.line) == ("a", field, 7)
    assert needle in problem.message


def test_iec61850_set_points_as_attributes_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "ied.yaml"
    points = [
        "{id: a, address: LD0/DRCC1.WSpt.setMag.f@SP, unit: KiloW, direction: read-write}",
        "{id: b, address: LD0/ZBAT1.WHRtg.setMag.f@CF, unit: KiloW-HR}",
        "{id: c, address: LD0/MMXU1.TotW.mag.f@MX, unit: KiloW}",
    ]
    path.write_text(textwrap.dedent(IED) % "\n".join("      - " + p for p in points))
    assert check_files([path]) == []


def north_site(tmp_path: Path) -> Path:
    init_dev_pki(tmp_path / "certs")
    mapping = MAPPING.replace("int24", "int16").replace("der: ghost", "der: bess")
    return write_site(tmp_path, mapping, SITE_CONFIG + NORTH_YAML)


def add_weak_peer(tmp_path: Path) -> Path:
    """A 1024-bit RSA key in the gateway's trust file."""
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    pem = tmp_path / "certs" / "weak.pem"
    pem.write_bytes(
        weak.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    trust = tmp_path / "certs" / "trust-gateway.yaml"
    data = yaml.safe_load(trust.read_text())
    data["peers"].append(
        {"key_id": "weak-1", "sender": "https://weak.example", "public_key": "weak.pem"}
    )
    trust.write_text(yaml.safe_dump(data))
    return trust


def test_a_weak_key_in_the_trust_file_is_a_config_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = north_site(tmp_path)
    assert check_files([config]) == []
    trust = add_weak_peer(tmp_path)
    (problem,) = check_files([config])
    assert problem.file == str(trust)
    assert "weak.pem: RSA key of 1024 bits, at least 2048 needed" in problem.message

    assert main(["check", str(config)]) == 1
    err = capsys.readouterr().err
    assert str(trust) in err and "1024 bits" in err and "Traceback" not in err
    # `mgms run` refuses it the same way, before anything starts (exit 2: fix the files)
    with pytest.raises(ConfigError, match=re.escape(str(trust))):
        load_config(config, check_keys=True)
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(trust) in err and "1024 bits" in err and "Traceback" not in err


def test_a_missing_signing_key_is_named_with_its_field(tmp_path: Path) -> None:
    config = north_site(tmp_path)
    (tmp_path / "certs" / "gateway-signing.key").unlink()
    (problem,) = check_files([config])
    assert problem.file == str(config) and problem.field == "north.signing.key"
    assert "gateway-signing.key: cannot read private key" in problem.message
