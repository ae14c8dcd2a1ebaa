"""The systemd notify protocol (sd_notify(3)): state changes as datagrams to $NOTIFY_SOCKET.

Outside systemd (no NOTIFY_SOCKET) every call is a no-op, so the gateway runs the same way
from a shell. A send never blocks the event loop: the socket is non-blocking and a full
queue drops the message (systemd would be gone or stuck anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping

log = logging.getLogger(__name__)

#: how far ahead `extending` keeps the start timeout (renewed every third of it)
EXTEND_S = 30.0


def _address(raw: str | None) -> str | None:
    """A path or an abstract socket ('@name'); other schemes (vsock:) are not served."""
    if not raw:
        return None
    if raw.startswith("@"):
        return "\0" + raw[1:]
    if raw.startswith("/"):
        return raw
    log.warning("NOTIFY_SOCKET %r is neither a path nor an abstract socket; not notifying", raw)
    return None


def _watchdog_usec(environ: Mapping[str, str]) -> int | None:
    """WATCHDOG_USEC when it is meant for this process (WATCHDOG_PID unset or ours)."""
    usec, pid = environ.get("WATCHDOG_USEC"), environ.get("WATCHDOG_PID")
    if not usec:
        return None
    try:
        value = int(usec)
        if pid and int(pid) != os.getpid():
            return None
    except ValueError:
        log.warning("ignoring malformed WATCHDOG_USEC=%r / WATCHDOG_PID=%r", usec, pid)
        return None
    return value if value > 0 else None


#: seconds without progress after which `Notifier.extending` lets the start timeout run
STALL_S = 300.0


class Notifier:
    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self._address = address
        self.watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        if address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        return cls(_address(env.get("NOTIFY_SOCKET")), _watchdog_usec(env))

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    @property
    def watchdog_interval(self) -> float | None:
        """How often to send WATCHDOG=1: half the timeout, as sd_watchdog_enabled(3) advises."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 2e6

    def send(self, *fields: str) -> bool:
        """Send `KEY=VALUE` fields in one datagram; False if not sent."""
        if self._sock is None or self._address is None:
            return False
        data = "\n".join(fields).encode("utf-8", "replace")
        try:
            self._sock.sendto(data, self._address)
        except OSError as exc:  # systemd gone or queue full: the service keeps running
            log.debug("notify %r not sent: %s", fields, exc)
            return False
        return True

    @staticmethod
    def _status(text: str) -> str:
        return "STATUS=" + " ".join(text.split())

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([self._status(status)] if status else []))

    def status(self, text: str) -> bool:
        return self.send(self._status(text))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets Type=notify-reload (systemd 253+) match this to its signal
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for `seconds` more before the start (or stop) counts as timed out
        (EXTEND_TIMEOUT_USEC, systemd 236+)."""
        return self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    @contextlib.asynccontextmanager
    async def extending(
        self,
        status: str,
        seconds: float = EXTEND_S,
        progressed: Callable[[], float] | None = None,
        stalled_after: float = STALL_S,
    ) -> AsyncIterator[None]:
        """While the body runs, tell systemd what it is and keep the start timeout `seconds`
        ahead: for work whose length grows with the site (a store's one-time migration).
        With `progressed` (the monotonic time the work last moved on), only until it has not
        moved for `stalled_after` seconds: a hung one stops extending, and the timeout
        catches it (generous: a commit or a drop of a large table is one long SQLite step)."""
        self.status(status)

        async def beat() -> None:
            while True:
                if progressed is None or time.monotonic() - progressed() < stalled_after:
                    self.extend_timeout(seconds)
                await asyncio.sleep(seconds / 3)

        beating = asyncio.create_task(beat(), name="notify-extend")
        try:
            yield
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *([self._status(status)] if status else []))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
