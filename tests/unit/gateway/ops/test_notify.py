"""The notify protocol against a real datagram socket standing in for systemd."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.ops.notify import Notifier


@pytest.fixture
def systemd_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(2.0)
    try:
        yield sock, path
    finally:
        sock.close()


def received(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


def waiting(sock: socket.socket) -> list[dict[str, str]]:
    """Every message waiting on the socket."""
    sock.setblocking(False)
    got = []
    with contextlib.suppress(BlockingIOError):
        while True:
            got.append(received(sock))
    return got


def test_messages_arrive_as_systemd_reads_them(systemd_socket: tuple[socket.socket, str]) -> None:
    sock, path = systemd_socket
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    try:
        assert n.enabled
        assert n.status("starting:\n two devices")
        assert n.ready("running")
        assert n.watchdog()
        assert n.reloading()
        assert n.stopping()
    finally:
        n.close()
    assert received(sock) == {"STATUS": "starting: two devices"}  # one line only
    assert received(sock) == {"READY": "1", "STATUS": "running"}
    assert received(sock) == {"WATCHDOG": "1"}
    reloading = received(sock)
    assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
    assert received(sock) == {"STOPPING": "1"}


def test_abstract_socket(systemd_socket: tuple[socket.socket, str]) -> None:
    name = f"mgms-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2.0)
    n = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
    try:
        n.ready()
        assert received(sock) == {"READY": "1"}
    finally:
        n.close()
        sock.close()


def test_without_systemd_nothing_is_sent() -> None:
    n = Notifier.from_env({})
    assert not n.enabled
    assert not n.ready()
    assert n.watchdog_interval is None
    n.close()
    assert not Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled


def test_a_vanished_systemd_does_not_break_the_service(tmp_path: Path) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    try:
        assert n.enabled
        assert not n.ready()
    finally:
        n.close()


def test_watchdog_interval_is_half_the_timeout_and_only_for_this_process() -> None:
    assert Notifier.from_env({"WATCHDOG_USEC": "30000000"}).watchdog_interval == 15.0
    mine = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier.from_env(mine).watchdog_interval == 1.0
    other = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier.from_env(other).watchdog_interval is None
    assert Notifier.from_env({"WATCHDOG_USEC": "soon"}).watchdog_interval is None


async def test_extending_keeps_the_start_timeout_ahead_while_the_work_runs(
    systemd_socket: tuple[socket.socket, str],
) -> None:
    sock, path = systemd_socket
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    try:
        async with n.extending("starting: migrating", seconds=0.3):
            await asyncio.sleep(0.25)  # long enough for a renewal (every 0.1 s)
        got = waiting(sock)
    finally:
        n.close()
    assert got[0] == {"STATUS": "starting: migrating"}
    extends = [m for m in got[1:] if m == {"EXTEND_TIMEOUT_USEC": "300000"}]
    assert len(extends) >= 2 and len(extends) == len(got) - 1


async def test_extending_stops_when_the_work_stops_moving(
    systemd_socket: tuple[socket.socket, str],
) -> None:
    """A migration that hangs must still meet the start timeout: with its progress given,
    the timeout is extended only while the work moved on within the extension."""
    sock, path = systemd_socket
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    last = [time.monotonic()]
    try:
        async with n.extending(
            "starting: migrating", seconds=0.3, progressed=lambda: last[0], stalled_after=0.5
        ):
            await asyncio.sleep(0.05)  # moving: the first beat extends
            last[0] -= 1.0  # then it stops moving
            await asyncio.sleep(0.35)
        got = waiting(sock)
    finally:
        n.close()
    assert got == [{"STATUS": "starting: migrating"}, {"EXTEND_TIMEOUT_USEC": "300000"}]
