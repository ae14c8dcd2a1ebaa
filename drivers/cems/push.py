"""Optional push: the gateway's HTTPS endpoint for a CEMS's Smart API Notifications.

A CEMS that notifies POSTs a Notification (Turtle or JSON-LD) to `options.push.path`; the
value objects it carries for mapped Smart API points become readings at once, without
waiting for the next poll. The endpoint requires a client certificate from
`client_ca_file` (the CEMS), bounds the body by `max_body`, answers 403 with the reason to
a message from a sender other than `peer_sender`, one replayed (an id seen before, or a
generatedAt outside the replay window) or, with `signing`, one not signed by a key the
trust file lists for that sender, and 400 with the reason to anything that is not a
Notification. Nothing refused delivers a reading. It runs while the driver is connected.
"""

from __future__ import annotations

import logging
import ssl

from aiohttp import web

from drivers.base import ReadingSink
from drivers.cems import smartapi_form
from drivers.cems.protocol import CemsOptions, PushEndpoint
from drivers.cems.security import SmartApiLink
from drivers.cems.smartapi_form import SmartApiPoint
from gateway.errors import LinkError, SecurityError, SmartApiError
from gateway.mapping import Device
from gateway.smartapi.messages import Notification

log = logging.getLogger(__name__)


def _server_context(device: Device, options: CemsOptions, push: PushEndpoint) -> ssl.SSLContext:
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(
            str(options.resolve(push.cert_file)), str(options.resolve(push.key_file))
        )
        ctx.load_verify_locations(cafile=str(options.resolve(push.client_ca_file)))
    except (OSError, ssl.SSLError) as exc:
        raise LinkError(device.id, f"push endpoint TLS files unusable: {exc}") from None
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class PushReceiver:
    def __init__(
        self,
        device: Device,
        options: CemsOptions,
        push: PushEndpoint,
        points: list[SmartApiPoint],
        sink: ReadingSink,
        link: SmartApiLink,
    ) -> None:
        self.device = device
        self.options = options
        self.push = push
        self._points = points
        self._sink = sink
        self._link = link
        self._runner: web.AppRunner | None = None
        #: readings delivered since start
        self.delivered = 0

    async def start(self) -> None:
        ctx = _server_context(self.device, self.options, self.push)
        app = web.Application(client_max_size=self.options.max_body)
        app.router.add_post(self.push.path, self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.push.host, self.push.port, ssl_context=ctx)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            where = f"{self.push.host}:{self.push.port}"
            raise LinkError(self.device.id, f"push endpoint {where}: {exc}") from None
        self._runner = runner

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            message = self._link.decode(await request.read(), request.headers.get("Content-Type"))
        except web.HTTPRequestEntityTooLarge:
            return web.Response(status=413, text=f"larger than {self.options.max_body} bytes")
        except SecurityError as exc:
            log.warning("cems %s: push refused: %s", self.device.id, exc)
            return web.Response(status=403, text=f"refused: {exc}")
        except (SmartApiError, ValueError) as exc:
            return web.Response(status=400, text=f"not a Smart API message: {exc}")
        if not isinstance(message, Notification):
            kind = type(message).__name__
            return web.Response(status=400, text=f"expected a Notification, not a {kind}")
        readings = smartapi_form.notified(message, self._points)
        for reading in readings:
            self._sink(reading)
        self.delivered += len(readings)
        log.debug("cems %s: %d readings pushed", self.device.id, len(readings))
        return web.Response(status=204)
