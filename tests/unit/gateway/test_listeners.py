"""gateway.listeners.ConnectionGuard: who is dropped at the caps, and when the reaper
closes a connection (its phases driven as the listeners drive them)."""

from __future__ import annotations

import asyncio

from gateway.listeners import Connection, ConnectionGuard, ListenerLimits, Phase


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


LIMITS = ListenerLimits(header_timeout_s=10, idle_timeout_s=30, max_connections=3, max_per_peer=2)


def admitted(guard: ConnectionGuard) -> tuple[Transport, Connection]:
    raw = Transport()
    conn = guard.admit(raw, Phase.HANDSHAKE)
    assert conn is not None
    guard.attach(conn, raw)
    return raw, conn


async def test_at_the_cap_the_longest_waiting_unserved_connection_goes() -> None:
    guard = ConnectionGuard("test", LIMITS)
    (a, ca), (b, cb), (c, cc) = (admitted(guard) for _ in range(3))
    ca.since, cb.since, cc.since = 1.0, 0.5, 2.0
    guard.received(cb, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # b is being served
    d, _ = admitted(guard)
    assert (a.aborted, b.aborted, c.aborted, d.aborted) == (True, False, False, False)
    assert guard.counts == {"dropped-for-new": 1}


async def test_with_every_connection_served_a_new_one_is_refused() -> None:
    guard = ConnectionGuard("test", LIMITS)
    for _ in range(3):
        _, conn = admitted(guard)
        guard.received(conn, b"GET / HTTP/1.1\r\n\r\n")
    late = Transport()
    assert guard.admit(late, Phase.HANDSHAKE) is None and late.aborted
    assert guard.counts == {"refused-at-cap": 1} and guard.open == 3


async def test_per_certificate_cap_drops_that_peers_oldest_idle() -> None:
    guard = ConnectionGuard("test", ListenerLimits(10, 30, 100, max_per_peer=2))
    (a, ca), (b, cb) = admitted(guard), admitted(guard)
    other, co = admitted(guard)
    for conn, when in ((ca, 1.0), (cb, 2.0), (co, 0.0)):
        conn.since = when
    assert guard.identified(ca, "peer-1") and guard.identified(cb, "peer-1")
    assert guard.identified(co, "peer-2")
    c, cc = admitted(guard)
    assert guard.identified(cc, "peer-1")
    assert (a.aborted, b.aborted, other.aborted, c.aborted) == (True, False, False, False)


async def test_headers_arriving_in_pieces_are_seen_whole_and_slow_ones_reaped() -> None:
    guard = ConnectionGuard("test", LIMITS)
    raw, conn = admitted(guard)
    for piece in (b"GET / HTTP/1.1\r\nHost: x\r", b"\n\r", b"\n"):
        assert conn.phase is Phase.WAITING
        guard.received(conn, piece)
    assert conn.phase is Phase.BUSY
    slow_raw, slow = admitted(guard)
    idle_raw, idle = admitted(guard)
    guard.received(slow, b"G")
    now = asyncio.get_running_loop().time()
    assert slow.first_byte is not None
    slow.first_byte = now - 11  # a header byte 11 s ago, headers still not complete
    idle.since = now - 29  # idle, within its 30 s
    guard.reap()
    assert (slow_raw.aborted, idle_raw.aborted, raw.aborted) == (True, False, False)
    idle.since = now - 31
    guard.reap()
    assert idle_raw.aborted and guard.counts == {"header-timeout": 1, "idle-timeout": 1}
