"""The outbox over real HTTPS: AMS away, AMS back, gateway restarted, AMS refusing."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from gateway.north.codec import SmartApiCodec
from gateway.north.service import North
from gateway.north.wire import Channel
from gateway.smartapi.messages import Message
from tests.support import north as support
from tests.support.pki import PkiFiles, make_test_pki
from tests.support.procs import free_port
from tests.support.waiting import until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def ids(messages: list[Message] | list[object]) -> list[str]:
    return [m.id for m in messages]  # type: ignore[attr-defined]


async def test_ams_down_fills_the_outbox_and_back_drains_it_once_in_order(
    pki: PkiFiles, tmp_path: Path
) -> None:
    gw_port, ams_port = free_port(), free_port()
    config = support.gateway_config(pki, ams_port=ams_port, port=gw_port)
    forecasts = [support.forecast() for _ in range(4)]
    verifications = [support.verification(f"act-{i}") for i in range(3)]
    async with support.running_gateway(config, tmp_path / "gw") as north:
        for f, v in zip(forecasts, verifications, strict=False):
            assert await north.send(f)
            assert await north.send(v)
        assert await north.send(forecasts[-1])
        assert not await north.send(forecasts[0])  # already queued: not again

        async def failing() -> bool:
            stats = await north.outbox.stats()
            heads = stats.destinations.values()
            return stats.pending == 7 and all(d.head_attempts >= 2 for d in heads)

        await until(failing)
        stats = await north.outbox.stats()
        assert set(stats.destinations) == {"forecast", "verification"}
        assert "127.0.0.1" in (stats.destinations["forecast"].last_error or "")

        async with support.running_ams(
            pki, tmp_path / "ams", gateway_port=gw_port, port=ams_port
        ) as ams:
            north.outbox.kick()
            await support.drained(north)
            assert ids(ams.messages(Channel.FORECAST)) == ids(forecasts)
            assert ids(ams.messages(Channel.VERIFICATION)) == ids(verifications)
        assert (await north.stats()).outbox.delivered == 7


async def test_restart_with_a_full_outbox_loses_nothing(pki: PkiFiles, tmp_path: Path) -> None:
    gw_port, ams_port = free_port(), free_port()
    config = support.gateway_config(pki, ams_port=ams_port, port=gw_port)
    sent = [support.forecast() for _ in range(3)]
    async with support.running_gateway(config, tmp_path / "gw") as north:
        for f in sent:
            await north.send(f)
        await until(lambda: _attempted(north))
    # a new gateway process on the same state directory, the AMS now up
    async with (
        support.running_ams(pki, tmp_path / "ams", gateway_port=gw_port, port=ams_port) as ams,
        support.running_gateway(config, tmp_path / "gw") as north,
    ):
        await support.drained(north)
        assert ids(ams.messages(Channel.FORECAST)) == ids(sent)
        # and the restarted gateway still knows those ids
        assert not await north.send(sent[0])


async def _attempted(north: North) -> bool:
    stats = await north.outbox.stats()
    return stats.pending == 3 and stats.destinations["forecast"].head_attempts >= 1


async def test_an_ams_refusal_is_not_a_delivery(pki: PkiFiles, tmp_path: Path) -> None:
    gw_port, ams_port = free_port(), free_port()
    config = support.gateway_config(pki, ams_port=ams_port, port=gw_port)
    async with (
        support.running_ams(pki, tmp_path / "ams", gateway_port=gw_port, port=ams_port) as ams,
        support.running_gateway(config, tmp_path / "gw") as north,
    ):
        stranger = support.forecast(microgrid="another-microgrid")
        good = support.forecast()
        await north.send(stranger)
        await north.send(good)

        async def refused_twice() -> bool:
            head = (await north.outbox.stats()).destinations.get("forecast")
            return head is not None and head.head_attempts >= 2

        await until(refused_twice)
        stats = await north.outbox.stats()
        assert stats.pending == 2  # in order: the good one waits behind the refused one
        assert "422" in (stats.destinations["forecast"].last_error or "")
        assert "wrong-microgrid" in (stats.destinations["forecast"].last_error or "")
        assert ams.messages(Channel.FORECAST) == []


async def test_messages_are_signed_off_the_event_loop_and_queued_in_the_order_sent(
    pki: PkiFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signing and serializing a 96-interval forecast is milliseconds of CPU that an
    activation's answer would wait behind on the event loop: it runs in a worker thread,
    and messages sent at once still reach the AMS in the order they were sent."""
    on_loop: list[bool] = []
    encode = SmartApiCodec.encode
    forecasts = [support.forecast() for _ in range(5)]

    def spied(self: SmartApiCodec, message: Message, content_type: str) -> bytes:
        if message.id in ids(forecasts):  # the gateway's, not the AMS's answers
            on_loop.append(threading.current_thread() is threading.main_thread())
        return encode(self, message, content_type)

    monkeypatch.setattr(SmartApiCodec, "encode", spied)
    gw_port, ams_port = free_port(), free_port()
    config = support.gateway_config(pki, ams_port=ams_port, port=gw_port)
    async with (
        support.running_ams(pki, tmp_path / "ams", gateway_port=gw_port, port=ams_port) as ams,
        support.running_gateway(config, tmp_path / "gw") as north,
    ):
        assert all(await asyncio.gather(*(north.send(f) for f in forecasts)))
        await support.drained(north)
        assert ids(ams.messages(Channel.FORECAST)) == ids(forecasts)
    assert on_loop == [False] * len(forecasts)
