"""CEMS front end for fwsim: a building's energy management system serving its points as
JSON resources over HTTPS, from the shared microgrid physics.

Each mapped path answers GET with one JSON document holding every readable point of that
path at its pointer (raw values: the inverse of the point's scale and offset, as a device
would send them, through `fwsim.points.PointValues` like every front end: physics where the
point has a modelled role, otherwise moving values); a point made to fail (`mgms sim --fail`)
is left out (the gateway reports the member missing). A writable path accepts its template's
method: the values found at the writable points' pointers are written like any front end's
writes; a body holding none of them is a 400.

TLS comes from `options.simulator` (certificate and key; a client CA makes client
certificates mandatory); a device with a `token_file` gets 401 without that bearer token.
The Smart API form speaks the device's `profile`; with `simulator.signing` the CEMS signs
its answers and refuses (401) a request not signed by the gateway's key from its trust
file; with `simulator.push` (and the gateway's `push`) it notifies changed values.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import ssl
from typing import Any

from aiohttp import web
from jsonpointer import JsonPointerException

from drivers.base import to_engineering, to_raw
from drivers.cems import smartapi_form
from drivers.cems.notifier import Notifier
from drivers.cems.protocol import CemsOptions, RestAddress, SmartApiAddress
from drivers.cems.security import simulator_link
from drivers.cems.smartapi_form import SmartApiPoint
from fwsim.frontend import FrontEnd
from fwsim.physics import Microgrid
from fwsim.points import PointFault
from gateway.errors import SecurityError, SmartApiError
from gateway.mapping import Device, Point
from gateway.smartapi.messages import Request, Response

log = logging.getLogger(__name__)

#: the largest write body the simulated CEMS accepts
MAX_WRITE_BODY = 64 * 1024


def server_context(device: Device, options: CemsOptions) -> ssl.SSLContext:
    sim = options.simulator
    if sim is None:
        raise ValueError(
            f"device {device.id!r}: options.simulator (cert_file, key_file) is needed"
            " to serve it over HTTPS"
        )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(options.resolve(sim.cert_file)), str(options.resolve(sim.key_file)))
    if sim.client_ca_file is not None:
        ctx.load_verify_locations(cafile=str(options.resolve(sim.client_ca_file)))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class CemsFrontEnd(FrontEnd):
    def __init__(self, device: Device, grid: Microgrid, host: str, port: int) -> None:
        super().__init__(device, grid, host, port)
        options = device.typed_options
        assert isinstance(options, CemsOptions)
        self.options = options
        self._runner: web.AppRunner | None = None
        self._reads: dict[str, list[tuple[Point, RestAddress]]] = {}
        self._writes: dict[str, list[tuple[Point, RestAddress]]] = {}
        self._smartapi: list[SmartApiPoint] = []
        self._link = simulator_link(options, cems_sender(device))
        self._notifier: Notifier | None = None
        for point in device.points:
            address = device.address_of(point.id)
            if isinstance(address, SmartApiAddress):
                self._smartapi.append(SmartApiPoint(point, address))
                continue
            assert isinstance(address, RestAddress)
            if point.direction.readable:
                self._reads.setdefault(address.path, []).append((point, address))
            if point.direction.writable:
                self._writes.setdefault(address.path, []).append((point, address))

    async def start(self) -> None:
        ctx = server_context(self.device, self.options)
        app = web.Application(client_max_size=MAX_WRITE_BODY)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, ssl_context=ctx)
        await site.start()
        self._runner = runner
        if self.port == 0:
            self.port = int(runner.addresses[0][1])
        sim = self.options.simulator
        if self.options.push is not None and sim is not None and sim.push is not None:
            self._notifier = Notifier(
                self.device,
                self.options,
                self.options.push,
                sim.push,
                self._smartapi,
                self._link,
                cems_sender(self.device),
            )
            await self._notifier.start()

    @property
    def notifier(self) -> Notifier | None:
        return self._notifier

    async def refresh(self) -> None:
        """Every GET renders the physics' current values; with push, changed values are
        notified (notifier.py)."""
        if self._notifier is not None:
            await self._notifier.check(lambda p: self._value_of(p.point))

    async def stop(self) -> None:
        notifier, self._notifier = self._notifier, None
        if notifier is not None:
            await notifier.stop()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        token = self.options.token
        given = request.headers.get("Authorization", "")
        if token is not None and not hmac.compare_digest(given, f"Bearer {token}"):
            return web.json_response({"error": "bearer token required"}, status=401)
        path = request.rel_url.path_qs
        if self._smartapi and path == self.options.smartapi_path and request.method == "POST":
            return await self._smartapi_answer(request)
        if request.method == "GET" and path in self._reads:
            return web.json_response(self._document(path))
        if path in self._writes:
            if request.method != self.options.template(path).method.value:
                return web.json_response({"error": "method not allowed"}, status=405)
            return await self._write(path, request)
        return web.json_response({"error": f"no resource {path}"}, status=404)

    async def _smartapi_answer(self, request: web.Request) -> web.StreamResponse:
        try:
            message = self._link.decode(await request.read(), request.headers.get("Content-Type"))
        except SecurityError as exc:
            return web.Response(status=401, text=f"refused: {exc}")
        except (SmartApiError, ValueError, web.HTTPRequestEntityTooLarge) as exc:
            return web.Response(status=400, text=f"not a Smart API message: {exc}")
        if not isinstance(message, Request):
            return web.Response(status=400, text="expected a Smart API Request")
        reply = smartapi_form.answer(
            message, self._smartapi, self._value_of, self._apply, cems_sender(self.device)
        )
        status = 200 if isinstance(reply, Response) else reply.code
        body, content_type = self._link.encode(reply)
        return web.Response(status=status, body=body, headers={"Content-Type": content_type})

    def _value_of(self, point: Point) -> float | None:
        try:
            return float(to_raw(point, self.values.value(point)))
        except PointFault:
            return None

    def _apply(self, point: Point, raw: float) -> str | None:
        value = to_engineering(point, raw)
        assert isinstance(value, int | float)
        try:
            self.values.write(point, float(value))
        except PointFault as exc:
            return str(exc)
        log.info("cems %s: %s set by Smart API Write", self.device.id, point.id)
        return None

    def _document(self, path: str) -> dict[str, Any]:
        document: dict[str, Any] = {}
        for point, address in self._reads[path]:
            try:
                value = self.values.value(point)
            except PointFault:
                continue
            address.put(document, to_raw(point, value))
        return document

    async def _write(self, path: str, request: web.Request) -> web.StreamResponse:
        try:
            body = json.loads(await request.read())
        except (ValueError, web.HTTPRequestEntityTooLarge):
            return web.json_response({"error": "body is not JSON"}, status=400)
        applied: list[str] = []
        for point, address in self._writes[path]:
            try:
                raw = address.json_pointer.resolve(body)
            except JsonPointerException:
                continue
            if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
                return web.json_response({"error": f"{address}: not a number"}, status=400)
            value = to_engineering(point, raw)
            assert isinstance(value, int | float)
            try:
                self.values.write(point, float(value))
            except PointFault as exc:
                return web.json_response({"error": str(exc)}, status=422)
            applied.append(point.id)
        if not applied:
            return web.json_response({"error": "no writable value in the body"}, status=400)
        log.info("cems %s: %s set by %s %s", self.device.id, applied, request.method, path)
        return web.json_response({"applied": applied})


def cems_sender(device: Device) -> str:
    """The simulated CEMS's Smart API identity: `peer_sender`, else one made of its id."""
    options = device.typed_options
    assert isinstance(options, CemsOptions)
    return options.peer_sender or f"https://cems.example/{device.id}"
