"""Messages built by the published Smart API 1.1 library, read by the gateway's access
endpoint core (real opener with the 1.1 scheme, real point table and controller): Read,
Write and TimeSeries write, in Turtle, JSON-LD and N-Triples, unsigned, signed and
encrypted the 1.1 way. Every case compares what the gateway read with what the library
was told to send, field by field."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from rdflib import Literal

from gateway.config import LoadedConfig
from gateway.errors import SignatureInvalid, WrongDatatype
from gateway.north.codec import answer_text
from gateway.points import PointTable
from gateway.smartapi.access import AccessService
from gateway.smartapi.codec import parse
from gateway.smartapi.decode import message_node
from gateway.smartapi.interop import derived_id, read_envelope
from gateway.smartapi.messages import ErrorMessage, Method, Notification, Request, Response
from gateway.smartapi.peers import Dialect, PeerProfile, Profiles
from gateway.smartapi.security.profile import InboundSecurity, OutboundSecurity
from gateway.smartapi.vocab import SMARTAPI, QuantityKind
from tests.interop.conftest import GATEWAY, PEER, PEER_TZ, Keys
from tests.interop.peer import Body, LibraryPeer
from tests.unit.smartapi.controller import TableController

BESS = "urn:mgms:microgrid:demo-microgrid:der:bess1"
SA = "http://smart-api.io/ontology/1.0/smartapi#"
NASA_KW = "http://data.nasa.gov/qudt/owl/unit#Kilowatt"
NASA_PERCENT = "http://data.nasa.gov/qudt/owl/unit#Percent"
FORMATS = ["turtle", "json-ld", "nt"]


@dataclass
class Rig:
    access: AccessService
    controller: TableController


def rig(
    config: LoadedConfig, table: PointTable, keys: Keys, profiles: Profiles, strict: bool
) -> Rig:
    controller = TableController(table)
    opener = InboundSecurity(
        trust=keys.trust, identity=keys.identity, require_signature=strict, profiles=profiles
    )
    access = AccessService(
        config=config,
        table=table,
        write=controller.write,
        sender=GATEWAY,
        opener=opener,
        sealer=OutboundSecurity(keys.identity, trust=keys.trust),
        profiles=profiles,
    )
    return Rig(access, controller)


@pytest.fixture
def signed_only(
    demo_config: LoadedConfig, table: PointTable, keys: Keys, profiles: Profiles
) -> Rig:
    """The access endpoint as deployed: signatures required."""
    return rig(demo_config, table, keys, profiles, strict=True)


@pytest.fixture
def lenient(demo_config: LoadedConfig, table: PointTable, keys: Keys, profiles: Profiles) -> Rig:
    """Signatures not required (a development setup), to see the envelope alone."""
    return rig(demo_config, table, keys, profiles, strict=False)


def opened(body: Body, profiles: Profiles, keys: Keys) -> Request:
    """The request as the gateway reads it (1.1 scheme opened, envelope read, decoded)."""
    opener = InboundSecurity(
        trust=keys.trust, identity=keys.identity, require_signature=False, profiles=profiles
    )
    graph = opener.open(body.body, body.content_type)
    msg = decode_prepared(graph)
    assert isinstance(msg, Request)
    return msg


def decode_prepared(graph: object) -> object:
    from gateway.smartapi.codec import prepare
    from gateway.smartapi.decode import decode_graph

    return decode_graph(prepare(graph))  # type: ignore[arg-type]


def write_spec(**extra: object) -> dict[str, object]:
    return {
        "method": "write",
        "sender": PEER,
        "entity": BESS,
        "values": [{"quantity": SA + "ActivePower", "unit": NASA_KW, "value": -20.0}],
        **extra,
    }


# -- the envelope ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_write_is_read_field_by_field(
    library: LibraryPeer, keys: Keys, profiles: Profiles, fmt: str
) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    body = library.request(**write_spec(format=fmt, id=4711))
    if fmt != "turtle":  # the library's label for JSON-LD and N-Triples
        assert body.content_type.startswith("text/plain")
    msg = opened(body, profiles, keys)
    assert msg.id == "4711"  # the library's xsd:integer id
    assert msg.sender == PEER
    # a naive datetime.now() of a clock in PEER_TZ, read in PEER_TZ: the true instant
    assert before <= msg.generated_at <= datetime.now(UTC) + timedelta(seconds=1)
    (activity,) = msg.activities
    assert activity.method is Method.WRITE
    (entity,) = activity.entities
    assert entity.iri == BESS
    (vo,) = entity.value_objects
    assert (vo.quantity, vo.unit, vo.value) == (QuantityKind.ACTIVE_POWER, "KiloW", -20.0)


def test_envelope_of_a_modern_peer_stays_strict(library: LibraryPeer, keys: Keys) -> None:
    """The tolerance is the 1.1 peer's only: a sender not configured so is checked as
    before (integer id refused, and a naive time)."""
    body = library.request(**write_spec(id=1))
    with pytest.raises(WrongDatatype, match="xsd:string"):
        opened(body, Profiles(), keys)
    graph = parse(body.body, body.content_type)
    node = message_node(graph)
    graph.set((node, SMARTAPI.id, Literal("m-1")))
    with pytest.raises(WrongDatatype, match="no timezone"):
        decode_prepared(graph)


def test_peer_time_zone_is_the_configured_one(library: LibraryPeer, keys: Keys) -> None:
    """A fixed naive time from the peer means that wall-clock time in its zone."""
    body = library.request(**write_spec(id=2, generated_at="2026-07-01T12:00:00"))
    graph = parse(body.body, body.content_type)
    for zone, hour in (("UTC", 12), (PEER_TZ, 9)):  # Helsinki is UTC+3 in July
        g = parse(body.body, body.content_type)
        read_envelope(g, body.body, Profiles({PEER: PeerProfile(Dialect.SMARTAPI_11, zone)}))
        msg = decode_prepared(g)
        assert isinstance(msg, Request)
        assert msg.generated_at == datetime(2026, 7, 1, hour, tzinfo=UTC)
    assert graph is not None
    assert datetime(2026, 7, 1, 12, tzinfo=ZoneInfo(PEER_TZ)).utcoffset() == timedelta(hours=3)


def test_message_without_id_gets_the_body_digest(
    library: LibraryPeer, keys: Keys, profiles: Profiles
) -> None:
    body = library.request(**write_spec())  # the library's default: no smartapi:id
    assert b"smartapi#id" not in body.body and b":id " not in body.body
    msg = opened(body, profiles, keys)
    assert msg.id == derived_id(body.body)
    again = library.request(**write_spec())
    assert opened(again, profiles, keys).id != msg.id  # another message, another id


# -- the access endpoint ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
async def test_read_request_is_answered(
    library: LibraryPeer,
    keys: Keys,
    lenient: Rig,
    fmt: str,
) -> None:
    svc, controller = lenient.access, lenient.controller
    spec = {
        "method": "read",
        "sender": PEER,
        "entity": BESS,
        "values": [{"quantity": SA + "StateOfCharge"}],
        "format": fmt,
        "id": 77,
    }
    body = library.request(**spec)
    reply = await svc.handle(body.body, body.content_type, "ams")
    assert reply.status == 200, reply.body[:400]
    # the answer is in the peer's forms; the gateway reads its own answer back too
    answer = library.parse("response", reply.body, reply.content_type)
    assert answer["errors"] == []
    (activity,) = answer["activities"]
    (entity,) = activity["entities"]
    assert entity["iri"] == BESS and entity["class"] == "Device"
    (vo,) = entity["values"]
    assert vo["value"] == 55.0
    assert vo["unit"] == NASA_PERCENT
    assert vo["quantity"] == SA + "StateOfCharge"
    assert controller.sent == []


async def test_signed_write_is_applied_once(
    library: LibraryPeer,
    keys: Keys,
    signed_only: Rig,
) -> None:
    svc, controller = signed_only.access, signed_only.controller
    body = library.request(**write_spec(sign_key=str(keys.peer_key)))
    assert body.content_type.startswith("multipart/related")
    assert b"\r\r\n" in body.body  # the library's part encoding
    reply = await svc.handle(body.body, body.content_type, "ams")
    assert reply.status == 200, reply.body[:600]
    assert [(c.point, c.value) for c in controller.sent] == [("bess1.p_set", -20.0)]
    again = await svc.handle(body.body, body.content_type, "ams")
    assert again.status == 409  # replayed: the same body has the same (derived) id
    assert len(controller.sent) == 1
    # the answer is signed the 1.1 way and the library verifies it with our key
    answer = library.parse(
        "response", reply.body, reply.content_type, verify_key=str(keys.gateway_pub)
    )
    assert answer["checks"] and all(c["hash_ok"] and c["signature_ok"] for c in answer["checks"])
    (activity,) = answer["activities"]
    (entity,) = activity["entities"]
    (vo,) = entity["values"]
    assert (vo["value"], vo["unit"], vo["quantity"]) == (-20.0, NASA_KW, SA + "ActivePower")


async def test_tampered_signed_write_is_refused(
    library: LibraryPeer,
    keys: Keys,
    signed_only: Rig,
) -> None:
    svc, controller = signed_only.access, signed_only.controller
    body = library.request(**write_spec(sign_key=str(keys.peer_key)))
    tampered = body.body.replace(b"-2e+01", b"-9e+01")
    assert tampered != body.body
    reply = await svc.handle(tampered, body.content_type, "ams")
    assert reply.status == 401 and b"hashCode" in reply.body
    assert controller.sent == []


async def test_signed_by_another_key_is_refused(
    library: LibraryPeer,
    keys: Keys,
    signed_only: Rig,
) -> None:
    svc, controller = signed_only.access, signed_only.controller
    body = library.request(**write_spec(sign_key=str(keys.gateway_key)))
    reply = await svc.handle(body.body, body.content_type, "ams")
    assert reply.status == 401 and b"does not verify" in reply.body
    assert controller.sent == []


async def test_unsigned_write_is_refused_when_signatures_are_required(
    library: LibraryPeer,
    keys: Keys,
    signed_only: Rig,
) -> None:
    svc, controller = signed_only.access, signed_only.controller
    body = library.request(**write_spec(id=5))
    reply = await svc.handle(body.body, body.content_type, "ams")
    assert reply.status == 401 and controller.sent == []


async def test_encrypted_signed_write_is_applied_and_answered_encrypted(
    library: LibraryPeer,
    keys: Keys,
    signed_only: Rig,
) -> None:
    svc, controller = signed_only.access, signed_only.controller
    body = library.request(
        **write_spec(sign_key=str(keys.peer_key), encrypt_for=str(keys.gateway_pub))
    )
    assert b"Kilowatt" not in body.body  # the activity and its device travel encrypted
    reply = await svc.handle(body.body, body.content_type, "ams")
    assert reply.status == 200, reply.body[:600]
    assert [(c.point, c.value) for c in controller.sent] == [("bess1.p_set", -20.0)]
    assert b"Kilowatt" not in reply.body  # answered encrypted for the peer
    answer = library.parse(
        "response",
        reply.body,
        reply.content_type,
        verify_key=str(keys.gateway_pub),
        decrypt_key=str(keys.peer_key),
    )
    assert answer["checks"] and all(c["hash_ok"] and c["signature_ok"] for c in answer["checks"])
    (activity,) = answer["activities"]
    (vo,) = activity["entities"][0]["values"]
    assert (vo["value"], vo["unit"]) == (-20.0, NASA_KW)


def test_encrypted_for_someone_else_does_not_open(
    library: LibraryPeer, keys: Keys, profiles: Profiles
) -> None:
    body = library.request(
        **write_spec(sign_key=str(keys.peer_key), encrypt_for=str(keys.peer_pub))
    )
    with pytest.raises(Exception, match="decrypt"):
        opened(body, profiles, keys)


async def test_refusal_is_an_error_the_library_reads(
    library: LibraryPeer,
    keys: Keys,
    lenient: Rig,
) -> None:
    svc, controller = lenient.access, lenient.controller
    body = library.request(
        **write_spec(
            id=9, values=[{"quantity": SA + "ActivePower", "unit": NASA_KW, "value": 900.0}]
        )
    )
    reply = await svc.handle(body.body, body.content_type, "ams")
    assert reply.status == 422 and controller.sent == []
    graph = parse(reply.body, reply.content_type)  # in the peer's forms: integer id
    read_envelope(graph, reply.body, Profiles({GATEWAY: _v11()}))
    mine = decode_prepared(graph)
    assert isinstance(mine, ErrorMessage) and mine.in_reply_to == "9" and mine.code == 422
    theirs = library.parse("error", reply.body, reply.content_type)
    assert (theirs["code"], theirs["message"]) == (422, mine.message)
    assert "above maximum" in theirs["message"]
    assert theirs["generated_by"] == GATEWAY
    assert theirs["id"] == int(mine.id)


def test_hash_must_match_in_some_encoding(
    library: LibraryPeer, keys: Keys, profiles: Profiles
) -> None:
    """The library's transfer decoding is tried only against the hash: a part changed in
    transit fails in both."""
    body = library.request(**write_spec(sign_key=str(keys.peer_key)))
    broken = body.body.replace(b"-2e+01", b"-3e+01")
    assert broken != body.body
    with pytest.raises(SignatureInvalid, match="hashCode"):
        opened(Body(broken, body.content_type), profiles, keys)


def test_response_from_the_library_is_read(library: LibraryPeer) -> None:
    """An AMS on the library answers our forecasts with its Response."""
    body = library.message(kind="response", sender=PEER, id=31)
    g = parse(body.body, body.content_type)
    read_envelope(g, body.body, Profiles({PEER: _v11()}))
    msg = decode_prepared(g)
    assert isinstance(msg, Response) and msg.id == "31" and msg.sender == PEER


def _v11() -> object:
    return PeerProfile(Dialect.SMARTAPI_11, "UTC")


SECURITY = ["unsigned", "signed", "encrypted"]
MEDIA_TYPES = {
    "turtle": "text/turtle",
    "json-ld": "application/ld+json",
    "nt": "application/n-triples",
}


def secured(keys: Keys, security: str) -> dict[str, object]:
    if security == "unsigned":
        return {}
    extra: dict[str, object] = {"sign_key": str(keys.peer_key)}
    if security == "encrypted":
        extra["encrypt_for"] = str(keys.gateway_pub)
    return extra


@pytest.mark.parametrize("security", SECURITY)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("method", ["read", "write", "series"])
async def test_every_kind_format_and_security(
    library: LibraryPeer, keys: Keys, lenient: Rig, method: str, fmt: str, security: str
) -> None:
    """The matrix: Read, Write and TimeSeries write; Turtle, JSON-LD, N-Triples; unsigned,
    signed and encrypted the 1.1 way. Each is read as sent and answered so the library
    reads the answer (verifying and decrypting it where the request was so)."""
    svc, controller = lenient.access, lenient.controller
    taken: list[tuple[str, object]] = []

    class Sink:
        def check(self, der: str, series: object) -> None:
            pass

        def update(self, der: str, series: object) -> None:
            taken.append((der, series))

    svc.forecasts = Sink()  # type: ignore[assignment]
    # the library writes multipart only with media type names; with rdflib's names it
    # labels a single part text/plain
    wire = fmt if security == "unsigned" else MEDIA_TYPES[fmt]
    spec: dict[str, object] = {"sender": PEER, "entity": BESS, "format": wire, "id": 1000}
    if method == "read":
        spec |= {"method": "read", "values": [{"quantity": SA + "StateOfCharge"}]}
    elif method == "write":
        spec |= write_spec()
    else:
        spec |= {
            "method": "write",
            "series": {
                "quantity": SA + "ActivePower",
                "unit": NASA_KW,
                "start": "2026-06-02T12:00:00",
                "step": "PT15M",
                "step_s": 900,
                "values": [1.5, -2.5, 3.25],
            },
        }
    body = library.request(**spec, **secured(keys, security))
    reply = await svc.handle(body.body, body.content_type, "ams")
    assert reply.status == 200, reply.body[:600]
    if method == "write":
        assert [(c.point, c.value) for c in controller.sent] == [("bess1.p_set", -20.0)]
    else:
        assert controller.sent == []
    if method == "series":
        ((der, series),) = taken
        assert der == "bess1"
        assert series.values == (1.5, -2.5, 3.25)  # type: ignore[attr-defined]
        assert series.unit == "KiloW"  # type: ignore[attr-defined]
        # 12:00 in Helsinki (UTC+3 in June)
        assert series.start == datetime(2026, 6, 2, 9, tzinfo=UTC)  # type: ignore[attr-defined]
        assert series.step == timedelta(minutes=15)  # type: ignore[attr-defined]
    keys_for_parse: dict[str, str] = {}
    if security != "unsigned":
        keys_for_parse["verify_key"] = str(keys.gateway_pub)
    if security == "encrypted":
        keys_for_parse["decrypt_key"] = str(keys.peer_key)
        assert b"Kilowatt" not in reply.body and b"Percent" not in reply.body
    answer = library.parse("response", reply.body, reply.content_type, **keys_for_parse)
    if security != "unsigned":
        assert answer["checks"]
        assert all(c["hash_ok"] and c["signature_ok"] for c in answer["checks"])
    assert answer["generated_by"] == GATEWAY and isinstance(answer["id"], int)
    answered_at = datetime.fromisoformat(answer["generated_at"])
    assert abs(answered_at - datetime.now(UTC)) < timedelta(minutes=1)
    (activity,) = answer["activities"]
    (entity,) = activity["entities"]
    assert entity["iri"] == BESS
    if method == "read":
        (vo,) = entity["values"]
        assert (vo["value"], vo["unit"], vo["quantity"]) == (
            55.0,
            NASA_PERCENT,
            SA + "StateOfCharge",
        )
    elif method == "write":
        (vo,) = entity["values"]
        assert (vo["value"], vo["unit"], vo["quantity"]) == (-20.0, NASA_KW, SA + "ActivePower")
    else:
        (ts,) = activity["series"]
        assert ts["values"] == [1.5, -2.5, 3.25] and ts["unit"] == NASA_KW
        assert ts["start"] == "2026-06-02T09:00:00+00:00"


def test_notification_from_the_library_is_read(
    library: LibraryPeer, keys: Keys, profiles: Profiles
) -> None:
    """A library Notification, signed the 1.1 way: opened, verified and read field by field."""
    body = library.message(
        kind="notification",
        sender=PEER,
        id=71,
        sign_key=str(keys.peer_key),
        activities=[
            {
                "method": "write",
                "entity": BESS,
                "values": [{"quantity": SA + "ActivePower", "unit": NASA_KW, "value": 3.5}],
            }
        ],
    )
    opener = InboundSecurity(trust=keys.trust, identity=keys.identity, profiles=profiles)
    graph = opener.open(body.body, body.content_type)
    assert opener.last_signer is not None and opener.last_signer.sender == PEER
    msg = decode_prepared(graph)
    assert isinstance(msg, Notification) and msg.id == "71" and msg.sender == PEER
    ((entity,),) = [a.entities for a in msg.activities]
    (vo,) = entity.value_objects
    assert (entity.iri, vo.quantity, vo.unit, vo.value) == (
        BESS,
        QuantityKind.ACTIVE_POWER,
        "KiloW",
        3.5,
    )


def test_error_from_the_library_is_reported(library: LibraryPeer) -> None:
    """An AMS on the library refuses with a Response carrying a smartapi:error: the
    delivery error the operator sees says what it said."""
    body = library.message(
        kind="error", sender=PEER, id=5, code=409, message="forecast refused: market closed"
    )
    assert answer_text(body.body, body.content_type) == "409: forecast refused: market closed"


async def test_encrypted_request_we_cannot_answer_encrypted_changes_nothing(
    library: LibraryPeer, keys: Keys, demo_config: LoadedConfig, table: PointTable
) -> None:
    """A 1.1 sender whose key we do not hold (signatures not required, a development
    setup) sends an encrypted Write: refused before it is applied, the refusal plain."""
    stranger = "https://stranger.example/smartapi"
    profiles = Profiles({stranger: PeerProfile(Dialect.SMARTAPI_11, PEER_TZ)})
    r = rig(demo_config, table, keys, profiles, strict=False)
    body = library.request(**write_spec(sender=stranger, id=81, encrypt_for=str(keys.gateway_pub)))
    reply = await r.access.handle(body.body, body.content_type, "ams")
    assert reply.status == 403 and b"no trusted RSA key" in reply.body
    assert r.controller.sent == []


async def test_a_wrong_zone_in_the_config_shows_as_a_stale_message(
    library: LibraryPeer, keys: Keys, demo_config: LoadedConfig, table: PointTable
) -> None:
    """The peer's clock runs in Helsinki; configured as UTC its naive times lie two or
    three hours ahead: the replay window refuses them instead of guessing a zone."""
    profiles = Profiles({PEER: PeerProfile(Dialect.SMARTAPI_11, "UTC")})
    r = rig(demo_config, table, keys, profiles, strict=True)
    body = library.request(**write_spec(sign_key=str(keys.peer_key)))
    reply = await r.access.handle(body.body, body.content_type, "ams")
    assert reply.status == 409 and b"future" in reply.body
    assert r.controller.sent == []
