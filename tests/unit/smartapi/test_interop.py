"""The 1.1 envelope rules (gateway.smartapi.interop) on their own: literal forms, the peer's
zone, and that a modern peer's message is left alone."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from rdflib import BNode, Graph, Literal, URIRef
from rdflib.namespace import RDF, XSD

from gateway.smartapi.interop import naive_in, read_envelope
from gateway.smartapi.peers import Dialect, PeerProfile, Profiles
from gateway.smartapi.vocab import SMARTAPI

HELSINKI = ZoneInfo("Europe/Helsinki")
PEER = "https://peer.example/a"


@pytest.mark.parametrize(
    ("lexical", "expected"),
    [
        ("2026-07-01T12:00:00", datetime(2026, 7, 1, 9, tzinfo=UTC)),  # summer: UTC+3
        ("2026-01-15T12:00:00", datetime(2026, 1, 15, 10, tzinfo=UTC)),  # winter: UTC+2
        ("2026-07-01T12:00:00.123456789", datetime(2026, 7, 1, 9, 0, 0, 123456, tzinfo=UTC)),
        ("2026-07-01T12:00:00Z", None),  # has a zone: the decoder reads it as it is
        ("2026-07-01T12:00:00+03:00", None),
        ("2026-07-01T12:00:00\n", None),
        ("2026-07-01T12:00", None),
        ("\u0662026-07-01T12:00:00", None),  # a non-ASCII digit is no XSD digit
        ("2026-13-01T12:00:00", None),
    ],
)
def test_naive_times_in_the_peer_zone(lexical: str, expected: datetime | None) -> None:
    assert naive_in(lexical, HELSINKI) == expected


def message(message_id: Literal | None, generated_at: str) -> tuple[Graph, BNode]:
    g = Graph()
    node = BNode()
    g.add((node, RDF.type, SMARTAPI.Request))
    g.add((node, SMARTAPI.generatedBy, URIRef(PEER)))
    g.add((node, SMARTAPI.generatedAt, Literal(generated_at, datatype=XSD.dateTime)))
    if message_id is not None:
        g.add((node, SMARTAPI.id, message_id))
    return g, node


V11 = Profiles({PEER: PeerProfile(Dialect.SMARTAPI_11, "Europe/Helsinki")})


def test_integer_id_and_naive_time_of_a_11_peer() -> None:
    g, node = message(Literal("+0042", datatype=XSD.integer), "2026-07-01T12:00:00")
    read_envelope(g, b"body", V11)
    assert g.value(node, SMARTAPI.id) == Literal("42")
    at = g.value(node, SMARTAPI.generatedAt)
    assert isinstance(at, Literal) and at.toPython() == datetime(2026, 7, 1, 9, tzinfo=UTC)


def test_a_modern_peer_is_left_alone() -> None:
    g, _ = message(Literal(7), "2026-07-01T12:00:00")
    before = set(g)
    read_envelope(g, b"body", Profiles())
    read_envelope(g, b"body", Profiles({"urn:other": V11.of(PEER)}))  # another sender
    assert set(g) == before


def test_missing_id_is_derived_from_the_body() -> None:
    g1, n1 = message(None, "2026-07-01T12:00:00")
    g2, n2 = message(None, "2026-07-01T12:00:00")
    read_envelope(g1, b"one body", V11)
    read_envelope(g2, b"one body", V11)
    assert g1.value(n1, SMARTAPI.id) == g2.value(n2, SMARTAPI.id)
    g3, n3 = message(None, "2026-07-01T12:00:00")
    read_envelope(g3, b"another body", V11)
    assert g3.value(n3, SMARTAPI.id) != g1.value(n1, SMARTAPI.id)
    assert str(g1.value(n1, SMARTAPI.id)).startswith("sha256-")


def test_unknown_time_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        PeerProfile(Dialect.SMARTAPI_11, "Mars/Olympus")
