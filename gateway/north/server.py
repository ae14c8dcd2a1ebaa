"""The gateway's HTTPS server for the AMS (aiohttp over mutual TLS).

    POST /smartapi/v1.0e1.0/notification/   Reserve Notification   (role ams)
    POST /smartapi/v1.0e1.0/activation/     Reserve Activation     (role ams)
    POST /smartapi/v1.0e1.0/access/         Smart API access       (roles of `access_roles`)

Before a body reaches the inbound pipeline the server has established who is calling: the
TLS handshake verified the client certificate against our CAs, and the allow-list maps it
to a role (refused: 403). It then refuses a body over the size limit (413, read no
further), a media type the codec does not read (415) and a body that does not arrive in
time (408). Every refusal is a Smart API Error naming the reason (docs/northbound.md).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Protocol, Self

from aiohttp import web

from gateway.errors import InboundRejected, Reason
from gateway.listeners import Connection, ConnectionGuard, ListenerLimits, Phase
from gateway.north.config import Role, ServerConfig
from gateway.north.tls import AllowList, Peer, PeerIdentity, describe_tls_error
from gateway.north.wire import ACCESS_PATH, Answer, Channel, Inbound, media_type

log = logging.getLogger(__name__)


class AccessReply(Protocol):
    @property
    def status(self) -> int: ...
    @property
    def body(self) -> bytes: ...
    @property
    def content_type(self) -> str: ...


class AccessCore(Protocol):
    """The Smart API access endpoint without its transport
    (gateway.smartapi.access.AccessService)."""

    async def handle(
        self, body: bytes, content_type: str | None, peer_role: str | None, accept: str | None
    ) -> AccessReply: ...


#: what the gateway serves: the AMS's notifications and activations
GATEWAY_CHANNELS: Mapping[Channel, Role] = {
    Channel.NOTIFICATION: Role.AMS,
    Channel.ACTIVATION: Role.AMS,
}


def _respond(answer: Answer) -> web.Response:
    return web.Response(status=answer.status, body=answer.body, content_type=answer.content_type)


def _refusal(answer: Answer) -> web.Response:
    """A refusal before the body was read (in full): the connection closes after it, and
    the answer says so (`Connection: close`), so a keep-alive client does not send its next
    request on a connection that is going away."""
    response = _respond(answer)
    response.force_close()
    return response


class _Routes:
    def __init__(
        self,
        inbound: Inbound,
        allow: AllowList,
        config: ServerConfig,
        access: AccessCore | None,
        access_roles: Collection[Role],
    ) -> None:
        self._inbound = inbound
        self._allow = allow
        self._config = config
        self._access = access
        self._access_roles = frozenset(access_roles)

    def _peer(self, request: web.Request) -> Peer:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        identity = PeerIdentity.from_ssl(ssl_object)
        peer = self._allow.admit(identity)
        if peer is None:
            who = str(identity) if identity else "a client without a certificate"
            raise InboundRejected(403, Reason.PEER_NOT_ALLOWED, f"{who} is not in the allow-list")
        return peer

    async def _body(self, request: web.Request, *, check_type: bool = True) -> tuple[bytes, str]:
        limit = self._config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise InboundRejected(
                413, Reason.TOO_LARGE, f"body of {request.content_length} bytes exceeds {limit}"
            )
        ctype = media_type(request.headers.get("Content-Type"))
        if check_type and ctype not in self._inbound.accepted_types:
            accepted = ", ".join(sorted(self._inbound.accepted_types))
            raise InboundRejected(
                415, Reason.UNSUPPORTED_MEDIA_TYPE, f"{ctype or 'no type'}; accepted: {accepted}"
            )
        try:
            async with asyncio.timeout(self._config.request_timeout_s):
                body = await request.read()  # up to the app's client_max_size (= limit)
        except TimeoutError:
            raise InboundRejected(408, Reason.TIMEOUT, "the request body did not arrive") from None
        except web.HTTPRequestEntityTooLarge:
            raise InboundRejected(413, Reason.TOO_LARGE, f"body exceeds {limit} bytes") from None
        return body, request.headers.get("Content-Type", "")

    def channel_handler(
        self, channel: Channel, required: Role
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            ctype = request.headers.get("Content-Type")
            try:
                peer = self._peer(request)
                if peer.role is not required:
                    raise InboundRejected(
                        403,
                        Reason.ROLE_NOT_ALLOWED,
                        f"{peer} may not send {channel.value}s (needs role {required.value})",
                    )
                body, ctype = await self._body(request)
            except InboundRejected as exc:
                log.warning("refused %s from %s: %s", channel.value, request.remote, exc)
                return _refusal(self._inbound.refuse(exc, ctype))
            answer = await self._inbound.handle(channel, body, ctype, peer)
            return _respond(answer)

        return handle

    async def access(self, request: web.Request) -> web.Response:
        assert self._access is not None
        try:
            peer = self._peer(request)
            if peer.role not in self._access_roles:
                raise InboundRejected(
                    403, Reason.ROLE_NOT_ALLOWED, f"{peer} may not use the access endpoint"
                )
            # the access core reads its own media types (and says which it does not)
            body, ctype = await self._body(request, check_type=False)
        except InboundRejected as exc:
            log.warning("refused access from %s: %s", request.remote, exc)
            return _refusal(self._inbound.refuse(exc, request.headers.get("Content-Type")))
        reply = await self._access.handle(
            body, ctype or None, peer.role.value, request.headers.get("Accept")
        )
        return web.Response(
            status=reply.status, body=reply.body, headers={"Content-Type": reply.content_type}
        )

    async def not_allowed(self, request: web.Request) -> web.Response:
        exc = InboundRejected(405, Reason.METHOD_NOT_ALLOWED, f"{request.method} {request.path}")
        return _refusal(self._inbound.refuse(exc))


def build_app(
    inbound: Inbound,
    allow: AllowList,
    config: ServerConfig,
    *,
    access: AccessCore | None = None,
    access_roles: Collection[Role] = (Role.AMS, Role.OPERATOR),
    channels: Mapping[Channel, Role] = GATEWAY_CHANNELS,
) -> web.Application:
    """The aiohttp application: one POST endpoint per channel, open to the given role;
    `access` handles the Smart API access endpoint with the admitted peer (its role
    decides what it may read or write)."""
    # request.read() stops at this size; the handlers turn that into a Smart API Error
    app = web.Application(client_max_size=config.max_body_bytes)
    routes = _Routes(inbound, allow, config, access, access_roles)
    for channel, role in channels.items():
        app.router.add_post(channel.path, routes.channel_handler(channel, role))
        app.router.add_route("*", channel.path, routes.not_allowed)
    if access is not None:
        app.router.add_post(ACCESS_PATH, routes.access)
    return app


class _TlsGate(asyncio.Protocol):
    """Takes a new TCP connection, does the TLS handshake and hands the connection to
    aiohttp. asyncio's own TLS server drops a failed handshake silently; here it is logged
    with its cause (expired or untrusted client certificate, old TLS version, plain HTTP).
    The listener's ConnectionGuard admits it first (gateway.listeners: caps and timeouts)."""

    def __init__(self, server: HttpsServer) -> None:
        self._server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        conn = self._server.guard.admit(transport, Phase.HANDSHAKE)
        if conn is None:
            return  # full of connections being served: refused
        transport.pause_reading()  # the ClientHello is for the TLS layer, not for us
        self._server._handshake(transport, conn)


class HttpsServer:
    """The app served over TLS on `config.host:config.port` (port 0: a free one, see `port`)."""

    def __init__(self, app: web.Application, config: ServerConfig, ssl_ctx: ssl.SSLContext):
        self._app = app
        self._config = config
        self._ssl = ssl_ctx
        self.guard = ConnectionGuard("north", north_limits(config))
        app.middlewares.append(self.guard.middleware)
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._handshakes: set[asyncio.Task[None]] = set()
        self.port = config.port

    async def __aenter__(self) -> Self:
        # lingering_time=0: a refused request's unread body is not waited for; the
        # connection is closed instead (a slow or oversize sender cannot hold it open)
        runner = web.AppRunner(
            self._app,
            access_log=None,
            handle_signals=False,
            lingering_time=0,
            keepalive_timeout=self._config.idle_timeout_s,
        )
        await runner.setup()
        self._runner = runner
        try:
            await self.guard.__aenter__()
            self._listener = await asyncio.get_running_loop().create_server(
                lambda: _TlsGate(self), self._config.host, self._config.port
            )
        except BaseException:
            await self.__aexit__()
            raise
        self.port = int(self._listener.sockets[0].getsockname()[1])
        log.info("northbound HTTPS on %s:%d", self._config.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for task in list(self._handshakes):
            task.cancel()
        await asyncio.gather(*self._handshakes, return_exceptions=True)
        await self.guard.__aexit__()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _handshake(self, transport: asyncio.Transport, conn: Connection) -> None:
        task = asyncio.get_running_loop().create_task(self._upgrade(transport, conn))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _upgrade(self, transport: asyncio.Transport, conn: Connection) -> None:
        assert self._runner is not None and self._runner.server is not None
        peer = transport.get_extra_info("peername")
        where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        protocol = self.guard.protocol(conn, self._runner.server())
        try:
            tls = await asyncio.get_running_loop().start_tls(
                transport,
                protocol,
                self._ssl,
                server_side=True,
                ssl_handshake_timeout=self._config.request_timeout_s,
            )
        except (OSError, TimeoutError) as exc:
            self.guard.closed(conn)
            transport.abort()
            if isinstance(exc, ssl.SSLError):
                cause = describe_tls_error(exc, "the client")
            elif isinstance(exc, TimeoutError):
                cause = f"no TLS handshake within {self._config.request_timeout_s:g} s"
            else:
                # a peer that hangs up (a port probe, a client shutting down) is no refusal
                log.info("TLS handshake from %s ended: the peer closed the connection", where)
                return
            log.warning("TLS handshake from %s failed: %s", where, cause)
            return
        if tls is None:  # the transport closed meanwhile
            self.guard.closed(conn)
            transport.abort()
            return
        identity = PeerIdentity.from_ssl(tls.get_extra_info("ssl_object"))
        if not self.guard.identified(conn, identity.sha256 if identity else "no certificate"):
            return  # this certificate's connections are all being served: refused
        protocol.connection_made(tls)


def north_limits(config: ServerConfig) -> ListenerLimits:
    return ListenerLimits(
        header_timeout_s=config.header_timeout_s,
        idle_timeout_s=config.idle_timeout_s,
        max_connections=config.max_connections,
        max_per_peer=config.max_connections_per_peer,
    )
