"""The inbound pipeline in process: the real codec and security, the real ledger and the
flexibility service's reserve handler on the simulated test microgrid; the order of the
checks and what gets recorded."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ReserveRefused
from gateway.flex.bridge import FlexReserveHandler
from gateway.north.ams_sim import reserve_notification
from gateway.north.certs import AMS_IDENTITY, OPERATOR_IDENTITY, SIGNERS
from gateway.north.codec import secured
from gateway.north.config import Role
from gateway.north.ledger import Ledger
from gateway.north.pipeline import INLINE_PARSE_BYTES, InboundPipeline, ReserveApplier
from gateway.north.service import NoFlexibility
from gateway.north.tls import Peer
from gateway.north.wire import TURTLE, Answer, Channel
from gateway.smartapi import codec
from gateway.smartapi.codec import serialize
from gateway.smartapi.encode import to_tree
from gateway.smartapi.flexibility import (
    FlexibilityForecast,
    ReserveActivation,
    ReserveNotification,
)
from gateway.smartapi.messages import ErrorMessage
from gateway.smartapi.security.graphsig import sign_tree
from gateway.smartapi.security.keys import Identity
from gateway.smartapi.tree import Lit
from gateway.smartapi.vocab import SMARTAPI
from tests.support import north as support
from tests.support.pki import PkiFiles, make_test_pki
from tests.support.waiting import until

AMS = Peer(None, Role.AMS, frozenset({AMS_IDENTITY}), via="test")
OPERATOR = Peer(None, Role.OPERATOR, frozenset({OPERATOR_IDENTITY}), via="test")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


class CountingHandler:
    """The flexibility service's reserve handler, counting the calls that reach it; can be
    told to fail."""

    def __init__(self, handler: FlexReserveHandler) -> None:
        self.handler = handler
        self.calls: list[str] = []
        self.fail_apply = False
        #: when set, notifications are applied only once it is set
        self.hold_notifications: asyncio.Event | None = None

    async def check_notification(self, notification: ReserveNotification) -> None:
        self.calls.append("check_notification")
        await self.handler.check_notification(notification)

    async def apply_notification(self, notification: ReserveNotification) -> None:
        self.calls.append("apply_notification")
        if self.hold_notifications is not None:
            await self.hold_notifications.wait()
        await self.handler.apply_notification(notification)

    async def check_activation(self, activation: ReserveActivation) -> None:
        self.calls.append("check_activation")
        await self.handler.check_activation(activation)

    async def apply_activation(self, activation: ReserveActivation) -> None:
        self.calls.append("apply_activation")
        if self.fail_apply:
            raise OSError("inverter did not answer")
        await self.handler.apply_activation(activation)


@dataclass
class Rig:
    pipeline: InboundPipeline
    handler: CountingHandler
    pki: PkiFiles
    forecast: FlexibilityForecast

    async def post(self, channel: Channel, body: bytes, peer: Peer = AMS) -> Answer:
        return await self.pipeline.handle(channel, body, TURTLE, peer)


@pytest.fixture
async def rig(pki: PkiFiles, tmp_path: Path) -> AsyncIterator[Rig]:
    config = support.gateway_config(pki, ams_port=1)
    async with (
        Ledger(tmp_path / "ledger.sqlite") as ledger,
        support.flexibility(tmp_path / "flex") as flex,
    ):
        handler = CountingHandler(flex.handler)
        pipeline = InboundPipeline(
            secured(config.signing, config.identity),
            ledger,
            ReserveApplier(handler),
            identity=config.identity,
            microgrid=support.MICROGRID,
        )
        yield Rig(pipeline, handler, pki, await flex.publish_forecast())


def error(answer: Answer) -> str:
    message = codec.decode(answer.body, answer.content_type)
    assert isinstance(message, ErrorMessage)
    return message.message.split(":")[0]


def notification(
    share: float = 0.5, forecast: FlexibilityForecast | None = None
) -> ReserveNotification:
    """Of the first two intervals of `forecast` (default: a made-up one)."""
    offer = forecast or support.forecast()
    return reserve_notification(offer, sender=AMS_IDENTITY, share=share, intervals=2)


def activation(
    f: FlexibilityForecast, n: ReserveNotification, activation_id: str
) -> ReserveActivation:
    """At the baseline of the first interval of `n`, for that interval."""
    return ReserveActivation(
        id=activation_id,
        sender=AMS_IDENTITY,
        generated_at=n.generated_at,
        microgrid=support.MICROGRID,
        notification=n.id,
        p_kw=f.intervals[0].p_kw,
        q_kvar=f.intervals[0].q_kvar,
        start=n.start,
        end=n.interval_start(1),
    )


async def test_signature_is_checked_before_the_shapes(rig: Rig) -> None:
    unsigned_and_broken = codec.encode(notification()).replace(b"smartapi:id", b"smartapi:idx")
    answer = await rig.post(Channel.NOTIFICATION, unsigned_and_broken)
    assert (answer.status, error(answer)) == (401, "signature-missing")
    assert rig.handler.calls == []


async def test_role_is_checked_before_the_business(rig: Rig) -> None:
    body = support.signed(rig.pki, "ams", notification())
    answer = await rig.post(Channel.NOTIFICATION, body, peer=OPERATOR)
    assert (answer.status, error(answer)) == (403, "role-not-allowed")
    assert rig.handler.calls == []


async def test_a_refusal_is_recorded_and_repeated_without_asking_again(rig: Rig) -> None:
    body = support.signed(rig.pki, "ams", notification(share=1.5, forecast=rig.forecast))
    first = await rig.post(Channel.NOTIFICATION, body)
    assert first.status == 422 and error(first).startswith("insufficient-"), first.body.decode()
    again = await rig.post(Channel.NOTIFICATION, body)
    assert again == first
    assert rig.handler.calls == ["check_notification", "apply_notification"]
    assert rig.pipeline.counts["repeat"] == 1


async def test_a_failing_apply_answers_500_and_stays_answered(rig: Rig) -> None:
    n = notification(forecast=rig.forecast)
    assert (await rig.post(Channel.NOTIFICATION, support.signed(rig.pki, "ams", n))).ok
    a = activation(rig.forecast, n, "act-1")
    rig.handler.fail_apply = True
    body = support.signed(rig.pki, "ams", a)
    answer = await rig.post(Channel.ACTIVATION, body)
    assert (answer.status, error(answer)) == (500, "apply-failed")
    assert "inverter did not answer" in codec.decode(answer.body, TURTLE).message  # type: ignore[union-attr]
    assert await rig.post(Channel.ACTIVATION, body) == answer
    assert rig.handler.calls.count("apply_activation") == 1


async def test_an_activation_is_not_held_behind_a_notification_being_applied(rig: Rig) -> None:
    """Activations and notifications are serialized each on their own: the control path
    does not wait for a notification's (long) decision."""
    n = notification(forecast=rig.forecast)
    assert (await rig.post(Channel.NOTIFICATION, support.signed(rig.pki, "ams", n))).ok
    rig.handler.hold_notifications = asyncio.Event()
    second = notification(share=0.1, forecast=rig.forecast)
    pending = asyncio.create_task(
        rig.post(Channel.NOTIFICATION, support.signed(rig.pki, "ams", second))
    )
    try:
        await until(lambda: rig.handler.calls.count("apply_notification") == 2, within=10)
        a = activation(rig.forecast, n, "act-2")
        body = support.signed(rig.pki, "ams", a)
        answer = await asyncio.wait_for(rig.post(Channel.ACTIVATION, body), 10)
        assert "apply_activation" in rig.handler.calls, answer.body.decode()
        assert not pending.done()
    finally:
        rig.handler.hold_notifications.set()
        await pending


async def test_big_bodies_are_parsed_off_the_event_loop(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body over the inline size is parsed and verified in a worker thread (an attack's
    padded bodies never stall the loop); a small one on the loop."""
    threads: list[str] = []
    authenticate = InboundPipeline._authenticate

    def recorded(self: InboundPipeline, *args: Any) -> Any:
        threads.append(threading.current_thread().name)
        return authenticate(self, *args)

    monkeypatch.setattr(InboundPipeline, "_authenticate", recorded)
    small = support.signed(rig.pki, "ams", notification(forecast=rig.forecast))
    assert len(small) <= INLINE_PARSE_BYTES
    padding = b"".join(b"# padding %d\n" % i for i in range(3000))
    big = support.signed(rig.pki, "ams", notification(share=0.1, forecast=rig.forecast))
    big = padding + big
    assert len(big) > INLINE_PARSE_BYTES
    assert (await rig.post(Channel.NOTIFICATION, small)).ok
    answer = await rig.post(Channel.NOTIFICATION, big)
    assert answer.ok, answer.body.decode()
    loop_thread = threading.current_thread().name
    assert threads[0] == loop_thread and threads[1] != loop_thread


async def test_reserve_rejected_carries_its_own_status(rig: Rig) -> None:
    class Conflicting(CountingHandler):
        async def check_notification(self, notification: ReserveNotification) -> None:
            raise ReserveRefused("conflicts-with-reserve", "overlaps purchase p-0")

    rig.pipeline._applier = ReserveApplier(Conflicting(rig.handler.handler))
    answer = await rig.post(Channel.NOTIFICATION, support.signed(rig.pki, "ams", notification()))
    assert (answer.status, error(answer)) == (409, "conflicts-with-reserve")


@pytest.mark.parametrize("bad_id", ["", "a b\tc", "x" * 200])
async def test_an_invalid_message_id_is_refused_without_echoing_it(rig: Rig, bad_id: str) -> None:
    """The refusal used to name the id in its answer, and building that answer failed (500)."""
    roots = to_tree(notification())
    roots[0].props = [(p, Lit(bad_id) if p == str(SMARTAPI.id) else o) for p, o in roots[0].props]
    key_id, sender, _ = SIGNERS["ams"]
    signer = Identity.from_file(key_id, sender, rig.pki.dev["ams-signing"])
    body = serialize(sign_tree(roots, signer, datetime.now(UTC)))
    answer = await rig.post(Channel.NOTIFICATION, body)
    assert (answer.status, error(answer)) == (422, "invalid-term")
    message = codec.decode(answer.body, answer.content_type)
    assert isinstance(message, ErrorMessage) and message.in_reply_to is None
    assert rig.handler.calls == []


async def test_a_logged_refusal_keeps_no_exception_alive(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """The refusal's log record carries text: the exception chain held the body's parse
    state, which pytest's capture (or any buffering handler) kept for every refusal."""
    answer = await rig.post(Channel.NOTIFICATION, b"@prefix x: <urn:x#> . x:a x:b")
    assert (answer.status, error(answer)) == (400, "malformed")
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert refusals
    assert not any(isinstance(a, BaseException) for r in refusals for a in (r.args or ()))


async def test_without_a_flexibility_service_reserve_messages_are_refused(rig: Rig) -> None:
    """A North given no reserve handler refuses, saying why, and keeps nothing."""
    rig.pipeline._applier = ReserveApplier(NoFlexibility())
    body = support.signed(rig.pki, "ams", notification(forecast=rig.forecast))
    answer = await rig.post(Channel.NOTIFICATION, body)
    assert (answer.status, error(answer)) == (422, "refused")
    assert "no flexibility service" in codec.decode(answer.body, TURTLE).message  # type: ignore[union-attr]
    assert rig.handler.calls == []
