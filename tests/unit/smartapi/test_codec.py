from __future__ import annotations

import json
from dataclasses import replace

import pytest
from rdflib import Graph, Literal
from rdflib.compare import isomorphic

from gateway.errors import MessageParseError, UnsupportedMediaType
from gateway.smartapi import examples
from gateway.smartapi.codec import (
    Format,
    decode,
    encode,
    media_format,
    negotiate,
    parse,
    serialize_graph,
)
from gateway.smartapi.encode import AnyMessage, to_tree
from gateway.smartapi.tree import to_graph

from .samples import all_messages


@pytest.mark.parametrize("fmt", list(Format))
@pytest.mark.parametrize("msg", all_messages(), ids=lambda m: type(m).__name__)
def test_round_trip(msg: AnyMessage, fmt: Format) -> None:
    assert decode(encode(msg, fmt), fmt.value) == msg


def normalized(graph: Graph) -> Graph:
    """The graph with rdflib's normalized literal forms (parse keeps them as written)."""
    out = Graph()
    for s, p, o in graph:
        if isinstance(o, Literal):
            o = Literal(str(o), lang=o.language, datatype=o.datatype)
        out.add((s, p, o))
    return out


@pytest.mark.parametrize("msg", all_messages(), ids=lambda m: type(m).__name__)
def test_fast_writers_give_the_same_graph_as_rdflib(msg: AnyMessage) -> None:
    reference = to_graph(to_tree(msg))
    for fmt in (Format.TURTLE, Format.NTRIPLES):
        assert isomorphic(normalized(parse(encode(msg, fmt), fmt.value)), reference), fmt


def test_96_interval_forecast_round_trips_through_rdflib_turtle() -> None:
    msg = examples.forecast(96)
    graph = parse(encode(msg), "text/turtle")
    again = serialize_graph(graph, Format.TURTLE)  # rdflib's own writer
    assert decode(again, "text/turtle") == msg


def test_jsonld_uses_the_compact_context() -> None:
    doc = json.loads(encode(examples.reserve_activation(), Format.JSONLD))
    assert doc["@context"]["smartapi"] == "http://smart-api.io/ontology/1.0/smartapi#"
    text = json.dumps(doc)
    assert "smartapi:generatedAt" in text
    assert "http://smart-api.io/ontology/1.0/smartapi#generatedAt" not in text


def test_units_are_converted_to_kw_on_decode() -> None:
    msg = examples.reserve_activation()
    text = encode(msg).decode()
    text = text.replace("unit:KiloW ;", "unit:W ;").replace("rdf:value 10.0E0", "rdf:value 10000")
    assert decode(text.encode(), "text/turtle") == replace(msg, p_kw=10.0)


def test_media_types() -> None:
    assert media_format("text/turtle; charset=utf-8") is Format.TURTLE
    assert media_format(None) is Format.TURTLE
    assert media_format("application/ld+json") is Format.JSONLD
    with pytest.raises(UnsupportedMediaType):
        media_format("application/xml")


def test_negotiation() -> None:
    assert negotiate(None) is Format.TURTLE
    assert negotiate("application/ld+json") is Format.JSONLD
    assert negotiate("text/turtle;q=0.5, application/ld+json") is Format.JSONLD
    assert negotiate("*/*") is Format.TURTLE
    with pytest.raises(UnsupportedMediaType):
        negotiate("image/png")


@pytest.mark.parametrize(
    ("body", "ctype"),
    [
        (b"@prefix x: <urn:x#> . x:a x:b", "text/turtle"),
        (b"\xff\xfe", "text/turtle"),
        (b"{not json", "application/ld+json"),
        (b'{"@context": "https://example.org/remote", "@id": "urn:x"}', "application/ld+json"),
        (b"<urn:a> <urn:b> .", "application/n-triples"),
        (
            b'{"@context": {"@import": "https://example.org/c"}, "@id": "urn:x"}',
            "application/ld+json",
        ),
        # beyond the JSON decoder's nesting depth (it raised RecursionError)
        (b"[" * 100_000 + b"]" * 100_000, "application/ld+json"),
        (b'{"urn:p": ' * 50_000 + b"1" + b"}" * 50_000, "application/ld+json"),
        # an integer beyond Python's digit limit (it raised a bare ValueError)
        (b'{"urn:p": ' + b"9" * 5_000 + b"}", "application/ld+json"),
    ],
)
def test_unparseable_bodies(body: bytes, ctype: str) -> None:
    with pytest.raises(MessageParseError):
        parse(body, ctype)


def test_rdflib_graph_is_isolated_per_parse() -> None:
    g1 = parse(encode(examples.reserve_activation()), "text/turtle")
    g2 = parse(encode(examples.reserve_activation()), "text/turtle")
    assert isinstance(g1, Graph) and g1 is not g2
