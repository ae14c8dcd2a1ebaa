"""A CEMS site for tests: a building (controllable load and EV charger) behind one CEMS,
its config and mapping written to a directory with a test PKI, served by the real front
end and read by the real driver over TLS on loopback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from fwsim.process import free_port
from tests.support.pki import PkiFiles, make_test_pki

BUILDING = "/api/v1/building"
CURTAIL = "/api/v1/load/curtailment"
EV_LIMIT = "/api/v1/ev/limit"
TOKEN = "s3cr3t-cems-token"

POINTS: list[dict[str, Any]] = [
    {
        "id": "load2.p",
        "address": f"{BUILDING}#/load/active_power_kw",
        "unit": "KiloW",
        "der": "load2",
        "quantity": "active_power",
    },
    {
        "id": "load2.q",
        "address": f"{BUILDING}#/load/reactive_power_kvar",
        "unit": "KiloVAR",
        "der": "load2",
        "quantity": "reactive_power",
    },
    {
        "id": "load2.curtail",
        "address": f"{BUILDING}#/load/curtailment_pct",
        "unit": "PERCENT",
        "der": "load2",
        "quantity": "active_power_limit",
    },
    {
        "id": "load2.curtail_set",
        "address": f"{CURTAIL}#/curtailment/value",
        "unit": "PERCENT",
        "direction": "write",
        "limits": {"min": 0, "max": 50},
        "der": "load2",
        "quantity": "active_power_limit",
    },
    # the charger reports watts: scaled to kW by the mapping
    {
        "id": "ev1.p",
        "address": f"{BUILDING}#/ev/power_w",
        "scale": 0.001,
        "unit": "KiloW",
        "der": "ev1",
        "quantity": "active_power",
    },
    {
        "id": "ev1.limit",
        "address": f"{BUILDING}#/ev/limit_permille",
        "scale": 0.1,
        "unit": "PERCENT",
        "der": "ev1",
        "quantity": "active_power_limit",
    },
    {
        "id": "ev1.limit_set",
        "address": f"{EV_LIMIT}#/limit_permille",
        "scale": 0.1,
        "unit": "PERCENT",
        "direction": "write",
        "limits": {"min": 0, "max": 100},
        "der": "ev1",
        "quantity": "active_power_limit",
    },
]

DERS = [
    {"id": "load2", "type": "load", "control": "distributed", "ratings": {"p_min_kw": -40}},
    {"id": "ev1", "type": "ev_charger", "control": "distributed", "ratings": {"p_min_kw": -11}},
]


def cems_options(pki: PkiFiles, directory: Path) -> dict[str, Any]:
    """Server verified against the test CA, mutual TLS, a bearer token; both write forms."""
    server_cert, server_key = pki.issue("cems-server", "cems")
    client_cert, client_key = pki.pair("gateway")
    token = directory / "cems.token"
    token.write_text(TOKEN + "\n", encoding="utf-8")
    return {
        "ca_file": str(pki.ca),
        "cert_file": str(client_cert),
        "key_file": str(client_key),
        "token_file": token.name,
        "writes": {
            CURTAIL: {"method": "PUT", "body": {"curtailment": {"value": None, "unit": "%"}}},
            EV_LIMIT: {"method": "POST"},
        },
        "simulator": {
            "cert_file": str(server_cert),
            "key_file": str(server_key),
            "client_ca_file": str(pki.ca),
        },
    }


def write_site(
    directory: Path,
    *,
    port: int | None = None,
    options: Callable[[PkiFiles, Path], dict[str, Any]] | None = None,
    points: list[dict[str, Any]] | None = None,
    timeout: float = 1.0,
) -> tuple[Path, PkiFiles]:
    """Config and mapping of the site in `directory`; returns the config path and PKI.
    `options` makes the device options from the PKI and the directory (default: the full
    set of `cems_options`)."""
    pki = make_test_pki(directory / "pki")
    device = {
        "id": "building2-cems",
        "protocol": "cems",
        "connection": {"host": "127.0.0.1", "port": port or free_port()},
        "poll_interval": 0.2,
        "timeout": timeout,
        "options": (options or cems_options)(pki, directory),
        "points": points if points is not None else POINTS,
    }
    (directory / "cems.yaml").write_text(yaml.safe_dump({"devices": [device]}), encoding="utf-8")
    config = {
        "microgrid": {"id": "cems-site", "name": "CEMS test site"},
        "state_dir": "state",
        "mappings": ["cems.yaml"],
        "coupling_point": {"id": "pcc", "import_limit_kw": 100, "export_limit_kw": 100},
        "ders": DERS,
    }
    path = directory / "site.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path, pki


LOAD2 = "https://cems.example/building2/load2"
EV1 = "https://cems.example/building2/ev1"

#: the same building in the Smart API form: entities and quantity kinds
SMARTAPI_POINTS: list[dict[str, Any]] = [
    {
        "id": "load2.p",
        "address": f"<{LOAD2}> ActivePower KiloW",
        "unit": "KiloW",
        "der": "load2",
        "quantity": "active_power",
    },
    {
        "id": "load2.q",
        "address": f"<{LOAD2}> ReactivePower",
        "unit": "KiloVAR",
        "der": "load2",
        "quantity": "reactive_power",
    },
    {
        "id": "load2.curtail",
        "address": f"<{LOAD2}> Dimensionless PERCENT",
        "unit": "PERCENT",
        "direction": "read-write",
        "limits": {"min": 0, "max": 50},
        "der": "load2",
        "quantity": "active_power_limit",
    },
    {
        "id": "ev1.p",
        "address": f"<{EV1}> ActivePower",
        "unit": "KiloW",
        "der": "ev1",
        "quantity": "active_power",
    },
]
