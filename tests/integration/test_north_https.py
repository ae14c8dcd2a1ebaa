"""The CRP flow over HTTPS with mutual TLS on loopback: the gateway's North against the AMS
simulator, and every class of refusal of the inbound pipeline."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from gateway.flex.records import LABEL, RecordTables
from gateway.loader import load_config
from gateway.model import Command, CommandResult, Reading
from gateway.north.ams_sim import AmsSimulator
from gateway.north.certs import GATEWAY_IDENTITY, OPERATOR_IDENTITY
from gateway.north.config import NorthConfig, ServerConfig, TlsFiles
from gateway.north.service import North
from gateway.north.tls import client_context
from gateway.north.wire import JSON_LD, TURTLE, Answer, Channel
from gateway.points import PointTable
from gateway.smartapi import codec
from gateway.smartapi.access import ACCESS_PATH, AccessService
from gateway.smartapi.encode import der_iri
from gateway.smartapi.flexibility import (
    FlexibilityForecast,
    ReserveActivation,
    ReserveNotification,
    ReserveVerification,
)
from gateway.smartapi.messages import (
    Activity,
    Entity,
    ErrorMessage,
    Method,
    Request,
    Response,
    ValueObject,
)
from gateway.smartapi.vocab import QuantityKind
from gateway.sqlite import read_only
from tests.support import north as support
from tests.support.pki import PkiFiles, make_test_pki
from tests.support.procs import DEMO_CONFIG, free_port
from tests.support.waiting import until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@dataclass
class Pair:
    north: North
    ams: AmsSimulator
    flex: support.Flexibility


@pytest.fixture
async def pair(pki: PkiFiles, tmp_path: Path) -> AsyncIterator[Pair]:
    gw_port, ams_port = free_port(), free_port()
    config = support.gateway_config(pki, ams_port=ams_port, port=gw_port)
    async with (
        support.flexibility(tmp_path / "gw") as flex,
        support.running_ams(pki, tmp_path / "ams", gateway_port=gw_port, port=ams_port) as ams,
        support.running_gateway(config, tmp_path / "gw", flex) as north,
    ):
        yield Pair(north, ams, flex)


def decoded(answer: Answer) -> Response | ErrorMessage:
    message = codec.decode(answer.body, answer.content_type)
    assert isinstance(message, Response | ErrorMessage)
    return message


def refused(answer: Answer, status: int, reason: str) -> ErrorMessage:
    message = decoded(answer)
    assert isinstance(message, ErrorMessage), answer.body.decode()
    assert (answer.status, message.code) == (status, status), message.message
    assert message.message.startswith(f"{reason}: "), message.message
    return message


async def reserved(pair: Pair) -> tuple[FlexibilityForecast, ReserveNotification]:
    """Forecast sent and received, notification for the first two intervals accepted by
    the flexibility service: the state activations need."""
    got = await support.offered(pair.flex, pair.ams)
    n = pair.ams.notification_for(got, intervals=2)
    sent = await pair.ams.send(n)
    assert sent.answer.status == 200, sent.answer.body.decode()
    return got, n


async def test_full_crp_cycle(pair: Pair) -> None:
    f, n = await reserved(pair)
    # received; the acceptance publishes a fresh forecast, which may have arrived already
    assert f in pair.ams.messages(Channel.FORECAST)
    a = pair.ams.activation_for(n, f, fraction=0.5)
    sent = await pair.ams.send(a)
    reply = decoded(sent.answer)
    assert isinstance(reply, Response)
    assert reply.in_reply_to == a.id
    assert sent.latency_ms > 0
    assert pair.flex.accepted_activations() == [a.id]
    stored = pair.flex.activation(a.id)
    assert stored is not None and stored.activation.p_kw == pytest.approx(a.p_kw)
    # the baseline less half the reserved down band
    band = n.intervals[0].p_lower_kw
    assert band > 0 and a.p_kw == pytest.approx(f.intervals[0].p_kw - 0.5 * band)

    v = support.verification(a.id)
    assert await pair.north.send(v)
    got = await asyncio.wait_for(pair.ams.next_message(Channel.VERIFICATION), 10)
    assert isinstance(got, ReserveVerification)
    assert got == v
    await support.drained(pair.north)
    stats = await pair.north.stats()
    received = pair.ams.messages(Channel.FORECAST) + pair.ams.messages(Channel.VERIFICATION)
    assert stats.outbox.delivered == len(received), [type(m).__name__ for m in received]
    assert [m.id for m in received].count(v.id) == 1
    assert stats.inbound["accepted"] == 2


async def test_json_ld_request_gets_a_json_ld_answer(pair: Pair) -> None:
    f, n = await reserved(pair)
    a = pair.ams.activation_for(n, f)
    answer = await pair.ams.post(Channel.ACTIVATION, pair.ams.encode(a, JSON_LD), JSON_LD)
    assert answer.status == 200
    assert answer.content_type.startswith(JSON_LD)
    assert isinstance(decoded(answer), Response)


async def test_repeat_gets_the_first_answer_and_applies_once(pair: Pair) -> None:
    f, n = await reserved(pair)
    a = pair.ams.activation_for(n, f)
    body = pair.ams.encode(a)
    first, again, concurrent = (
        await pair.ams.post(Channel.ACTIVATION, body, TURTLE),
        await pair.ams.post(Channel.ACTIVATION, body, TURTLE),
        await asyncio.gather(*(pair.ams.post(Channel.ACTIVATION, body, TURTLE) for _ in range(3))),
    )
    assert first.status == 200
    assert again == first
    assert all(c == first for c in concurrent)
    assert pair.flex.accepted_activations() == [a.id]
    counts = (await pair.north.stats()).inbound
    assert counts["repeat"] == 4


async def test_same_message_signed_again_is_a_repeat(pair: Pair) -> None:
    f, n = await reserved(pair)
    a = pair.ams.activation_for(n, f)
    first, second = pair.ams.encode(a), pair.ams.encode(a)
    assert first != second  # a fresh signature each time
    answers = [await pair.ams.post(Channel.ACTIVATION, b, TURTLE) for b in (first, second)]
    assert answers[0].status == 200
    assert answers[1] == answers[0]
    assert pair.flex.accepted_activations() == [a.id]


async def test_same_id_with_other_content_is_refused(pair: Pair) -> None:
    f, n = await reserved(pair)
    a = pair.ams.activation_for(n, f, fraction=0.5)
    assert (await pair.ams.send(a)).answer.status == 200
    changed = ReserveActivation(**{**_fields(a), "p_kw": a.p_kw - 1.0})  # type: ignore[arg-type]
    body = pair.ams.encode(changed)
    refused(await pair.ams.post(Channel.ACTIVATION, body, TURTLE), 409, "id-conflict")
    # the ledger outlives the process
    config, state_dir = pair.north.config, pair.north.state_dir
    async with support.running_gateway(
        config.model_copy(update={"server": _free(config)}), state_dir
    ) as restarted:
        assert restarted.server is not None
        pair.ams.config = replace(
            pair.ams.config, gateway_url=f"https://127.0.0.1:{restarted.server.port}"
        )
        refused(await pair.ams.post(Channel.ACTIVATION, body, TURTLE), 409, "id-conflict")
        # the flexibility records outlive it too
        with read_only(state_dir / "flex.sqlite", LABEL) as db:
            kept = RecordTables(db).activation(a.id)
        assert kept is not None and kept.activation.p_kw == pytest.approx(a.p_kw)


def _free(config: NorthConfig) -> ServerConfig:
    return config.server.model_copy(update={"port": free_port()})


def _fields(obj: object) -> dict[str, object]:
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}  # type: ignore[attr-defined]


async def test_malformed_body(pair: Pair) -> None:
    answer = await pair.ams.post(Channel.ACTIVATION, b"this is not turtle <<<", TURTLE)
    refused(answer, 400, "malformed")


async def test_unsupported_media_type(pair: Pair) -> None:
    answer = await pair.ams.post(Channel.ACTIVATION, b"<a/>", "application/xml")
    refused(answer, 415, "unsupported-media-type")


async def test_early_refusal_closes_the_connection_and_says_so(pki: PkiFiles, pair: Pair) -> None:
    """A refusal before the body is read closes the connection; without `Connection: close`
    a keep-alive client sent its next request on it and lost it."""
    assert pair.north.server is not None
    url = f"https://127.0.0.1:{pair.north.server.port}{Channel.ACTIVATION.path}"
    ctx = client_context(support.tls_files(pki, "ams"))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=1)) as session:
        for body, ctype in ((b"<a/>", "application/xml"), (b"#" * (256 * 1024 + 1), TURTLE)):
            async with session.post(url, data=body, headers={"Content-Type": ctype}) as r:
                assert r.status in (413, 415)
                assert r.headers.get("Connection", "").lower() == "close"
            async with session.post(url, data=b"<<<", headers={"Content-Type": TURTLE}) as r:
                assert r.status == 400  # the next request on a fresh connection


async def test_oversize_body(pair: Pair) -> None:
    answer = await pair.ams.post(Channel.ACTIVATION, b"#" * (256 * 1024 + 1), TURTLE)
    refused(answer, 413, "too-large")


async def test_more_statements_than_the_limit(pki: PkiFiles, tmp_path: Path) -> None:
    """Signed and small enough for the body limit, but padded with triples: refused while
    parsing, before the signature is checked; the same message unpadded gets to its business."""
    gw_port, ams_port = free_port(), free_port()
    config = support.gateway_config(pki, ams_port=ams_port, port=gw_port, max_statements=500)
    async with (
        support.flexibility(tmp_path / "gw") as flex,
        support.running_ams(pki, tmp_path / "ams", gateway_port=gw_port, port=ams_port) as ams,
        support.running_gateway(config, tmp_path / "gw", flex),
    ):
        f = support.forecast()
        a = ams.activation_for(ams.notification_for(f), f)
        body = ams.encode(a)
        padding = b"".join(b'<urn:x:s> <urn:x:p> "%d" .\n' % i for i in range(600))
        answer = await ams.post(Channel.ACTIVATION, body + padding, TURTLE)
        message = refused(answer, 413, "too-many-statements")
        assert "more than 500 RDF statements" in message.message
        answer = await ams.post(Channel.ACTIVATION, body, TURTLE)
        refused(answer, 422, "unknown-notification")
        assert flex.accepted_activations() == []


async def test_shape_violation_names_the_term(pki: PkiFiles, pair: Pair) -> None:
    f, n = await reserved(pair)
    a = pair.ams.activation_for(n, f)
    broken = support.signed(pki, "ams", a, drop="http://qudt.org/schema/qudt/hasUnit")
    answer = await pair.ams.post(Channel.ACTIVATION, broken, TURTLE)
    error = refused(answer, 422, "missing-term")
    assert "hasUnit" in error.message
    assert pair.flex.accepted_activations() == []


async def test_message_on_the_wrong_endpoint(pair: Pair) -> None:
    f, n = await reserved(pair)
    a = pair.ams.activation_for(n, f)
    answer = await pair.ams.post(Channel.NOTIFICATION, pair.ams.encode(a), TURTLE)
    refused(answer, 422, "wrong-channel")
    assert pair.flex.accepted_activations() == []


async def test_sender_the_certificate_may_not_speak_for(pki: PkiFiles, pair: Pair) -> None:
    """Well signed by the operator's key, but sent over the AMS's TLS connection."""
    f, n = await reserved(pair)
    a = pair.ams.activation_for(n, f)
    as_operator = ReserveActivation(**{**_fields(a), "sender": OPERATOR_IDENTITY})  # type: ignore[arg-type]
    body = support.signed(pki, "operator", as_operator)
    answer = await pair.ams.post(Channel.ACTIVATION, body, TURTLE)
    refused(answer, 403, "sender-not-allowed")
    assert pair.flex.accepted_activations() == []


async def test_tampered_message_is_refused(pair: Pair) -> None:
    f, n = await reserved(pair)
    a = pair.ams.activation_for(n, f, fraction=0.5)
    a = replace(a, p_kw=round(a.p_kw, 1))  # one decimal: the literal to tamper with is known
    body = pair.ams.encode(a).decode()
    p = repr(a.p_kw)
    assert body.count(f"rdf:value {a.p_kw:.1f}E0") == 1, body
    tampered = body.replace(f"rdf:value {a.p_kw:.1f}E0", "rdf:value 1.0E0")
    answer = await pair.ams.post(Channel.ACTIVATION, tampered.encode(), TURTLE)
    refused(answer, 401, "signature-invalid")
    assert p and pair.flex.accepted_activations() == []


async def test_unsigned_message_is_refused(pair: Pair) -> None:
    f, n = await reserved(pair)
    answer = await pair.ams.post(
        Channel.ACTIVATION, codec.encode(pair.ams.activation_for(n, f)), TURTLE
    )
    refused(answer, 401, "signature-missing")
    assert pair.flex.accepted_activations() == []


async def test_signature_by_an_untrusted_key_is_refused(pki: PkiFiles, pair: Pair) -> None:
    """The gateway's own key is not in its trust file."""
    f, n = await reserved(pair)
    body = support.signed(pki, "gateway", pair.ams.activation_for(n, f))
    refused(await pair.ams.post(Channel.ACTIVATION, body, TURTLE), 403, "untrusted-signer")


async def test_key_speaking_for_another_sender_is_refused(pki: PkiFiles, pair: Pair) -> None:
    f, n = await reserved(pair)
    a = pair.ams.activation_for(n, f)
    spoofed = ReserveActivation(**{**_fields(a), "sender": OPERATOR_IDENTITY})  # type: ignore[arg-type]
    body = support.signed(pki, "ams", spoofed)
    refused(await pair.ams.post(Channel.ACTIVATION, body, TURTLE), 403, "untrusted-signer")


async def test_stale_message_is_refused(pair: Pair) -> None:
    f, n = await reserved(pair)
    a = pair.ams.activation_for(n, f)
    old = ReserveActivation(
        **{**_fields(a), "generated_at": datetime.now(UTC) - timedelta(minutes=10)}  # type: ignore[arg-type]
    )
    error = refused(
        await pair.ams.post(Channel.ACTIVATION, pair.ams.encode(old), TURTLE), 409, "stale"
    )
    assert "stale" in error.message


async def test_other_microgrid(pair: Pair) -> None:
    f, n = await reserved(pair)
    a = pair.ams.activation_for(n, f)
    other = ReserveActivation(**{**_fields(a), "microgrid": "elsewhere"})  # type: ignore[arg-type]
    refused(
        await pair.ams.post(Channel.ACTIVATION, pair.ams.encode(other), TURTLE),
        422,
        "wrong-microgrid",
    )


async def test_unknown_notification(pair: Pair) -> None:
    f, n = await reserved(pair)
    a = pair.ams.activation_for(n, f)
    stray = ReserveActivation(**{**_fields(a), "notification": "no-such-notification"})  # type: ignore[arg-type]
    answer = await pair.ams.post(Channel.ACTIVATION, pair.ams.encode(stray), TURTLE)
    refused(answer, 422, "unknown-notification")
    assert pair.flex.accepted_activations() == []


async def test_set_point_outside_the_reserved_band(pair: Pair) -> None:
    f, n = await reserved(pair)
    a = pair.ams.activation_for(n, f, fraction=support.fraction_beyond_band(n))
    error = refused((await pair.ams.send(a)).answer, 422, "outside-band")
    assert "band" in error.message, error.message
    assert pair.flex.accepted_activations() == []


async def test_activation_outside_the_reserved_window(pair: Pair) -> None:
    f, n = await reserved(pair)
    a = pair.ams.activation_for(n, f)
    late = ReserveActivation(
        **{  # type: ignore[arg-type]
            **_fields(a),
            "start": n.interval_start(len(n.intervals)),
            "end": n.interval_start(len(n.intervals)) + timedelta(minutes=5),
        }
    )
    refused(
        await pair.ams.post(Channel.ACTIVATION, pair.ams.encode(late), TURTLE),
        422,
        "outside-window",
    )


async def test_activation_that_already_ended(pair: Pair) -> None:
    f, n = await reserved(pair)
    a = pair.ams.activation_for(n, f)
    now = datetime.now(UTC)
    ended = replace(a, start=now - timedelta(minutes=30), end=now - timedelta(minutes=20))
    error = refused((await pair.ams.send(ended)).answer, 422, "outside-window")
    assert "already over" in error.message, error.message
    assert pair.flex.accepted_activations() == []


async def test_notification_beyond_offered_flexibility(pair: Pair) -> None:
    got = await support.offered(pair.flex, pair.ams)
    greedy = pair.ams.notification_for(got, share=1.2)
    answer = (await pair.ams.send(greedy)).answer
    message = decoded(answer)
    assert isinstance(message, ErrorMessage) and answer.status == 422, answer.body.decode()
    reason = message.message.split(":")[0]
    assert reason.startswith("insufficient-") or reason == "coupling-point-limit", message
    assert "nothing was held" in message.message
    assert pair.flex.service.reservation(greedy.id) is None


async def test_gateway_answers_are_stamped_with_its_identity(pair: Pair) -> None:
    answer = await pair.ams.post(Channel.ACTIVATION, b"garbage", TURTLE)
    error = refused(answer, 400, "malformed")
    assert error.sender == pair.north.config.identity
    assert error.generated_at <= datetime.now(UTC)


async def test_access_endpoint_is_mounted_behind_the_allow_list(
    pki: PkiFiles, tmp_path: Path
) -> None:
    config = load_config(DEMO_CONFIG)
    table = PointTable(config)
    table.update([Reading(point="bess1.soc", value=55.0, unit="PERCENT")])

    async def no_writes(command: Command) -> CommandResult:
        raise AssertionError(f"unexpected write {command}")

    access = AccessService(config=config, table=table, write=no_writes, sender=GATEWAY_IDENTITY)
    north_config = support.gateway_config(pki, ams_port=free_port())
    read = Request(
        id="read-1",
        sender=OPERATOR_IDENTITY,
        generated_at=datetime.now(UTC),
        activities=(
            Activity(
                method=Method.READ,
                entities=(
                    Entity(
                        iri=der_iri(support.MICROGRID, "bess1"),
                        value_objects=(ValueObject(quantity=QuantityKind.STATE_OF_CHARGE),),
                    ),
                ),
            ),
        ),
    )
    async with support.running_gateway(north_config, tmp_path / "gw", access=access) as north:
        assert north.server is not None
        url = f"https://127.0.0.1:{north.server.port}{ACCESS_PATH}"
        answers = {}
        for who, (cert, key) in {
            "operator": pki.pair("operator"),
            "intruder": pki.intruder,
        }.items():
            ctx = client_context(TlsFiles(ca=(pki.ca,), cert=cert, key=key))
            async with (
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session,
                session.post(
                    url,
                    data=support.signed(pki, "operator", read),
                    headers={"Content-Type": TURTLE},
                ) as r,
            ):
                answers[who] = Answer(r.status, r.headers["Content-Type"], await r.read())
    reply = decoded(answers["operator"])
    assert answers["operator"].status == 200, answers["operator"].body.decode()
    assert isinstance(reply, Response)
    (vo,) = reply.activities[0].entities[0].value_objects
    assert (vo.point, vo.value) == ("bess1.soc", 55.0)
    refused(answers["intruder"], 403, "peer-not-allowed")


async def test_a_peer_hanging_up_before_the_handshake_is_no_warning(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    """A port probe (connect, close) is logged at INFO; a refused certificate stays a
    WARNING (tests/faults/test_north_faults.py)."""
    caplog.set_level(logging.INFO, logger="gateway.north.server")
    assert pair.north.server is not None
    _, writer = await asyncio.open_connection("127.0.0.1", pair.north.server.port)
    writer.close()
    await writer.wait_closed()
    await until(lambda: any("the peer closed" in r.getMessage() for r in caplog.records))
    handshakes = [r for r in caplog.records if "TLS handshake from" in r.getMessage()]
    assert [r.levelno for r in handshakes] == [logging.INFO], handshakes
    await reserved(pair)  # still serving
