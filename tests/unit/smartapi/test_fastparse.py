"""The fast Turtle reader gives rdflib's graph, or steps aside."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rdflib import Graph, Literal, URIRef
from rdflib.compare import isomorphic

from gateway.smartapi import examples, fastparse
from gateway.smartapi.canonical import canonical_graph
from gateway.smartapi.codec import Format, encode, parse, serialize_graph
from gateway.smartapi.encode import AnyMessage

from .samples import all_messages
from .test_legacy import ACTIVATION_11, reserve_11


def rdflib_graph(text: str, fmt: str = "turtle") -> Graph:
    return Graph().parse(data=text, format=fmt)


def fast_graph(text: str) -> Graph:
    g = Graph()
    assert fastparse.parse_into(g, text), "fell back"
    return g


@pytest.mark.parametrize("msg", all_messages(), ids=lambda m: type(m).__name__)
def test_same_graph_as_rdflib_for_our_writers(msg: AnyMessage) -> None:
    for fmt, name in ((Format.TURTLE, "turtle"), (Format.NTRIPLES, "nt")):
        text = encode(msg, fmt).decode()
        assert isomorphic(fast_graph(text), rdflib_graph(text, name))


@pytest.mark.parametrize("msg", all_messages(), ids=lambda m: type(m).__name__)
def test_same_graph_as_rdflib_for_rdflibs_writer(msg: AnyMessage) -> None:
    text = serialize_graph(parse(encode(msg), "text/turtle"), Format.TURTLE).decode()
    if '"""' in text:  # rdflib writes multi-line strings long-quoted: outside the subset
        assert fastparse.triples(text) is None
        return
    assert isomorphic(fast_graph(text), rdflib_graph(text))


@pytest.mark.parametrize("text", [ACTIVATION_11, reserve_11("direct"), reserve_11("nested")])
def test_same_graph_for_hand_written_turtle(text: str) -> None:
    assert isomorphic(fast_graph(text), rdflib_graph(text))


@pytest.mark.parametrize(
    "text",
    [
        "@base <http://x/> . <a> <b> <c> .",
        "<a> <http://x/b> <http://x/c> .",
        '<http://x/a> <http://x/b> """long""" .',
        "<http://x/a> <http://x/b> 'single' .",
        "<http://x/a> <http://x/b> <http://x/c>",  # no final dot
        "@prefix x: <http://x/> . x:a x:b y:c .",  # undeclared prefix
        "<http://x/a> <http://x/b> ( <http://x/c> .",
    ],
)
def test_outside_the_subset_falls_back(text: str) -> None:
    assert fastparse.triples(text) is None


def test_codec_falls_back_to_rdflib() -> None:
    g = parse(b'<http://x/a> <http://x/b> """multi\nline""" .', "text/turtle")
    assert (URIRef("http://x/a"), URIRef("http://x/b"), Literal("multi\nline")) in g


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30))
def test_string_escapes_round_trip(value: str) -> None:
    g = Graph()
    g.add((URIRef("http://x/a"), URIRef("http://x/b"), Literal(value)))
    text = g.serialize(format="nt")
    assert isomorphic(fast_graph(text), rdflib_graph(text, "nt"))


def test_forecast_96_same_as_rdflib() -> None:
    # rdflib's isomorphic() needs tens of seconds on 600 blank nodes; the canonical form
    # (checked against isomorphic() on the smaller messages) compares them in milliseconds
    text = encode(examples.forecast(96)).decode()
    fast, reference = fast_graph(text), rdflib_graph(text)
    assert len(fast) == len(reference)
    assert canonical_graph(fast) == canonical_graph(reference)
