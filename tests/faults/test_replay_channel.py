"""Finding 5 of the attack run: a byte-identical replay of an accepted activation posted
to the notification endpoint got the ledger's stored answer (200) instead of 422
wrong-channel. The ledger answers a known id only on the channel it came in on: an exact
repeat (found by digest, before parsing) is the regression; the same message in another
form (found after parsing) guards the other path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.north.ams_sim import AmsSimulator
from gateway.north.wire import JSON_LD, TURTLE, Answer, Channel
from gateway.smartapi import codec
from gateway.smartapi.messages import ErrorMessage, Response
from tests.support import north as support
from tests.support.pki import PkiFiles, make_test_pki
from tests.support.procs import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def pair(
    pki: PkiFiles, tmp_path: Path
) -> AsyncIterator[tuple[support.Flexibility, AmsSimulator]]:
    gw_port, ams_port = free_port(), free_port()
    config = support.gateway_config(pki, ams_port=ams_port, port=gw_port)
    async with (
        support.flexibility(tmp_path / "gw") as flex,
        support.running_ams(pki, tmp_path / "ams", gateway_port=gw_port, port=ams_port) as ams,
        support.running_gateway(config, tmp_path / "gw", flex),
    ):
        yield flex, ams


def error_reason(answer: Answer) -> tuple[int, str]:
    message = codec.decode(answer.body, answer.content_type)
    assert isinstance(message, ErrorMessage), answer.body.decode()
    return answer.status, message.message.split(":", 1)[0]


@pytest.mark.parametrize("form", [TURTLE, JSON_LD], ids=["byte-identical", "other-form"])
async def test_accepted_activation_replayed_on_the_notification_endpoint(
    pair: tuple[support.Flexibility, AmsSimulator], form: str
) -> None:
    flex, ams = pair
    f = await support.offered(flex, ams)
    n = ams.notification_for(f, intervals=2)
    assert (await ams.send(n)).answer.status == 200
    a = ams.activation_for(n, f, fraction=0.5)
    body = ams.encode(a)
    first = await ams.post(Channel.ACTIVATION, body, TURTLE)
    assert first.status == 200, first.body.decode()

    replay = body if form == TURTLE else ams.encode(a, JSON_LD)
    answer = await ams.post(Channel.NOTIFICATION, replay, form)
    assert error_reason(answer) == (422, "wrong-channel")
    error = codec.decode(answer.body, answer.content_type)
    assert isinstance(error, ErrorMessage) and error.in_reply_to == a.id

    # on its own channel the repeat still gets the first answer, applied once
    again = await ams.post(Channel.ACTIVATION, replay, form)
    assert again.status == 200
    reply = codec.decode(again.body, again.content_type)
    assert isinstance(reply, Response) and reply.in_reply_to == a.id
    assert flex.accepted_activations() == [a.id]
    assert flex.service.reservation(n.id) is not None
    assert flex.service.reservation(a.id) is None
