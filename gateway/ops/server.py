"""The operations listener: /healthz, /readyz, /metrics, /api/status and the status page
(`?device=<id>`, `?q=<text>`, `?problems=1` narrow its list of points, and /api/status's).

On its own address, loopback by default. Off loopback every route but /healthz needs the
operator's bearer token, compared in constant time. Everything is read-only except
`POST /api/points/<id>` (gateway.ops.points_api), which needs the token even on loopback.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import stat
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.config import OpsConfig
from gateway.errors import ServiceError
from gateway.ops import status_page
from gateway.ops.metrics import CONTENT_TYPE
from gateway.ops.points_api import PointsApi
from gateway.ops.status import as_json, snapshot

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz"})
HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
}
MIN_TOKEN_LEN = 16


def read_token(path: Path) -> str:
    """The operator token; refuses a file others can read or a token too short to guess."""
    try:
        mode = path.stat().st_mode
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ServiceError(f"ops.operator_token_file {path}: cannot read: {exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ServiceError(
            f"ops.operator_token_file {path}: mode {stat.S_IMODE(mode):04o} lets others read "
            "it; chmod 0600"
        )
    if len(token) < MIN_TOKEN_LEN:
        raise ServiceError(
            f"ops.operator_token_file {path}: token shorter than {MIN_TOKEN_LEN} characters"
        )
    return token


class OpsServer:
    """`async with OpsServer(gw, cfg) as ops:` serves until the block ends; `ops.port`."""

    def __init__(self, gw: Gateway, cfg: OpsConfig) -> None:
        self.gw = gw
        self.cfg = cfg
        self.port: int | None = None
        self._token: str | None = None
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/api/status", self._status_json)
        app.router.add_get("/", self._page)
        PointsApi(self.gw, writes_allowed=self._token is not None).add_routes(app)
        return app

    async def __aenter__(self) -> OpsServer:
        if not self.cfg.enabled:
            return self
        if self.cfg.operator_token_file is not None:
            self._token = read_token(self.cfg.operator_token_file)
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.cfg.listen, self.cfg.port, reuse_address=True)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ServiceError(
                f"ops listener {self.cfg.listen}:{self.cfg.port}: cannot bind: {exc}"
            ) from exc
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info(
            "ops listener on http://%s:%d/",
            self.cfg.listen,
            self.port,
            extra={"auth": "token" if self._token else "loopback"},
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._token is not None and request.path not in OPEN_PATHS:
            given = request.headers.get("Authorization", "")
            scheme, _, credential = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                credential.strip().encode(), self._token.encode()
            ):
                log.warning(
                    "ops listener: refused unauthenticated request",
                    extra={"path": request.path, "peer": request.remote},
                )
                raise web.HTTPUnauthorized(
                    headers={"WWW-Authenticate": 'Bearer realm="mgms"'},
                    text="operator token needed",
                )
        response: web.StreamResponse = await handler(request)
        response.headers.update(HEADERS)
        return response

    async def _healthz(self, request: web.Request) -> web.Response:
        report = self.gw.health.live()
        return web.json_response(report.as_json(), status=200 if report.ok else 503)

    async def _readyz(self, request: web.Request) -> web.Response:
        report = self.gw.health.ready()
        return web.json_response(report.as_json(), status=200 if report.ok else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.gw.metrics.render().encode(), headers={"Content-Type": CONTENT_TYPE}
        )

    async def _status_json(self, request: web.Request) -> web.Response:
        snap = snapshot(self.gw)
        query = status_page.PointQuery.of(request.query)  # the page's filters narrow it too
        if query.given:
            snap = dataclasses.replace(snap, points=[p for p in snap.points if query.matches(p)])
        return web.json_response(as_json(snap))

    async def _page(self, request: web.Request) -> web.Response:
        html = status_page.render(snapshot(self.gw), status_page.PointQuery.of(request.query))
        return web.Response(text=html, content_type="text/html", charset="utf-8")
