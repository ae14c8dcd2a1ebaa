"""A CEMS that misbehaves: garbage, HTML, a 5xx, a redirect to another host, a huge or an
endless body, a slow body, a value of the wrong kind, a certificate that does not verify;
in the Smart API form garbage, HTML, a reply to another request and a Smart API Error.
Each resource's points come back invalid with a reason naming what happened, the healthy
resource of the same poll stays good, the poll ends within the driver's read budget, and
nothing raises but a dead link."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web

from drivers.cems.driver import CemsDriver
from gateway.app import Gateway
from gateway.errors import LinkError
from gateway.loader import load_config
from gateway.mapping import Device
from gateway.model import Command, CommandStatus, QualityFlag
from gateway.smartapi import codec
from gateway.smartapi.messages import ErrorMessage, Response, new_message_id
from tests.support.cems import TOKEN, write_site
from tests.support.pki import PkiFiles
from tests.support.waiting import until

pytestmark = pytest.mark.integration

MAX_BODY = 4096
CHUNK = b"[" * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _good(request: web.Request) -> web.StreamResponse:
    return web.json_response({"v": 1.5})


async def _garbage(request: web.Request) -> web.StreamResponse:
    return web.Response(body=b"\x00\xff{not json", content_type="application/json")


async def _html(request: web.Request) -> web.StreamResponse:
    return web.Response(text="<html><body>Login</body></html>", content_type="text/html")


async def _error(request: web.Request) -> web.StreamResponse:
    return web.Response(status=503, text="busy")


async def _redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("https://evil.example/steal")


async def _huge(request: web.Request) -> web.StreamResponse:
    return web.Response(body=b"1" * (MAX_BODY * 4), content_type="application/json")


async def _endless(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    try:
        while True:  # until the client hangs up
            await response.write(CHUNK)
    except (ConnectionError, RuntimeError):
        pass
    return response


async def _slow(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = 100
    await response.prepare(request)
    await response.write(b'{"v": ')
    for _ in range(50):  # trickles nothing more for 5 s, or until the client hangs up
        if request.transport is None or request.transport.is_closing():
            break
        await asyncio.sleep(0.1)
    return response


async def _string(request: web.Request) -> web.StreamResponse:
    return web.json_response({"v": "1.5 kW"})


async def _missing(request: web.Request) -> web.StreamResponse:
    return web.json_response({"w": 1})


#: path -> (handler, what the point's detail must say)
CASES: dict[str, tuple[Handler, str]] = {
    "/good": (_good, ""),
    "/garbage": (_garbage, "answer is not JSON"),
    "/html": (_html, "answer is text/html, not application/json"),
    "/error": (_error, "HTTP 503"),
    "/redirect": (_redirect, "redirect (302) to https://evil.example/steal not followed"),
    "/huge": (_huge, f"answer larger than {MAX_BODY} bytes"),
    "/endless": (_endless, f"answer larger than {MAX_BODY} bytes"),
    "/slow": (_slow, "GET /slow: no complete answer within 0.5 s"),
    "/string": (_string, "/string#/v: value is str, not a number"),
    "/missing": (_missing, "/missing#/v: no such member in the answer"),
}


def _points() -> list[dict[str, object]]:
    return [{"id": f"p.{path[1:]}", "address": f"{path}#/v", "unit": "KiloW"} for path in CASES]


def _hostile_app() -> web.Application:
    app = web.Application()
    for path, (handler, _) in CASES.items():
        app.router.add_get(path, handler)
    return app


async def _serve(app: web.Application, port: int, cert: tuple[Path, Path]) -> web.AppRunner:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
    return runner


def _days_ago(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


def _hostile_options(pki: PkiFiles, directory: Path) -> dict[str, object]:
    """The CA and the token; no client certificate; a small body limit."""
    (directory / "cems.token").write_text(TOKEN)
    return {"ca_file": str(pki.ca), "token_file": "cems.token", "max_body": MAX_BODY}


def _device(tmp_path: Path) -> tuple[Device, PkiFiles, Path]:
    base, pki = write_site(tmp_path, points=_points(), options=_hostile_options, timeout=0.5)
    return load_config(base).devices[0], pki, base


@pytest.fixture
async def hostile(tmp_path: Path) -> AsyncIterator[tuple[Device, PkiFiles]]:
    device, pki, _ = _device(tmp_path)
    assert device.connection.port is not None
    runner = await _serve(_hostile_app(), device.connection.port, pki.issue("hostile", "cems"))
    try:
        yield device, pki
    finally:
        await runner.cleanup()


async def test_each_bad_answer_invalidates_its_points_with_a_reason(
    hostile: tuple[Device, PkiFiles],
) -> None:
    device, _ = hostile
    driver = CemsDriver(device)
    await driver.connect()
    try:
        points = list(device.points)
        async with asyncio.timeout(driver.read_budget(points)):
            readings = await driver.read(points)
        by_id = {r.point: r for r in readings}
        assert by_id["p.good"].quality.good and by_id["p.good"].value == 1.5
        for path, (_, reason) in CASES.items():
            if path == "/good":
                continue
            reading = by_id[f"p.{path[1:]}"]
            assert not reading.quality.good, path
            assert reading.value is None
            assert reason in reading.detail, (path, reading.detail)
        assert QualityFlag.COMM_FAILURE in by_id["p.slow"].quality.flags
        # the link survived it all: the next poll reads the good resource again
        (again,) = await driver.read([device.points[0]])
        assert again.quality.good
    finally:
        await driver.close()


async def test_a_server_of_another_ca_or_for_another_host_is_a_dead_link(
    tmp_path: Path,
) -> None:
    device, pki, _ = _device(tmp_path)
    assert device.connection.port is not None
    wrong = {
        "another CA": pki.stranger,
        "another host": pki.issue("elsewhere", "cems", hosts=["cems.elsewhere.example"]),
        "expired": pki.issue("expired", "cems", not_before=_days_ago(2), days=-1),
    }
    for what, cert in wrong.items():
        runner = await _serve(_hostile_app(), device.connection.port, cert)
        try:
            driver = CemsDriver(device)
            with pytest.raises(LinkError, match="certificate not accepted") as caught:
                await driver.connect()
            assert "building2-cems" in str(caught.value), what
            assert not driver.connected
        finally:
            await runner.cleanup()


async def test_the_gateway_keeps_polling_a_hostile_cems(tmp_path: Path) -> None:
    """Through the whole gateway: the session stays up, bad points are invalid with their
    reasons in the point table, the good one is good."""
    device, pki, base = _device(tmp_path)
    assert device.connection.port is not None
    runner = await _serve(_hostile_app(), device.connection.port, pki.issue("hostile", "cems"))
    config = load_config(base)
    config.gateway.state_dir = tmp_path / "state"
    try:
        async with Gateway(config) as gw:
            assert await gw.wait_connected(5)
            await until(lambda: (r := gw.table.latest("p.html")) is not None and not r.quality.good)
            good = gw.table.latest("p.good")
            assert good is not None and good.quality.good
            html = gw.table.latest("p.html")
            assert html is not None and "text/html" in html.detail
            assert gw.sessions[device.id].up
    finally:
        await runner.cleanup()


SMARTAPI_PATH = "/smartapi/v1.0e1.0/access/"


async def _turtle_garbage(request: web.Request) -> web.StreamResponse:
    return web.Response(text="@prefix : <oops . :a :b", content_type="text/turtle")


async def _reply_to_another(request: web.Request) -> web.StreamResponse:
    other = Response(
        id=new_message_id(),
        sender="https://cems.example/x",
        generated_at=datetime.now(UTC),
        in_reply_to="someone-else",
    )
    return web.Response(body=codec.encode(other), content_type="text/turtle")


async def _smartapi_error(request: web.Request) -> web.StreamResponse:
    error = ErrorMessage(
        id=new_message_id(),
        sender="https://cems.example/x",
        generated_at=datetime.now(UTC),
        code=503,
        message="heat pump controller restarting",
    )
    return web.Response(status=503, body=codec.encode(error), content_type="text/turtle")


@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        (_turtle_garbage, "answer is not a Smart API message"),
        (_html, "not a Smart API message"),
        (_reply_to_another, "answer replies to someone-else, not to"),
        (_smartapi_error, "Smart API error 503: heat pump controller restarting"),
    ],
    ids=["garbage", "html", "other-request", "error"],
)
async def test_bad_smartapi_answers_invalidate_the_entity_points(
    tmp_path: Path, handler: Handler, reason: str
) -> None:
    points = [
        {"id": "hp.p", "address": "<https://cems.example/hp> ActivePower", "unit": "KiloW"},
        {"id": "hp.q", "address": "<https://cems.example/hp> ReactivePower", "unit": "KiloVAR"},
    ]
    base, pki = write_site(tmp_path, points=points, options=_hostile_options, timeout=0.5)
    device = load_config(base).devices[0]
    assert device.connection.port is not None
    app = web.Application()
    app.router.add_post(SMARTAPI_PATH, handler)
    app.router.add_get(SMARTAPI_PATH, _good)  # the connect probe
    runner = await _serve(app, device.connection.port, pki.issue("hostile", "cems"))
    driver = CemsDriver(device)
    try:
        await driver.connect()
        readings = await driver.read(list(device.points))
        assert [r.quality.good for r in readings] == [False, False]
        assert all(reason in r.detail for r in readings), readings[0].detail
    finally:
        await driver.close()
        await runner.cleanup()


async def _slow_write(request: web.Request) -> web.StreamResponse:
    for _ in range(20):  # answers after 2 s, or not at all once the client hung up
        if request.transport is None or request.transport.is_closing():
            break
        await asyncio.sleep(0.1)
    return web.json_response({})


async def test_a_write_answered_late_ends_at_the_command_deadline(tmp_path: Path) -> None:
    points = [{"id": "w", "address": "/w#/v", "unit": "KiloW", "direction": "write"}]
    base, pki = write_site(tmp_path, points=points, options=_hostile_options, timeout=1.5)
    device = load_config(base).devices[0]
    assert device.connection.port is not None
    app = web.Application()
    app.router.add_put("/w", _slow_write)
    app.router.add_get("/w", _good)  # the connect probe
    runner = await _serve(app, device.connection.port, pki.issue("hostile", "cems"))
    driver = CemsDriver(device)
    try:
        await driver.connect()
        deadline = datetime.now(UTC) + timedelta(seconds=0.3)
        result = await driver.write(device.points[0], Command("w", 1.0, deadline=deadline))
        assert result.status is CommandStatus.TIMEOUT
        assert "no answer before the command's deadline" in result.detail
        # without a deadline, the device timeout (1.5 s) ends it
        result = await driver.write(device.points[0], Command("w", 1.0))
        assert result.status is CommandStatus.TIMEOUT
        assert "PUT /w: no complete answer within 1.5 s" in result.detail
    finally:
        await driver.close()
        await runner.cleanup()
