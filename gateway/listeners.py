"""Connection limits for the gateway's listeners (north HTTPS, ops): slow or idle clients
cannot hold sockets, and a flood on one listener cannot take the file descriptors another
needs.

aiohttp's server has no header timeout: a client that sends its request headers a byte at
a time keeps its connection (and a file descriptor) for as long as it likes. The
`ConnectionGuard` sits between the transport and aiohttp's protocol and knows each
connection's phase:

    handshake   TLS not finished (asyncio's ssl_handshake_timeout ends it)
    waiting     ready for a request: idle until its first byte (`idle_timeout_s`), then
                its headers must be complete within `header_timeout_s`
    busy        headers complete: the handler runs (the body has its own request timeout)

One reaper task closes connections past their deadline. At `max_connections` (counted
from the TCP accept) a new connection drops the connection that has waited longest
without being served; with none to drop it is refused. After the TLS handshake the same
holds per client certificate (`max_per_peer`). So a listener never holds more than its cap
in sockets, and the oldest idle connections go first, not the newest (a legitimate client
that just connected). Drops and timeouts are counted and logged as one summary line per
reap period, not one line per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import resource
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

_HEADERS_END = b"\r\n\r\n"


@dataclass(frozen=True)
class ListenerLimits:
    header_timeout_s: float
    idle_timeout_s: float
    max_connections: int
    #: connections one client certificate may hold (None: no per-peer cap)
    max_per_peer: int | None = None


class Phase(enum.Enum):
    HANDSHAKE = "handshake"
    WAITING = "waiting"
    BUSY = "busy"


@dataclass(eq=False)
class Connection:
    """One accepted connection. `raw` is the TCP transport (closing it frees the socket)."""

    raw: asyncio.BaseTransport
    phase: Phase
    since: float
    first_byte: float | None = None
    peer: str | None = None
    app_transport: asyncio.BaseTransport | None = None
    tail: bytes = b""

    def deadline(self, limits: ListenerLimits) -> float | None:
        if self.phase is not Phase.WAITING:
            return None
        if self.first_byte is not None:
            return self.first_byte + limits.header_timeout_s
        return self.since + limits.idle_timeout_s


@dataclass
class ConnectionGuard:
    """The limits of one listener; `async with guard:` runs its reaper."""

    name: str
    limits: ListenerLimits
    _conns: dict[asyncio.BaseTransport, Connection] = field(default_factory=dict)
    _by_app: dict[asyncio.BaseTransport, Connection] = field(default_factory=dict)
    #: why connections were closed or refused, since start (`header-timeout`,
    #: `idle-timeout`, `dropped-for-new`, `refused-at-cap`, `peer-cap`)
    counts: Counter[str] = field(default_factory=Counter)
    _reported: Counter[str] = field(default_factory=Counter)
    _reaper: asyncio.Task[None] | None = None

    @property
    def open(self) -> int:
        return len(self._conns)

    async def __aenter__(self) -> ConnectionGuard:
        self._reaper = asyncio.get_running_loop().create_task(
            self._reap_forever(), name=f"{self.name}-reaper"
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None

    # -- admission ----------------------------------------------------------------------------

    def admit(self, raw: asyncio.BaseTransport, phase: Phase) -> Connection | None:
        """A new TCP connection: registered, or refused (closed) when the listener is full
        and nothing can be dropped for it."""
        now = _now()
        if len(self._conns) >= self.limits.max_connections:
            victim = self._oldest_idle(self._conns.values())
            if victim is None:
                self._close(raw, "refused-at-cap")
                return None
            self._drop(victim, "dropped-for-new")
        conn = Connection(raw, phase, now)
        self._conns[raw] = conn
        return conn

    def identified(self, conn: Connection, peer: str) -> bool:
        """The TLS handshake named the client; False (and closed) when its certificate
        already holds `max_per_peer` connections that are all being served."""
        conn.peer = peer
        cap = self.limits.max_per_peer
        if cap is not None:
            same = [c for c in self._conns.values() if c.peer == peer and c is not conn]
            if len(same) >= cap:
                victim = self._oldest_idle(same)
                if victim is None:
                    self._drop(conn, "peer-cap")
                    return False
                self._drop(victim, "peer-cap")
        return True

    def attach(self, conn: Connection, app_transport: asyncio.BaseTransport) -> None:
        """The transport the HTTP protocol writes to (the TLS one, or the TCP one)."""
        conn.app_transport = app_transport
        if conn.phase is Phase.HANDSHAKE:  # (its first request may be complete already)
            conn.phase = Phase.WAITING
            conn.since = _now()
        self._by_app[app_transport] = conn

    def closed(self, conn: Connection) -> None:
        self._conns.pop(conn.raw, None)
        if conn.app_transport is not None:
            self._by_app.pop(conn.app_transport, None)

    def protocol(self, conn: Connection, inner: asyncio.Protocol) -> asyncio.Protocol:
        return _Tracked(self, conn, inner)

    def plain_factory(self, make: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """For `loop.create_server` without TLS: each connection admitted and tracked."""

        def factory() -> asyncio.Protocol:
            return _Tracked(self, None, make())

        return factory

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        finally:
            conn = self._by_app.get(request.transport) if request.transport else None
            if conn is not None:  # answered: the connection waits for its next request
                conn.phase = Phase.WAITING
                conn.since = _now()
                conn.first_byte = None
                conn.tail = b""

    # -- data ---------------------------------------------------------------------------------

    def received(self, conn: Connection, data: bytes) -> None:
        if conn.phase is Phase.BUSY:
            return
        if conn.first_byte is None:
            conn.first_byte = _now()
        seen = conn.tail + data
        if _HEADERS_END in seen:
            conn.phase = Phase.BUSY
            conn.tail = b""
        else:
            conn.tail = seen[-3:]

    # -- reaping ------------------------------------------------------------------------------

    def reap(self) -> None:
        now = _now()
        for conn in list(self._conns.values()):
            deadline = conn.deadline(self.limits)
            if deadline is not None and now > deadline:
                why = "header-timeout" if conn.first_byte is not None else "idle-timeout"
                self._drop(conn, why)
        self._report()

    async def _reap_forever(self) -> None:
        period = min(1.0, self.limits.header_timeout_s / 4, self.limits.idle_timeout_s / 4)
        while True:
            await asyncio.sleep(period)
            self.reap()

    def _report(self) -> None:
        new = self.counts - self._reported
        if new:
            what = ", ".join(f"{n} {why}" for why, n in sorted(new.items()))
            log.warning("%s listener closed connections: %s (%d open)", self.name, what, self.open)
            self._reported = Counter(self.counts)

    @staticmethod
    def _oldest_idle(conns: Any) -> Connection | None:
        idle = [c for c in conns if c.phase is not Phase.BUSY]
        return min(idle, key=lambda c: c.since) if idle else None

    def _drop(self, conn: Connection, why: str) -> None:
        self.closed(conn)
        self._close(conn.raw, why)

    def _close(self, raw: asyncio.BaseTransport, why: str) -> None:
        self.counts[why] += 1
        if isinstance(raw, asyncio.Transport):
            raw.abort()  # no TLS close_notify to a client that does not read: free the socket
        else:
            raw.close()


class _Tracked(asyncio.Protocol):
    """aiohttp's protocol behind the guard: every event passed on, data noted."""

    def __init__(
        self, guard: ConnectionGuard, conn: Connection | None, inner: asyncio.Protocol
    ) -> None:
        self._guard = guard
        self._conn = conn
        self._inner = inner
        self._made = False  # the inner protocol has its transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._conn is None:  # plain TCP: admitted here
            self._conn = self._guard.admit(transport, Phase.WAITING)
            if self._conn is None:
                return
        self._guard.attach(self._conn, transport)
        self._made = True
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._conn is None:  # refused at the cap
            return
        # after a TLS handshake the client's first request can arrive before the server
        # hands the connection over (connection_made): aiohttp's parser takes it anyway
        self._guard.received(self._conn, data)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._conn is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._guard.closed(self._conn)
        if self._made:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


def _now() -> float:
    return asyncio.get_running_loop().time()


#: open files besides the listeners' connections: field links, the AMS client, MQTT, state
#: files, logs, the worker threads' and processes' pipes
FD_RESERVE = 512


def ensure_fd_budget(*listener_caps: int) -> None:
    """Raise the soft limit on open files to the listeners' caps plus FD_RESERVE when the
    hard limit allows (systemd's default soft limit is 1,024; the unit sets LimitNOFILE,
    and its system call filter forbids raising it here); warn when it stays lower."""
    needed = sum(listener_caps) + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            target = soft
    if target < needed:
        log.warning(
            "open-file limit %d is below the %d the listeners' caps need; raise LimitNOFILE",
            target,
            needed,
        )
