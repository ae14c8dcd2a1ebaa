"""The published Smart API 1.1 library as the CEMS: behind an HTTPS endpoint on loopback, the
library parses the driver's signed 1.1 Read request (and verifies its signature with the
gateway's public key), then answers with a Response it builds and signs itself; the driver
verifies that answer against its trust file and reads the values. Values, units, times
(the library's naive clock, read in the CEMS's configured zone) and ids are compared field
by field."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp import web

from drivers.cems.driver import CemsDriver
from drivers.cems.protocol import CemsOptions
from drivers.cems.security import SmartApiLink
from drivers.cems.simulator import server_context
from fwsim.process import free_port
from gateway.loader import load_config
from gateway.model import Reading
from gateway.smartapi.messages import (
    Activity,
    Entity,
    Method,
    Response,
    ValueObject,
    new_message_id,
)
from gateway.smartapi.peers import Dialect, PeerProfile
from gateway.smartapi.security.keys import TrustStore
from gateway.smartapi.vocab import QuantityKind
from tests.interop.peer import Body, LibraryPeer
from tests.support.cems import (
    CEMS_SENDER,
    EV1,
    GATEWAY_SENDER,
    LOAD2,
    SMARTAPI_POINTS,
    cems_options,
    write_rsa_pair,
    write_site,
    write_trust,
)
from tests.support.pki import PkiFiles

pytestmark = pytest.mark.integration

SA = "http://smart-api.io/ontology/1.0/smartapi#"
NASA = "http://data.nasa.gov/qudt/owl/unit#"
#: the library CEMS's clock: its naive times are local times of this zone
CEMS_TZ = "Europe/Helsinki"


@dataclass
class LibraryCems:
    """An HTTPS endpoint whose answers the library builds: `answer` makes the library's
    Response spec from what the library parsed of the request."""

    library: LibraryPeer
    key: Path
    gateway_pub: Path
    answer: Callable[[dict[str, Any]], dict[str, Any]]
    parsed: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        content_type = request.headers["Content-Type"]
        parsed = await asyncio.to_thread(
            self.library.parse, "request", body, content_type, verify_key=str(self.gateway_pub)
        )
        self.parsed.append(parsed)
        spec = self.answer(parsed)
        reply: Body = await asyncio.to_thread(self.library.message, **spec)
        return web.Response(body=reply.body, headers={"Content-Type": reply.content_type})


@dataclass(frozen=True)
class Rig:
    driver: CemsDriver
    cems: LibraryCems


@contextlib.asynccontextmanager
async def rig(
    directory: Path, library: LibraryPeer, answer: Callable[[dict[str, Any]], dict[str, Any]]
) -> AsyncIterator[Rig]:
    gateway_key, gateway_pub = write_rsa_pair(directory, "gateway")
    cems_key, cems_pub = write_rsa_pair(directory, "cems")
    trust = write_trust(directory / "trust.yaml", "cems-1", CEMS_SENDER, cems_pub)

    def options(pki: PkiFiles, d: Path) -> dict[str, Any]:
        return {
            **cems_options(pki, d),
            "profile": "smartapi-1.1",
            "timezone": CEMS_TZ,
            "smartapi_sender": GATEWAY_SENDER,
            "peer_sender": CEMS_SENDER,
            "signing": {"key_file": str(gateway_key), "key_id": "mgms-1", "trust_file": str(trust)},
        }

    base, _ = write_site(directory, points=SMARTAPI_POINTS, options=options, timeout=60.0)
    device = load_config(base).devices[0]
    typed = device.typed_options
    assert isinstance(typed, CemsOptions)
    cems = LibraryCems(library, cems_key, gateway_pub, answer)
    app = web.Application()
    app.router.add_post(typed.smartapi_path, cems.handle)
    app.router.add_get(typed.smartapi_path, _ok)  # the driver's link probe
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = device.connection.port
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_context(device, typed))
    await site.start()
    driver = CemsDriver(device)
    try:
        await driver.connect()
        yield Rig(driver, cems)
    finally:
        await driver.close()
        await runner.cleanup()


async def _ok(_: web.Request) -> web.Response:
    return web.Response(status=204)


def _by_id(readings: list[Reading]) -> dict[str, Reading]:
    return {r.point: r for r in readings}


async def test_library_cems_reads_our_signed_request_and_the_driver_reads_its_answer(
    tmp_path: Path, library: LibraryPeer
) -> None:
    """One entity (load2): the library reads our quantities and units, verifies our
    signature; we verify its signed Response and take -12.5 kW, 3.25 kvar and 40 % with
    the times it stamped (15:00:05 in Helsinki in June is 12:00:05 UTC)."""

    def answer(parsed: dict[str, Any]) -> dict[str, Any]:
        (activity,) = parsed["activities"]
        (entity,) = activity["entities"]
        return {
            "kind": "response",
            "sender": CEMS_SENDER,
            "id": 7,
            "sign_key": str(library_cems.key),
            "activities": [
                {
                    "method": "read",
                    "entity": entity["iri"],
                    "values": [
                        {
                            "quantity": SA + "ActivePower",
                            "unit": NASA + "Kilowatt",
                            "value": -12.5,
                            "instant": "2026-06-01T15:00:05",
                        },
                        {
                            "quantity": SA + "ReactivePower",
                            "unit": NASA + "KilovoltAmpereReactive",
                            "value": 3.25,
                            "instant": "2026-06-01T15:00:05",
                        },
                        {
                            "quantity": "http://qudt.org/vocab/quantitykind/Dimensionless",
                            "unit": NASA + "Percent",
                            "value": 40.0,
                            "instant": "2026-06-01T15:00:06",
                        },
                    ],
                }
            ],
        }

    load2 = [p for p in SMARTAPI_POINTS if p["id"].startswith("load2.")]
    async with rig(tmp_path, library, answer) as r:
        library_cems = r.cems
        points = [p for p in r.driver.device.points if p.id.startswith("load2.")]
        assert len(points) == len(load2)
        got = _by_id(await r.driver.read(points))

    # what the library read of our request
    (parsed,) = r.cems.parsed
    assert parsed["generated_by"] == GATEWAY_SENDER
    assert isinstance(parsed["id"], int)
    assert parsed["checks"] and all(c["hash_ok"] and c["signature_ok"] for c in parsed["checks"])
    (activity,) = parsed["activities"]
    assert activity["method"] == SA + "Read"
    (entity,) = activity["entities"]
    assert entity["iri"] == LOAD2 and entity["class"] == "Device"
    asked = sorted(((v["quantity"], v["unit"]) for v in entity["values"]), key=str)
    assert asked == sorted(
        [
            (SA + "ActivePower", NASA + "Kilowatt"),
            (SA + "ReactivePower", None),  # the address names no unit: any is taken
            # the library reads quantity kinds from the NASA QUDT term only, and 1.1 has no
            # dimensionless kind: it sees the unit, not the kind (docs/cems.md)
            (None, NASA + "Percent"),
        ],
        key=str,
    ), asked
    assert all(v["value"] is None for v in entity["values"])

    # what the driver read of the library's answer
    at = datetime(2026, 6, 1, 12, 0, 5, tzinfo=UTC)
    assert (got["load2.p"].value, got["load2.p"].unit) == (-12.5, "KiloW")
    assert (got["load2.q"].value, got["load2.q"].unit) == (3.25, "KiloVAR")
    assert (got["load2.curtail"].value, got["load2.curtail"].unit) == (40.0, "PERCENT")
    assert got["load2.p"].source_time == at and got["load2.q"].source_time == at
    assert got["load2.curtail"].source_time == datetime(2026, 6, 1, 12, 0, 6, tzinfo=UTC)
    assert all(r.quality.good for r in got.values())


async def test_a_library_answer_signed_by_another_key_gives_no_value(
    tmp_path: Path, library: LibraryPeer
) -> None:
    stranger, _ = write_rsa_pair(tmp_path, "stranger")

    def answer(parsed: dict[str, Any]) -> dict[str, Any]:
        return {
            "kind": "response",
            "sender": CEMS_SENDER,
            "sign_key": str(stranger),
            "activities": [
                {
                    "method": "read",
                    "entity": EV1,
                    "values": [
                        {"quantity": SA + "ActivePower", "unit": NASA + "Kilowatt", "value": 1.0}
                    ],
                }
            ],
        }

    async with rig(tmp_path, library, answer) as r:
        (point,) = [p for p in r.driver.device.points if p.id == "ev1.p"]
        (reading,) = await r.driver.read([point])
    assert reading.value is None and not reading.quality.good
    assert "does not verify with " + CEMS_SENDER in reading.detail


def test_the_trust_file_names_the_cems(tmp_path: Path) -> None:
    """The trust file the rig writes binds the CEMS's key to its sender (the check the
    signature test above relies on)."""
    _, pub = write_rsa_pair(tmp_path, "x")
    trust = TrustStore.from_file(write_trust(tmp_path / "t.yaml", "cems-1", CEMS_SENDER, pub))
    assert [p.sender for p in trust.by_sender(CEMS_SENDER)] == [CEMS_SENDER]


def test_the_library_reads_a_1_1_cems_answer_with_its_times(library: LibraryPeer) -> None:
    """The simulated 1.1 CEMS's answer (what `simulator_link` writes) as the library reads
    it: value, NASA unit and quantity, and the value's time (smartapi:instant, the only
    time the library reads on a value object)."""
    at = datetime(2026, 6, 1, 12, 0, 5, tzinfo=UTC)
    vo = ValueObject(quantity=QuantityKind.ACTIVE_POWER, unit="KiloW", value=-7.5, time=at)
    response = Response(
        id=new_message_id(),
        sender=CEMS_SENDER,
        generated_at=at,
        activities=(
            Activity(method=Method.READ, entities=(Entity(iri=EV1, value_objects=(vo,)),)),
        ),
    )
    body, content_type = SmartApiLink(PeerProfile(Dialect.SMARTAPI_11), None, None).encode(response)
    parsed = library.parse("response", body, content_type)
    (activity,) = parsed["activities"]
    (entity,) = activity["entities"]
    assert entity["iri"] == EV1
    (value,) = entity["values"]
    assert (value["value"], value["unit"], value["quantity"]) == (
        -7.5,
        NASA + "Kilowatt",
        SA + "ActivePower",
    )
    assert value["instant"] is not None
    assert datetime.fromisoformat(value["instant"]).astimezone(UTC) == at


async def test_a_library_notification_pushed_to_the_gateway_updates_the_point(
    tmp_path: Path, library: LibraryPeer
) -> None:
    """The library as a CEMS that notifies: its signed Notification (integer id, naive
    local time, NASA units) POSTed to the driver's push endpoint becomes a reading; the
    same body again is refused as a replay."""
    gateway_key, _ = write_rsa_pair(tmp_path, "gateway")
    cems_key, cems_pub = write_rsa_pair(tmp_path, "cems")
    trust = write_trust(tmp_path / "trust.yaml", "cems-1", CEMS_SENDER, cems_pub)
    port = free_port()

    def options(pki: PkiFiles, d: Path) -> dict[str, Any]:
        cert, key = pki.pair("gateway")
        return {
            **cems_options(pki, d),
            "profile": "smartapi-1.1",
            "timezone": CEMS_TZ,
            "peer_sender": CEMS_SENDER,
            "signing": {"key_file": str(gateway_key), "key_id": "mgms-1", "trust_file": str(trust)},
            "push": {
                "host": "127.0.0.1",
                "port": port,
                "cert_file": str(cert),
                "key_file": str(key),
                "client_ca_file": str(pki.ca),
            },
        }

    base, pki = write_site(tmp_path, points=SMARTAPI_POINTS, options=options)
    driver = CemsDriver(load_config(base).devices[0])
    got: list[Reading] = []
    now_local = datetime.now(ZoneInfo(CEMS_TZ)).replace(tzinfo=None, microsecond=0)
    notification = await asyncio.to_thread(
        library.message,
        kind="notification",
        sender=CEMS_SENDER,
        id=4242,
        sign_key=str(cems_key),
        activities=[
            {
                "method": "read",
                "entity": EV1,
                "values": [
                    {
                        "quantity": SA + "ActivePower",
                        "unit": NASA + "Kilowatt",
                        "value": -6.5,
                        "instant": now_local.isoformat(),
                    }
                ],
            }
        ],
    )
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    ctx.load_cert_chain(*map(str, pki.issue("cems-client", "cems")))
    url = f"https://127.0.0.1:{port}/smartapi/v1.0e1.0/notification/"
    headers = {"Content-Type": notification.content_type}
    try:
        assert await driver.subscribe(got.append)
        async with aiohttp.ClientSession() as session:
            answers = []
            for _ in range(2):
                async with session.post(
                    url, data=notification.body, headers=headers, ssl=ctx
                ) as answer:
                    answers.append((answer.status, await answer.text()))
    finally:
        await driver.close()
    assert answers[0] == (204, "")
    assert answers[1][0] == 403 and "already received" in answers[1][1]
    (reading,) = got
    assert (reading.point, reading.value, reading.unit) == ("ev1.p", -6.5, "KiloW")
    assert reading.source_time == now_local.replace(tzinfo=ZoneInfo(CEMS_TZ)).astimezone(UTC)
