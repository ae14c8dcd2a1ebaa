"""The CRP cycle over MQTT 5 through a real mosquitto with TLS client certificates: the
gateway's North on transport mqtt and the AMS simulator on the AMS side of the topics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.north.ams_sim import AmsSimulator
from gateway.north.config import MqttConfig
from gateway.north.service import North
from gateway.north.wire import TURTLE, Channel
from gateway.smartapi import codec
from gateway.smartapi.flexibility import ReserveVerification
from gateway.smartapi.messages import ErrorMessage, Response
from tests.support import north as support
from tests.support.mosquitto import Broker, mosquitto
from tests.support.pki import PkiFiles, make_test_pki
from tests.support.procs import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def broker(pki: PkiFiles, tmp_path: Path) -> Iterator[Broker]:
    with mosquitto(tmp_path / "broker", pki) as b:
        yield b


@dataclass
class Pair:
    north: North
    ams: AmsSimulator
    flex: support.Flexibility


@pytest.fixture
async def pair(pki: PkiFiles, broker: Broker, tmp_path: Path) -> AsyncIterator[Pair]:
    mqtt = MqttConfig(host=broker.host, port=broker.port, connect_timeout_s=5)
    config = support.gateway_config(pki, ams_port=free_port(), mqtt=mqtt)
    async with (
        support.flexibility(tmp_path / "gw") as flex,
        support.running_ams(pki, tmp_path / "ams", gateway_port=None, mqtt=mqtt) as ams,
        support.running_gateway(config, tmp_path / "gw", flex) as north,
    ):
        assert north.mqtt is not None
        async with asyncio.timeout(10):
            await north.mqtt.connected.wait()
        yield Pair(north, ams, flex)


async def test_full_crp_cycle_over_mqtt(pair: Pair) -> None:
    got = await support.offered(pair.flex, pair.ams)
    n = pair.ams.notification_for(got, intervals=2)
    sent_n = await pair.ams.send(n, via="mqtt")
    assert sent_n.answer.status == 200, sent_n.answer.body.decode()
    a = pair.ams.activation_for(n, got, fraction=0.5)
    sent_a = await pair.ams.send(a, via="mqtt")
    reply = codec.decode(sent_a.answer.body, sent_a.answer.content_type)
    assert isinstance(reply, Response) and reply.in_reply_to == a.id
    assert pair.flex.accepted_activations() == [a.id]

    v = support.verification(a.id)
    assert await pair.north.send(v)
    got_v = await asyncio.wait_for(pair.ams.next_message(Channel.VERIFICATION), 10)
    assert isinstance(got_v, ReserveVerification) and got_v == v
    await support.drained(pair.north)
    stats = await pair.north.stats()
    assert stats.mqtt_connected is True
    received = pair.ams.messages(Channel.FORECAST) + pair.ams.messages(Channel.VERIFICATION)
    assert stats.outbox.delivered == len(received)
    assert [m.id for m in received].count(v.id) == 1


async def test_refusals_come_back_as_errors_over_mqtt(pair: Pair) -> None:
    got = await support.offered(pair.flex, pair.ams)
    n = pair.ams.notification_for(got, intervals=2)
    assert (await pair.ams.send(n, via="mqtt")).answer.status == 200
    too_far = pair.ams.activation_for(n, got, fraction=support.fraction_beyond_band(n))
    sent = await pair.ams.send(too_far, via="mqtt")
    error = codec.decode(sent.answer.body, sent.answer.content_type)
    assert sent.answer.status == 422
    assert isinstance(error, ErrorMessage) and error.message.startswith("outside-band: ")
    assert pair.ams.mqtt is not None
    garbage = await pair.ams.mqtt.request(Channel.ACTIVATION, "garbage-1", TURTLE, b"<<<")
    assert garbage.status == 400
    assert pair.flex.accepted_activations() == []


async def test_repeat_over_mqtt_gets_the_first_answer(pair: Pair) -> None:
    got = await support.offered(pair.flex, pair.ams)
    n = pair.ams.notification_for(got, intervals=2)
    first = await pair.ams.send(n, via="mqtt")
    again = await pair.ams.send(n, via="mqtt")
    assert first.answer == again.answer
    assert (await pair.north.stats()).inbound["repeat"] == 1


async def test_mqtt_admission_checks_size_and_media_type(pair: Pair) -> None:
    """What the HTTPS server refuses before the pipeline, the MQTT endpoint refuses too (a
    body of any size and type used to reach the parser)."""
    assert pair.ams.mqtt is not None
    limit = pair.north.config.server.max_body_bytes
    big = await pair.ams.mqtt.request(Channel.ACTIVATION, "big-1", TURTLE, b"#" * (limit + 1))
    xml = await pair.ams.mqtt.request(Channel.ACTIVATION, "xml-1", "application/xml", b"<a/>")
    for answer, status, reason in ((big, 413, "too-large"), (xml, 415, "unsupported-media-type")):
        error = codec.decode(answer.body, answer.content_type)
        assert answer.status == status
        assert isinstance(error, ErrorMessage) and error.message.startswith(f"{reason}: ")
    assert (await pair.north.stats()).inbound == {"too-large": 1, "unsupported-media-type": 1}
