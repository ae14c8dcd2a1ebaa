"""Optional push: a CEMS POSTs Smart API Notifications to the gateway's endpoint over
mutual TLS and its points update without a poll; anything else is refused with a reason
and delivers nothing."""

from __future__ import annotations

import io
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from drivers.cems.driver import CemsDriver
from drivers.cems.simulator import CemsFrontEnd
from fwsim.process import free_port
from fwsim.runner import build_grid
from gateway.loader import load_config
from gateway.model import Reading
from gateway.smartapi import codec
from gateway.smartapi.messages import (
    Activity,
    Entity,
    Method,
    Notification,
    Request,
    ValueObject,
    new_message_id,
)
from gateway.smartapi.vocab import QuantityKind
from tests.support.cems import EV1, LOAD2, SMARTAPI_POINTS, cems_options
from tests.support.cems import write_site as write_cems_site
from tests.support.pki import PkiFiles

pytestmark = pytest.mark.integration

PUSH_PATH = "/smartapi/v1.0e1.0/notification/"
CEMS = "https://cems.example/building2"
T = datetime(2026, 6, 1, 12, 0, 5, tzinfo=UTC)


@dataclass
class Rig:
    driver: CemsDriver
    pki: PkiFiles
    url: str
    got: list[Reading]


def _with_push(port: int) -> Any:
    def options(pki: PkiFiles, directory: Path) -> dict[str, Any]:
        gateway_cert, gateway_key = pki.pair("gateway")
        return {
            **cems_options(pki, directory),
            "peer_sender": CEMS,
            "push": {
                "host": "127.0.0.1",
                "port": port,
                "cert_file": str(gateway_cert),
                "key_file": str(gateway_key),
                "client_ca_file": str(pki.ca),
            },
        }

    return options


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    port = free_port()
    base, pki = write_cems_site(tmp_path, points=SMARTAPI_POINTS, options=_with_push(port))
    config = load_config(base)
    device = config.devices[0]
    front = CemsFrontEnd(device, build_grid(config), "127.0.0.1", device.connection.port or 0)
    await front.start()
    driver = CemsDriver(device)
    got: list[Reading] = []
    try:
        await driver.connect()
        assert await driver.subscribe(got.append)
        yield Rig(driver, pki, f"https://127.0.0.1:{port}{PUSH_PATH}", got)
    finally:
        await driver.close()
        await front.stop()


def _client_context(pki: PkiFiles, cert: tuple[Path, Path] | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


async def _post(rig: Rig, body: bytes, content_type: str = "text/turtle") -> tuple[int, str]:
    ctx = _client_context(rig.pki, rig.pki.issue("cems-client", "cems"))
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            rig.url, data=io.BytesIO(body), headers={"Content-Type": content_type}, ssl=ctx
        ) as r,
    ):
        return r.status, await r.text()


def _notification(*objects: ValueObject, entity: str = LOAD2, sender: str = CEMS) -> Notification:
    """Sent now (the endpoint refuses stale notifications); its values carry their own time."""
    return Notification(
        id=new_message_id(),
        sender=sender,
        generated_at=datetime.now(UTC),
        activities=(
            Activity(method=Method.READ, entities=(Entity(iri=entity, value_objects=objects),)),
        ),
    )


async def test_a_notification_updates_its_points_at_once(rig: Rig) -> None:
    message = _notification(
        ValueObject(quantity=QuantityKind.ACTIVE_POWER, unit="W", value=-7500.0, time=T),
        entity=EV1,
    )
    status, _ = await _post(rig, codec.encode(message))
    assert status == 204
    (reading,) = rig.got  # only ev1.p: the notification says nothing of the others
    assert reading.point == "ev1.p"
    assert reading.value == pytest.approx(-7.5)
    assert reading.source_time == T and reading.quality.good


async def test_json_ld_is_accepted_too(rig: Rig) -> None:
    message = _notification(
        ValueObject(quantity=QuantityKind.REACTIVE_POWER, unit="KiloVAR", value=1.25)
    )
    status, _ = await _post(rig, codec.encode(message, codec.Format.JSONLD), "application/ld+json")
    assert status == 204
    assert [(r.point, r.value) for r in rig.got] == [("load2.q", 1.25)]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"@prefix : <oops", "not a Smart API message"),
        (b"A" * (2 << 20), "larger than"),
    ],
    ids=["garbage", "huge"],
)
async def test_bad_bodies_are_refused_and_deliver_nothing(
    rig: Rig, body: bytes, reason: str
) -> None:
    status, text = await _post(rig, body)
    assert status in (400, 413) and reason in text
    assert rig.got == []


async def test_a_notification_from_another_sender_is_refused(rig: Rig) -> None:
    """The client certificate proves a CEMS of the CA; the sender must be this CEMS."""
    message = _notification(
        ValueObject(quantity=QuantityKind.ACTIVE_POWER, unit="KiloW", value=3.0),
        sender="https://cems.example/building9",
    )
    status, text = await _post(rig, codec.encode(message))
    assert status == 403
    assert "from https://cems.example/building9, not from the CEMS " + CEMS in text
    assert rig.got == []


async def test_a_notification_sent_again_is_refused(rig: Rig) -> None:
    """A replayed notification would set an old value: its id was seen, it is refused."""
    message = _notification(
        ValueObject(quantity=QuantityKind.ACTIVE_POWER, unit="KiloW", value=2.0)
    )
    body = codec.encode(message)
    assert (await _post(rig, body))[0] == 204
    status, text = await _post(rig, body)
    assert status == 403 and "refused: " in text and message.id in text
    assert [r.value for r in rig.got] == [2.0]


async def test_a_request_is_not_a_notification(rig: Rig) -> None:
    request = Request(
        id=new_message_id(),
        sender="https://cems.example/building2",
        generated_at=datetime.now(UTC),
        activities=(Activity(method=Method.READ, entities=(Entity(iri=LOAD2),)),),
    )
    status, text = await _post(rig, codec.encode(request))
    assert status == 400 and "expected a Notification, not a Request" in text
    assert rig.got == []


async def test_a_client_without_a_certificate_is_refused(rig: Rig) -> None:
    ctx = _client_context(rig.pki, None)
    body = codec.encode(
        _notification(ValueObject(quantity=QuantityKind.ACTIVE_POWER, unit="KiloW", value=1.0))
    )
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.post(rig.url, data=body, ssl=ctx) as r:
                await r.read()
    assert rig.got == []


async def test_closing_the_driver_closes_the_endpoint(rig: Rig) -> None:
    await rig.driver.close()
    with pytest.raises(aiohttp.ClientConnectorError):
        await _post(rig, b"")
