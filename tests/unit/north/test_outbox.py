from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.errors import DeliveryError
from gateway.north.config import RetryPolicy
from gateway.north.outbox import OutboundMessage, Outbox, QueuedMessage, WallClock
from tests.support.waiting import until

FAST = RetryPolicy(initial_s=0.01, max_s=0.05)


def msg(i: int, destination: str = "forecast") -> OutboundMessage:
    return OutboundMessage(f"urn:uuid:m{i}", destination, "text/turtle", f"body {i}".encode())


class Peer:
    """Records deliveries; refuses while `down` or for listed ids' first attempts."""

    def __init__(self) -> None:
        self.down = False
        self.refuse_first: dict[str, int] = {}
        self.got: list[str] = []
        self.attempts: list[str] = []

    async def deliver(self, item: QueuedMessage) -> None:
        mid = item.message.message_id
        self.attempts.append(mid)
        if self.down:
            raise DeliveryError(item.message.destination, "connection refused")
        if self.refuse_first.get(mid, 0) > 0:
            self.refuse_first[mid] -= 1
            raise DeliveryError(item.message.destination, "HTTP 503")
        self.got.append(mid)

    async def wait_for(self, n: int) -> None:
        await until(lambda: len(self.got) >= n)


async def drained(outbox: Outbox) -> None:
    """Until nothing is pending (the peer's receipt precedes our bookkeeping)."""

    async def empty() -> bool:
        return (await outbox.stats()).pending == 0

    await until(empty)


@contextlib.asynccontextmanager
async def running(outbox: Outbox, peer: Peer) -> AsyncIterator[None]:
    task = asyncio.create_task(outbox.run(peer))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_put_is_durable_and_duplicates_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    async with Outbox(path, FAST) as outbox:
        assert await outbox.put(msg(1))
        assert not await outbox.put(msg(1))
    async with Outbox(path, FAST) as outbox:
        stats = await outbox.stats()
        assert stats.pending == 1
        assert not await outbox.put(msg(1))
        assert (await outbox.states()) == {"urn:uuid:m1": "pending"}


async def test_concurrent_puts_share_commits_and_all_land(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "o.sqlite", FAST) as outbox:
        results = await asyncio.gather(*(outbox.put(msg(i)) for i in range(200)))
        assert all(results)
        assert (await outbox.stats()).pending == 200
        again = await asyncio.gather(*(outbox.put(msg(i)) for i in range(195, 205)))
        assert again == [False] * 5 + [True] * 5


async def test_delivers_in_order_per_destination_retrying_the_head(tmp_path: Path) -> None:
    peer = Peer()
    peer.refuse_first = {"urn:uuid:m1": 3}
    async with Outbox(tmp_path / "o.sqlite", FAST) as outbox:
        for i in range(1, 5):
            await outbox.put(msg(i))
        await outbox.put(msg(10, "verification"))
        async with running(outbox, peer):
            await peer.wait_for(5)
            await drained(outbox)
        stats = await outbox.stats()
    forecast = [m for m in peer.got if m != "urn:uuid:m10"]
    assert forecast == [f"urn:uuid:m{i}" for i in range(1, 5)]
    assert peer.attempts.count("urn:uuid:m1") == 4
    # nothing behind the failing head was tried before it went through
    first_m2 = peer.attempts.index("urn:uuid:m2")
    assert first_m2 > max(i for i, m in enumerate(peer.attempts) if m == "urn:uuid:m1")
    assert stats.pending == 0
    assert stats.delivered == 5


async def test_outage_fills_then_drains_once_in_order(tmp_path: Path) -> None:
    peer = Peer()
    peer.down = True
    async with Outbox(tmp_path / "o.sqlite", FAST) as outbox, running(outbox, peer):
        for i in range(20):
            await outbox.put(msg(i))
        await asyncio.sleep(0.1)
        stats = await outbox.stats()
        assert stats.pending == 20
        assert stats.destinations["forecast"].head_attempts >= 1
        assert stats.destinations["forecast"].last_error is not None
        assert stats.oldest_age_s is not None and stats.oldest_age_s > 0
        peer.down = False
        await peer.wait_for(20)
    assert peer.got == [f"urn:uuid:m{i}" for i in range(20)]


async def test_pending_messages_survive_restart(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    peer = Peer()
    peer.down = True
    async with Outbox(path, FAST) as outbox, running(outbox, peer):
        for i in range(5):
            await outbox.put(msg(i))
        await asyncio.sleep(0.05)
    peer = Peer()
    async with Outbox(path, FAST) as outbox, running(outbox, peer):
        await peer.wait_for(5)
        await drained(outbox)
    assert peer.got == [f"urn:uuid:m{i}" for i in range(5)]


class SteppedClock(WallClock):
    """Wall-clock waits, time stamps the test sets."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


async def test_undeliverable_message_expires_and_the_next_goes(tmp_path: Path) -> None:
    clock = SteppedClock(1_000_000.0)
    policy = RetryPolicy(initial_s=0.01, max_s=0.02, give_up_after_s=3600)
    peer = Peer()
    peer.refuse_first = {"urn:uuid:m0": 10**6}
    async with Outbox(tmp_path / "o.sqlite", policy, clock=clock) as outbox:
        await outbox.put(msg(0))
        clock.now += 10.0
        await outbox.put(msg(1))
        async with running(outbox, peer):
            await asyncio.sleep(0.05)
            assert peer.got == []
            clock.now += 3595.0  # m0 is now older than give_up_after_s, m1 is not
            outbox.kick()
            await peer.wait_for(1)
            await drained(outbox)
        states = await outbox.states()
        stats = await outbox.stats()
    assert peer.got == ["urn:uuid:m1"]
    assert states == {"urn:uuid:m0": "expired", "urn:uuid:m1": "delivered"}
    assert stats.expired == 1


async def test_kick_retries_before_the_backoff_ends(tmp_path: Path) -> None:
    policy = RetryPolicy(initial_s=30.0, max_s=60.0)
    peer = Peer()
    peer.refuse_first = {"urn:uuid:m0": 1}
    async with Outbox(tmp_path / "o.sqlite", policy) as outbox, running(outbox, peer):
        await outbox.put(msg(0))
        await until(lambda: bool(peer.attempts))
        outbox.kick("forecast")
        await peer.wait_for(1)


def test_backoff_is_exponential_and_capped() -> None:
    policy = RetryPolicy(initial_s=1.0, max_s=60.0, factor=2.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert policy.delay(7) == 60.0
    assert policy.delay(10_000) == 60.0


def test_retry_window_is_at_least_an_hour() -> None:
    with pytest.raises(ValueError, match="give_up_after_s"):
        RetryPolicy(give_up_after_s=60)


class InstantClock:
    """Simulated time: a backoff wait passes at once (the hourly prune never does)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.waited: list[float] = []

    def time(self) -> float:
        return self.now

    async def wait(self, event: asyncio.Event, seconds: float) -> None:
        if seconds >= 3600:
            await event.wait()
            return
        self.waited.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def test_backoff_waits_in_the_outbox_clock(tmp_path: Path) -> None:
    """Hours of backoff pass in no real time on a simulated clock, with the policy's delays."""
    clock = InstantClock()
    peer = Peer()
    peer.refuse_first = {"urn:uuid:m0": 200}
    policy = RetryPolicy(initial_s=1.0, max_s=60.0)
    async with Outbox(tmp_path / "o.sqlite", policy, clock=clock) as outbox:
        await outbox.put(msg(0))
        async with running(outbox, peer):
            await peer.wait_for(1)
            await drained(outbox)
    assert clock.waited[:7] == pytest.approx([1, 2, 4, 8, 16, 32, 60], rel=0.01)
    assert clock.now - 1_000_000.0 >= 190 * 60  # over three simulated hours of retrying
