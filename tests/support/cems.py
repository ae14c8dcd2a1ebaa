"""A CEMS site for tests: a building (controllable load and EV charger) behind one CEMS,
its config and mapping written to a directory with a test PKI, served by the real front
end and read by the real driver over TLS on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from drivers.cems.driver import CemsDriver
from drivers.cems.simulator import CemsFrontEnd
from fwsim.process import free_port
from fwsim.runner import build_grid
from gateway.loader import load_config
from gateway.mapping import Point
from gateway.model import Reading
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
    poll_interval: float = 0.2,
) -> tuple[Path, PkiFiles]:
    """Config and mapping of the site in `directory`; returns the config path and PKI.
    `options` makes the device options from the PKI and the directory (default: the full
    set of `cems_options`)."""
    pki = make_test_pki(directory / "pki")
    device = {
        "id": "building2-cems",
        "protocol": "cems",
        "connection": {"host": "127.0.0.1", "port": port or free_port()},
        "poll_interval": poll_interval,
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

#: the building's CEMS as a Smart API peer, and the gateway's identity towards it
CEMS_SENDER = "https://cems.example/building2"
GATEWAY_SENDER = "https://mgms.example/gateway"


def write_rsa_pair(directory: Path, name: str) -> tuple[Path, Path]:
    """A 2048-bit RSA key (PEM, the traditional form the 1.1 library reads) and its public
    key, written as `<name>.key` and `<name>.pub` in `directory`."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private, public = directory / f"{name}.key", directory / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def write_trust(path: Path, key_id: str, sender: str, public_key: Path) -> Path:
    """A trust file listing one peer (gateway.smartapi.security.keys)."""
    peer = {"key_id": key_id, "sender": sender, "public_key": str(public_key), "roles": []}
    path.write_text(yaml.safe_dump({"peers": [peer]}), encoding="utf-8")
    return path


@dataclass(frozen=True)
class SigningKeys:
    """RSA keys of the gateway, the CEMS and a stranger, and each side's trust file: the
    gateway trusts the CEMS's key for CEMS_SENDER, the CEMS the gateway's for
    GATEWAY_SENDER; nobody trusts the stranger's."""

    gateway_key: Path
    cems_key: Path
    stranger_key: Path
    gateway_trusts: Path
    cems_trusts: Path

    @classmethod
    def write(cls, directory: Path) -> SigningKeys:
        gateway_key, gateway_pub = write_rsa_pair(directory, "gateway")
        cems_key, cems_pub = write_rsa_pair(directory, "cems")
        stranger_key, _ = write_rsa_pair(directory, "stranger")
        return cls(
            gateway_key,
            cems_key,
            stranger_key,
            write_trust(directory / "gateway-trust.yaml", "cems-1", CEMS_SENDER, cems_pub),
            write_trust(directory / "cems-trust.yaml", "mgms-1", GATEWAY_SENDER, gateway_pub),
        )

    def gateway(self, key: Path | None = None) -> dict[str, Any]:
        """The gateway's `signing` option (its own key unless `key`)."""
        return {
            "key_file": str(key or self.gateway_key),
            "key_id": "mgms-1",
            "trust_file": str(self.gateway_trusts),
        }

    def cems(self, key: Path | None = None) -> dict[str, Any]:
        """The simulated CEMS's `simulator.signing` option (its own key unless `key`)."""
        return {
            "key_file": str(key or self.cems_key),
            "key_id": "cems-1",
            "trust_file": str(self.cems_trusts),
        }


@dataclass
class Running:
    """The site's simulated CEMS and the driver connected to it; `got` collects what the
    driver's push endpoint delivers (with `subscribe`), `arrived` is set at each."""

    driver: CemsDriver
    front: CemsFrontEnd
    got: list[Reading] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def point(self, point_id: str) -> Point:
        return next(p for p in self.driver.device.points if p.id == point_id)

    def deliver(self, reading: Reading) -> None:
        self.got.append(reading)
        self.arrived.set()


@contextlib.asynccontextmanager
async def running(config_path: Path, *, subscribe: bool = False) -> AsyncIterator[Running]:
    """Serve the site's CEMS and connect the driver (and its push endpoint)."""
    config = load_config(config_path)
    device = config.devices[0]
    front = CemsFrontEnd(device, build_grid(config), "127.0.0.1", device.connection.port or 0)
    await front.start()
    site = Running(CemsDriver(device), front)
    try:
        await site.driver.connect()
        if subscribe:
            assert await site.driver.subscribe(site.deliver)
        yield site
    finally:
        await site.driver.close()
        await front.stop()
