"""A library-signed Write over mutual TLS to the gateway's access endpoint, applied on the
real battery inverter simulator (Modbus TCP on loopback) exactly once; configured as an
operator would: an allow-list entry of profile smartapi-1.1 with the peer's time zone."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.app import Gateway
from gateway.errors import KeyFileError
from gateway.loader import load_config
from gateway.mapping import Quantity
from gateway.model import Command, CommandResult
from gateway.north.codec import access_security
from gateway.north.config import NorthConfig, PeerRule, Role, TlsFiles
from gateway.north.tls import client_context, server_context
from gateway.smartapi.access import ACCESS_PATH, AccessService
from gateway.smartapi.interop import integer_id
from gateway.smartapi.peers import Dialect
from tests.interop.conftest import PEER, PEER_TZ, Keys
from tests.interop.peer import LibraryPeer
from tests.support import north as support
from tests.support.pki import PkiFiles, make_test_pki
from tests.support.procs import DEMO_CONFIG, free_port, start_sim
from tests.support.waiting import until

pytestmark = pytest.mark.integration

BESS = "urn:mgms:microgrid:demo-microgrid:der:bess1"
SA = "http://smart-api.io/ontology/1.0/smartapi#"
NASA_KW = "http://data.nasa.gov/qudt/owl/unit#Kilowatt"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def north_config(pki: PkiFiles, keys: Keys, tmp_path: Path) -> NorthConfig:
    """The dev config with our RSA signing key (the 1.1 scheme signs with RSA), the
    library's key trusted for its sender, and the AMS certificate's entry saying 1.1."""
    config = support.gateway_config(pki, ams_port=free_port())
    trust = tmp_path / "trust.yaml"
    trust.write_text(
        f"peers:\n  - key_id: ams-11\n    sender: {PEER}\n"
        f"    public_key: {keys.peer_pub}\n    roles: [ams]\n"
    )
    ams_rule = next(r for r in config.allow if r.role is Role.AMS)
    rule = PeerRule(
        subject=ams_rule.subject,
        role=Role.AMS,
        senders=(PEER,),
        profile=Dialect.SMARTAPI_11,
        timezone=PEER_TZ,
    )
    return config.model_copy(
        update={
            "signing": config.signing.model_copy(
                update={"key": keys.gateway_key, "key_id": "mgms-1", "trust": trust}
            ),
            "allow": tuple(rule if r is ams_rule else r for r in config.allow),
        }
    )


async def test_library_signed_write_is_applied_once_on_the_device(
    library: LibraryPeer, keys: Keys, pki: PkiFiles, tmp_path: Path
) -> None:
    devices = ["bess1-inverter"]
    ports = {d: free_port() for d in devices}
    sim = start_sim(DEMO_CONFIG, ports, devices=devices)
    config = load_config(DEMO_CONFIG, port_overrides=ports)
    for m in config.mappings.values():
        m.devices = [d for d in m.devices if d.id in devices]
    config.gateway.state_dir = tmp_path / "state"
    north = north_config(pki, keys, tmp_path)
    sent: list[Command] = []
    try:
        async with Gateway(config) as gw:
            assert gw.controller is not None
            controller = gw.controller
            assert await gw.wait_connected(10)

            async def counted(command: Command) -> CommandResult:
                sent.append(command)
                return await controller.write(command)

            opener, sealer = access_security(north.signing, north.identity, None, north.profiles())
            access = AccessService(
                config=config,
                table=gw.table,
                write=counted,
                sender=north.identity,
                opener=opener,
                sealer=sealer,
                profiles=north.profiles(),
            )
            async with support.running_gateway(north, tmp_path / "gw", access=access) as running:
                assert running.server is not None
                body = library.request(
                    method="write",
                    sender=PEER,
                    entity=BESS,
                    values=[{"quantity": SA + "ActivePower", "unit": NASA_KW, "value": -20.0}],
                    sign_key=str(keys.peer_key),
                )
                url = f"https://127.0.0.1:{running.server.port}{ACCESS_PATH}"
                cert, key = pki.pair("ams")
                ctx = client_context(TlsFiles(ca=(pki.ca,), cert=cert, key=key))
                answers = []
                async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(ssl=ctx)
                ) as session:
                    for _ in range(2):  # the same body twice: a replay
                        async with session.post(
                            url, data=body.body, headers={"Content-Type": body.content_type}
                        ) as r:
                            answers.append((r.status, r.headers["Content-Type"], await r.read()))
            status, ctype, reply = answers[0]
            assert status == 200, reply[:500]
            assert answers[1][0] == 409 and b"replay" in answers[1][2].lower()
            assert [(c.point, c.value) for c in sent] == [("bess1.p_set", -20.0)]
            # the device itself now runs at -20 kW: the inverter's measured P follows
            await until(lambda: gw.table.value("bess1", Quantity.ACTIVE_POWER) == -20.0)
            answer = library.parse("response", reply, ctype, verify_key=str(keys.gateway_pub))
            assert all(c["hash_ok"] and c["signature_ok"] for c in answer["checks"])
            (vo,) = answer["activities"][0]["entities"][0]["values"]
            assert (vo["value"], vo["unit"], vo["quantity"]) == (-20.0, NASA_KW, SA + "ActivePower")
    finally:
        sim.stop()


def test_a_11_peer_needs_an_rsa_signing_key(keys: Keys, pki: PkiFiles, tmp_path: Path) -> None:
    """The dev signing key is not RSA: with a 1.1 peer configured the start fails, saying
    why, instead of answering that peer with signatures it cannot check."""
    config = north_config(pki, keys, tmp_path)
    dev_key = support.gateway_config(pki, ams_port=1).signing.key
    config = config.model_copy(
        update={"signing": config.signing.model_copy(update={"key": dev_key})}
    )
    with pytest.raises(KeyFileError, match=r"smartapi-1\.1 needs an RSA signing key"):
        access_security(config.signing, config.identity, None, config.profiles())
    small = tmp_path / "small.key"
    small.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    config = config.model_copy(update={"signing": config.signing.model_copy(update={"key": small})})
    with pytest.raises(KeyFileError, match="1024 bits, at least 2048"):
        access_security(config.signing, config.identity, None, config.profiles())


async def test_forecast_and_verification_to_a_11_ams(
    library: LibraryPeer, keys: Keys, pki: PkiFiles, tmp_path: Path
) -> None:
    """The AMS entry says smartapi-1.1: what the gateway queues for it is signed the 1.1
    way, delivered over mutual TLS, read and verified by the library; the AMS's own
    Response (built by the library) counts as delivered."""
    received: list[tuple[str, bytes, str]] = []
    answer = library.message(kind="response", sender=PEER, id=1)

    async def ams(request: web.Request) -> web.Response:
        received.append((request.path, await request.read(), request.headers["Content-Type"]))
        return web.Response(body=answer.body, headers={"Content-Type": answer.content_type})

    app = web.Application()
    app.router.add_post("/{tail:.*}", ams)
    runner = web.AppRunner(app)
    await runner.setup()
    cert, key = pki.pair("ams")
    ams_port = free_port()
    site = web.TCPSite(
        runner,
        "127.0.0.1",
        ams_port,
        ssl_context=server_context(TlsFiles(ca=(pki.ca,), cert=cert, key=key)),
    )
    await site.start()
    try:
        config = north_config(pki, keys, tmp_path)
        urls = support.gateway_config(pki, ams_port=ams_port).ams
        config = config.model_copy(update={"ams": urls})
        async with support.running_gateway(config, tmp_path / "gw") as north:
            forecast = support.forecast(intervals=96)
            verification = support.verification("act-1")
            assert await north.send(forecast) and await north.send(verification)
            await support.drained(north)
    finally:
        await runner.cleanup()
    assert len(received) == 2
    by_kind = {
        ("forecast" if "forecast" in path else "verification"): (b, c) for path, b, c in received
    }
    body, ctype = by_kind["forecast"]
    assert ctype.startswith("multipart/related")
    parsed = library.parse("notification", body, ctype, verify_key=str(keys.gateway_pub))
    assert parsed["checks"] and all(c["hash_ok"] and c["signature_ok"] for c in parsed["checks"])
    assert parsed["id"] == integer_id(forecast.id) and parsed["generated_by"] == config.identity
    (activity,) = parsed["activities"]
    series = {(ts["name"], ts["quantity"]): ts for ts in activity["series"]}
    baseline = series[("Baseline", SA + "ActivePower")]
    assert (
        baseline["values"] == [iv.p_kw for iv in forecast.intervals]
        and len(baseline["values"]) == 96
    )
    assert baseline["unit"] == NASA_KW and baseline["step"] == "PT15M"
    assert baseline["start"] == forecast.start.isoformat()
    body, ctype = by_kind["verification"]
    parsed = library.parse("notification", body, ctype, verify_key=str(keys.gateway_pub))
    assert all(c["signature_ok"] for c in parsed["checks"])
    series = {(ts["name"], ts["quantity"]): ts for ts in parsed["activities"][0]["series"]}
    (iv,) = verification.intervals
    assert series[("Measured", SA + "ActivePower")]["values"] == [iv.p_measured_kw]
    assert series[("DeliveredPercent ActivePower", None)]["values"] == [iv.p_percent]
