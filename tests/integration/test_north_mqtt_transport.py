"""The MQTT transport between a gateway and an AMS endpoint through a real mosquitto with
TLS client certificates: requests, correlated answers, the broker's ACL, reconnects."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.errors import DeliveryError, InboundRejected
from gateway.north.config import MqttConfig, TlsFiles
from gateway.north.mqtt import AMS_SIDE, GATEWAY_SIDE, MqttEndpoint, Topics
from gateway.north.outbox import OutboundMessage, QueuedMessage
from gateway.north.tls import client_context
from gateway.north.wire import INBOUND, OUTBOUND, TURTLE, Answer, Channel
from tests.support.mosquitto import Broker, mosquitto
from tests.support.pki import PkiFiles, make_test_pki
from tests.support.waiting import until

pytestmark = pytest.mark.integration

TOPICS = Topics("smartapi", "mg1")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def broker(pki: PkiFiles, tmp_path: Path) -> Iterator[Broker]:
    with mosquitto(tmp_path / "broker", pki) as b:
        yield b


class Recorder:
    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.got: list[tuple[Channel, bytes, str]] = []

    async def __call__(self, channel: Channel, body: bytes, content_type: str) -> Answer:
        self.got.append((channel, body, content_type))
        return Answer(self.status, TURTLE, b"answer to " + body)


def plain_refusal(refusal: InboundRejected, content_type: str) -> Answer:
    return Answer(refusal.status, TURTLE, f"{refusal.reason}: {refusal.detail}".encode())


def endpoint(
    pki: PkiFiles, broker: Broker, party: str, side: str, handle: Recorder, **kw: object
) -> MqttEndpoint:
    cert, key = pki.pair(party)
    ctx = client_context(TlsFiles(ca=(pki.ca,), cert=cert, key=key))
    config = MqttConfig(host=broker.host, port=broker.port, connect_timeout_s=5)
    inbound = INBOUND if side == GATEWAY_SIDE else OUTBOUND
    return MqttEndpoint(
        config,
        ctx,
        client_id=f"{party}-test",
        topics=TOPICS,
        side=side,
        inbound=inbound,
        handle=handle,
        refuse=plain_refusal,
        **kw,  # type: ignore[arg-type]
    )


@contextlib.asynccontextmanager
async def running(*endpoints: MqttEndpoint) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(e.run()) for e in endpoints]
    try:
        async with asyncio.timeout(10):
            for e in endpoints:
                await e.connected.wait()
        yield
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


def item(mid: str, channel: Channel, body: bytes) -> QueuedMessage:
    return QueuedMessage(OutboundMessage(mid, channel.value, TURTLE, body), 1, 0.0, 0)


async def test_requests_both_ways_get_correlated_answers(pki: PkiFiles, broker: Broker) -> None:
    gw_in, ams_in = Recorder(), Recorder()
    gw = endpoint(pki, broker, "gateway", GATEWAY_SIDE, gw_in, announce_status=True)
    ams = endpoint(pki, broker, "ams", AMS_SIDE, ams_in)
    async with running(gw, ams):
        await gw.deliver(item("f1", Channel.FORECAST, b"forecast-1"))
        answer = await ams.request(Channel.ACTIVATION, "a1", TURTLE, b"activation-1")
        both = await asyncio.gather(
            gw.request(Channel.VERIFICATION, "v1", TURTLE, b"v-1"),
            gw.request(Channel.VERIFICATION, "v2", TURTLE, b"v-2"),
        )
    assert ams_in.got[0] == (Channel.FORECAST, b"forecast-1", TURTLE)
    assert gw_in.got == [(Channel.ACTIVATION, b"activation-1", TURTLE)]
    assert (answer.status, answer.body) == (200, b"answer to activation-1")
    assert [a.body for a in both] == [b"answer to v-1", b"answer to v-2"]


async def test_error_answer_is_a_failed_delivery(pki: PkiFiles, broker: Broker) -> None:
    gw = endpoint(pki, broker, "gateway", GATEWAY_SIDE, Recorder())
    ams = endpoint(pki, broker, "ams", AMS_SIDE, Recorder(status=422))
    async with running(gw, ams):
        with pytest.raises(DeliveryError, match="answered 422") as err:
            await gw.deliver(item("f1", Channel.FORECAST, b"bad"))
    assert err.value.permanent


async def test_broker_acl_stops_a_gateway_posing_as_the_ams(pki: PkiFiles, broker: Broker) -> None:
    """The gateway's certificate may not publish activations: the broker drops them, so
    the request gets no answer and delivery fails."""
    gw_in = Recorder()
    gw = endpoint(pki, broker, "gateway", GATEWAY_SIDE, gw_in)
    # a second gateway-certificate client that tries to talk on the AMS side
    rogue = endpoint(pki, broker, "gateway", AMS_SIDE, Recorder(), answer_timeout_s=0.5)
    rogue._client_id = "rogue"
    async with running(gw, rogue):
        with pytest.raises(DeliveryError, match="no answer"):
            await rogue.request(Channel.ACTIVATION, "a1", TURTLE, b"forged")
    assert gw_in.got == []


async def test_session_survives_a_disconnect(pki: PkiFiles, broker: Broker) -> None:
    """QoS 1 requests published while the gateway is away wait in its session."""
    gw_in = Recorder()
    gw = endpoint(pki, broker, "gateway", GATEWAY_SIDE, gw_in)
    ams = endpoint(pki, broker, "ams", AMS_SIDE, Recorder(), answer_timeout_s=10)
    async with running(gw):
        pass  # first connection creates the persistent session
    async with running(ams):
        pending = asyncio.create_task(ams.request(Channel.ACTIVATION, "a1", TURTLE, b"while away"))
        await asyncio.sleep(0.2)
        assert gw_in.got == []
        async with running(gw):
            answer = await pending
    assert gw_in.got == [(Channel.ACTIVATION, b"while away", TURTLE)]
    assert answer.status == 200


async def test_reconnects_after_the_broker_restarts(
    pki: PkiFiles, tmp_path: Path, broker: Broker
) -> None:
    gw_in = Recorder()
    connects = []
    gw = endpoint(
        pki,
        broker,
        "gateway",
        GATEWAY_SIDE,
        gw_in,
        on_connected=lambda: connects.append(1),
        reconnect_max_s=0.5,
    )
    ams = endpoint(pki, broker, "ams", AMS_SIDE, Recorder(), reconnect_max_s=0.5)
    async with running(gw, ams):
        broker.proc.terminate()
        broker.proc.wait(10)
        await until(lambda: not gw.connected.is_set())
        with pytest.raises(DeliveryError, match="not connected"):
            await gw.deliver(item("f1", Channel.FORECAST, b"down"))
        with mosquitto(broker.directory, pki, port=broker.port):
            await until(lambda: len(connects) >= 2 and ams.connected.is_set(), within=15)
            await gw.deliver(item("f2", Channel.FORECAST, b"up again"))
    assert len(connects) >= 2
