from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from rdflib import Graph

from gateway.config import LoadedConfig
from gateway.model import utcnow
from gateway.points import PointTable
from gateway.smartapi import access, examples, fielddata
from gateway.smartapi.access import (
    ACCESS_PATH,
    PEER_ROLE_KEY,
    AccessPolicy,
    AccessService,
    add_routes,
)
from gateway.smartapi.codec import Format, decode, encode, parse
from gateway.smartapi.encode import der_iri
from gateway.smartapi.messages import (
    Activity,
    Entity,
    ErrorMessage,
    Method,
    Request,
    Response,
    ValueObject,
)
from gateway.smartapi.vocab import QuantityKind

from .controller import TableController

MG = "demo-microgrid"
BESS = der_iri(MG, "bess1")
PV = der_iri(MG, "pv1")


def request(method: Method, entity: str, *vos: ValueObject) -> Request:
    return Request(
        id="req-1",
        sender=examples.AMS_SENDER,
        generated_at=utcnow(),
        activities=(Activity(method=method, entities=(Entity(iri=entity, value_objects=vos),)),),
    )


@pytest.fixture
def controller(table: PointTable) -> TableController:
    return TableController(table)


@pytest.fixture
def service(
    demo_config: LoadedConfig, table: PointTable, controller: TableController
) -> AccessService:
    return AccessService(
        config=demo_config, table=table, write=controller.write, sender="urn:mgms:gateway:demo"
    )


async def call(
    service: AccessService, msg: object, role: str | None = "ams", fmt: Format = Format.TURTLE
) -> tuple[int, object]:
    reply = await service.handle(encode(msg, fmt), fmt.value, role, accept=fmt.value)  # type: ignore[arg-type]
    assert reply.content_type.startswith(fmt.value)
    return reply.status, decode(reply.body, reply.content_type)


async def test_read_by_quantity_kind(service: AccessService) -> None:
    status, answer = await call(
        service, request(Method.READ, BESS, ValueObject(quantity=QuantityKind.STATE_OF_CHARGE))
    )
    assert status == 200 and isinstance(answer, Response) and answer.in_reply_to == "req-1"
    (vo,) = answer.activities[0].entities[0].value_objects
    assert (vo.point, vo.value, vo.unit) == ("bess1.soc", 55.0, "PERCENT")


async def test_read_whole_entity_in_jsonld(service: AccessService) -> None:
    status, answer = await call(service, request(Method.READ, BESS), fmt=Format.JSONLD)
    assert status == 200 and isinstance(answer, Response)
    points = {vo.point for vo in answer.activities[0].entities[0].value_objects}
    assert {"bess1.p", "bess1.soc", "bess1.p_set"} <= points


async def test_a_read_costs_the_points_it_asks_for(
    service: AccessService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a site of 10,000 points a read of one DER must not build a value for every
    point (it did, twice: 20 reads a second saturated the gateway)."""
    built = 0
    original = fielddata.value_object

    def counted(*args: Any) -> ValueObject:
        nonlocal built
        built += 1
        return original(*args)

    await call(service, request(Method.READ, BESS))  # the first read may index the site
    monkeypatch.setattr(access, "value_object", counted)
    monkeypatch.setattr(fielddata, "value_object", counted)
    status, answer = await call(service, request(Method.READ, BESS))
    assert status == 200 and isinstance(answer, Response)
    assert built == len(answer.activities[0].entities[0].value_objects) < len(list(service.table))


async def test_read_unknown_entity_is_an_error(service: AccessService) -> None:
    status, answer = await call(service, request(Method.READ, der_iri(MG, "ghost")))
    assert status == 404 and isinstance(answer, ErrorMessage)
    assert "ghost" in answer.message and answer.in_reply_to == "req-1"


async def test_write_set_point_goes_through_the_controller(
    service: AccessService, controller: TableController, table: PointTable
) -> None:
    msg = request(
        Method.WRITE,
        BESS,
        ValueObject(quantity=QuantityKind.ACTIVE_POWER, unit="W", value=-20000.0),
    )
    status, answer = await call(service, msg)
    assert status == 200 and isinstance(answer, Response)
    assert [(c.point, c.value) for c in controller.sent] == [("bess1.p_set", -20.0)]
    assert table.latest("bess1.p_set").value == -20.0  # type: ignore[union-attr]


async def test_write_outside_limits_changes_nothing(
    service: AccessService, controller: TableController
) -> None:
    msg = request(
        Method.WRITE,
        BESS,
        ValueObject(quantity=QuantityKind.REACTIVE_POWER, unit="KiloVAR", value=5.0),
        ValueObject(quantity=QuantityKind.ACTIVE_POWER, unit="KiloW", value=500.0),
    )
    status, answer = await call(service, msg)
    assert status == 422 and isinstance(answer, ErrorMessage)
    assert "bess1.p_set" in answer.message and "above maximum" in answer.message
    assert controller.sent == []


async def test_write_to_read_only_point_is_forbidden(
    service: AccessService, controller: TableController
) -> None:
    msg = request(Method.WRITE, BESS, ValueObject(point="bess1.soc", unit="PERCENT", value=50.0))
    status, answer = await call(service, msg)
    assert status == 403 and isinstance(answer, ErrorMessage) and controller.sent == []


async def test_write_in_a_wrong_unit_is_refused(service: AccessService) -> None:
    msg = request(Method.WRITE, PV, ValueObject(point="pv1.limit", unit="KiloW", value=5.0))
    status, answer = await call(service, msg)
    assert status == 422 and isinstance(answer, ErrorMessage) and "PERCENT" in answer.message


async def test_device_refusal_is_reported(demo_config: LoadedConfig, table: PointTable) -> None:
    controller = TableController(table, refuse={"pv1.limit"})
    svc = AccessService(
        config=demo_config, table=table, write=controller.write, sender="urn:mgms:gw"
    )
    msg = request(Method.WRITE, PV, ValueObject(point="pv1.limit", unit="PERCENT", value=40.0))
    status, answer = await call(svc, msg)
    assert status == 502 and isinstance(answer, ErrorMessage) and "rejected" in answer.message


async def test_roles(service: AccessService) -> None:
    write = request(
        Method.WRITE, BESS, ValueObject(quantity=QuantityKind.ACTIVE_POWER, unit="KiloW", value=1.0)
    )
    status, _ = await call(service, write, role="observer")
    assert status == 403
    status, _ = await call(service, request(Method.READ, BESS), role=None)
    assert status == 403
    status, _ = await call(service, request(Method.READ, BESS), role="observer")
    assert status == 200


async def test_bad_body_gets_a_smartapi_error(service: AccessService) -> None:
    reply = await service.handle(b"@prefix broken", "text/turtle", "ams")
    assert reply.status == 400
    assert isinstance(decode(reply.body, reply.content_type), ErrorMessage)
    reply = await service.handle(b"<x/>", "application/xml", "ams")
    assert reply.status == 415


async def test_reserve_messages_belong_to_the_crp_endpoints(service: AccessService) -> None:
    for message in (examples.reserve_notification(), examples.reserve_activation()):
        status, answer = await call(service, message)
        assert status == 404 and isinstance(answer, ErrorMessage)
        assert answer.message.startswith("NotFound: ")
        status, _ = await call(service, message, role="observer")
        assert status == 403


async def test_aiohttp_route_on_loopback(service: AccessService) -> None:
    @web.middleware
    async def role_from_tls(request: web.Request, handler: web.Handler) -> web.StreamResponse:
        request[PEER_ROLE_KEY] = "ams"  # the northbound server derives it from the client cert
        return await handler(request)

    app = web.Application(middlewares=[role_from_tls])
    add_routes(app, service)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        body = encode(request(Method.READ, BESS, ValueObject(point="bess1.p")))
        resp = await client.post(
            ACCESS_PATH,
            data=body,
            headers={"Content-Type": "text/turtle", "Accept": "application/ld+json"},
        )
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/ld+json")
        answer = decode(await resp.read(), resp.headers["Content-Type"])
        assert isinstance(answer, Response)
        assert answer.activities[0].entities[0].value_objects[0].value == -12.5


def test_policy_defaults() -> None:
    assert "ams" in AccessPolicy().writers


class SlowOpener:
    """Parses like the service does without an opener, slowly, and notes how many
    requests it opened at the same time."""

    def __init__(self) -> None:
        self.active = 0
        self.most = 0
        self.last_encrypted = False

    def open(self, body: bytes, content_type: str | None) -> Graph:
        self.active += 1
        self.most = max(self.most, self.active)
        try:
            time.sleep(0.02)  # CPU-heavy parsing and signature checks
            return parse(body, content_type)
        finally:
            self.active -= 1


async def test_reads_leave_the_event_loop_free_and_open_one_at_a_time(
    service: AccessService,
) -> None:
    """Parsing and signing run off the event loop (control and acquisition keep their
    turn between reads), one request at a time (the opener's replay guard is not shared
    between threads)."""
    opener = SlowOpener()
    service = replace(service, opener=opener)
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    body = encode(request(Method.READ, BESS), Format.TURTLE)
    tick = asyncio.create_task(ticker())
    try:
        replies = await asyncio.gather(
            *(service.handle(body, Format.TURTLE.value, "ams") for _ in range(4))
        )
    finally:
        done.set()
        await tick
    assert [r.status for r in replies] == [200] * 4
    assert opener.most == 1
    assert ticks > 4 * 2  # the loop ran other tasks while each request was opened
