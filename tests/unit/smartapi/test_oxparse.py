"""pyoxigraph's reading gives rdflib's graph (rdflib stays the reference), keeps literals as
written, and reports what is wrong."""

from __future__ import annotations

import pytest
import rdflib
from hypothesis import given, settings
from hypothesis import strategies as st
from pyoxigraph import RdfFormat
from rdflib import Graph, Literal, URIRef
from rdflib.collection import Collection
from rdflib.compare import isomorphic
from rdflib.namespace import RDF, XSD

from gateway.errors import MessageParseError, NonFiniteValue, TooManyStatements, WrongDatatype
from gateway.smartapi import examples
from gateway.smartapi import vocab as v
from gateway.smartapi.canonical import canonical_graph
from gateway.smartapi.check import violations
from gateway.smartapi.codec import Format, encode, parse, serialize_graph
from gateway.smartapi.decode import decode_graph
from gateway.smartapi.encode import AnyMessage
from gateway.smartapi.oxparse import WireLiteral, finite_doubles, parse_graph

from .samples import all_messages
from .test_legacy import ACTIVATION_11, reserve_11


def rdflib_graph(text: str, fmt: str = "turtle") -> Graph:
    """rdflib's reading, literals as written (the decoder gets the sender's lexical forms)."""
    rdflib.NORMALIZE_LITERALS = False
    try:
        return Graph().parse(data=text, format=fmt)
    finally:
        rdflib.NORMALIZE_LITERALS = True


def ox_graph(text: str, fmt: RdfFormat = RdfFormat.TURTLE) -> Graph:
    return parse_graph(text.encode(), fmt, "text/turtle", None)


@pytest.mark.parametrize("msg", all_messages(), ids=lambda m: type(m).__name__)
def test_same_graph_as_rdflib_for_our_writers(msg: AnyMessage) -> None:
    for fmt, name, ox in (
        (Format.TURTLE, "turtle", RdfFormat.TURTLE),
        (Format.NTRIPLES, "nt", RdfFormat.N_TRIPLES),
    ):
        text = encode(msg, fmt).decode()
        assert isomorphic(ox_graph(text, ox), rdflib_graph(text, name))


@pytest.mark.parametrize("msg", all_messages(), ids=lambda m: type(m).__name__)
def test_same_graph_as_rdflib_for_rdflibs_writer(msg: AnyMessage) -> None:
    # rdflib writes long strings, base-relative shapes and prefixes of its own
    text = serialize_graph(parse(encode(msg), "text/turtle"), Format.TURTLE).decode()
    assert isomorphic(ox_graph(text), rdflib_graph(text))


@pytest.mark.parametrize("text", [ACTIVATION_11, reserve_11("direct"), reserve_11("nested")])
def test_same_graph_for_hand_written_turtle(text: str) -> None:
    assert isomorphic(ox_graph(text), rdflib_graph(text))


@pytest.mark.parametrize(
    "text",
    [
        "@base <http://x/> . <a> <b> <c> .",
        '<http://x/a> <http://x/b> """long\nstring""" .',
        "<http://x/a> <http://x/b> 'single' .",
        "@prefix x: <http://x/> . x:a x:b ( x:c [ x:d 1.5e0 ] ) .",
    ],
)
def test_full_turtle_same_as_rdflib(text: str) -> None:
    assert isomorphic(ox_graph(text), rdflib_graph(text))


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30))
def test_string_escapes_round_trip(value: str) -> None:
    g = Graph()
    g.add((URIRef("http://x/a"), URIRef("http://x/b"), Literal(value)))
    text = g.serialize(format="nt")
    assert isomorphic(ox_graph(text, RdfFormat.N_TRIPLES), rdflib_graph(text, "nt"))


def test_forecast_96_same_as_rdflib() -> None:
    # rdflib's isomorphic() needs tens of seconds on 600 blank nodes; the canonical form
    # (checked against isomorphic() on the smaller messages) compares them in milliseconds
    text = encode(examples.forecast(96)).decode()
    fast, reference = ox_graph(text), rdflib_graph(text)
    assert len(fast) == len(reference)
    assert canonical_graph(fast) == canonical_graph(reference)


@pytest.mark.parametrize(
    ("written", "datatype", "value"),
    [
        ("01", XSD.integer, 1),
        ("+2.50", XSD.decimal, None),
        ("1.0E1", XSD.double, 10.0),
    ],
)
def test_literals_keep_their_lexical_form(written: str, datatype: URIRef, value: object) -> None:
    g = ox_graph(f'<http://x/a> <http://x/b> "{written}"^^<{datatype}> .')
    (lit,) = g.objects()
    assert isinstance(lit, WireLiteral)
    assert str(lit) == written and lit.datatype == datatype
    reference = Literal(written, datatype=datatype, normalize=False)
    assert lit.value == reference.value and lit.ill_typed == reference.ill_typed
    if value is not None:
        assert lit.toPython() == value


def _list_members(items: str) -> list[object]:
    g = ox_graph(f"@prefix xsd: <{XSD}> . <http://x/a> <http://x/b> ( {items} ) .")
    head = g.value(URIRef("http://x/a"), URIRef("http://x/b"))
    assert head is not None
    return list(Collection(g, head))


@pytest.mark.parametrize(
    ("items", "values"),
    [
        ("1.5E0 -2.0E0 1.5E0", [1.5, -2.0, 1.5]),
        ('"7"^^xsd:float 1E2', [7.0, 100.0]),
        ('1.5E0 "INF"^^xsd:double', None),
        ('"NaN"^^xsd:double', None),
        ("1E999", None),  # beyond a double: infinite
        ("1.5E0 2", None),  # an xsd:integer
        ("1.5E0 2.5", None),  # an xsd:decimal
        ('1.5E0 "1.5"', None),
        ("1.5E0 [ rdf:value 1.0E0 ]", None),
        ("", None),
    ],
)
def test_finite_doubles_only_of_parsed_finite_doubles(
    items: str, values: list[float] | None
) -> None:
    items = items.replace("rdf:value", f"<{RDF.value}>")
    assert finite_doubles(_list_members(items)) == values


def test_finite_doubles_refuses_terms_not_parsed() -> None:
    assert finite_doubles([Literal("1.5", datatype=XSD.double)]) is None
    assert finite_doubles([*_list_members("1.5E0"), Literal("2.5", datatype=XSD.double)]) is None


def test_a_time_series_member_beyond_a_double_is_not_finite() -> None:
    # a parsed member is read from its cached value; one that is not finite still goes
    # through the general check and is refused naming the series
    text = encode(examples.forecast(4)).decode().replace("40.0E0", "4.0E400", 1)
    assert "4.0E400" in text
    graph = parse(text.encode(), "text/turtle")
    with pytest.raises(NonFiniteValue):
        decode_graph(graph)
    assert [f.error for f in violations(graph)] == [NonFiniteValue]


def test_a_form_xsd_does_not_allow_is_refused_while_parsing() -> None:
    with pytest.raises(WrongDatatype):
        ox_graph(f'<http://x/a> <http://x/b> " true"^^<{XSD.boolean}> .')


def test_plain_and_language_literals_are_rdflibs() -> None:
    g = ox_graph('<http://x/a> <http://x/b> "x", "y"@en-GB .')
    assert set(g.objects()) == {Literal("x"), Literal("y", lang="en-gb")}


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("<a> <http://x/b> <http://x/c> .", "1"),  # relative IRI without a base
        ("@prefix x: <http://x/> .\nx:a x:b y:c .", "2"),  # undeclared prefix
        ("<http://x/a> <http://x/b> ( <http://x/c> .", "1"),
        ("<http://x/a> <http://x/b> <http://x/c>", "1"),  # no final dot
    ],
)
def test_syntax_errors_name_the_place(text: str, where: str) -> None:
    with pytest.raises(MessageParseError, match=rf"invalid text/turtle: .*\b{where}\b"):
        parse(text.encode(), "text/turtle")


def test_statement_limit_while_parsing() -> None:
    body = "".join(f"<http://x/a> <http://x/b> {n} .\n" for n in range(50)).encode()
    assert len(parse(body, "text/turtle", max_statements=50)) == 50
    with pytest.raises(TooManyStatements, match="more than 49 RDF statements"):
        parse(body, "text/turtle", max_statements=49)


@pytest.mark.parametrize(
    "nested",
    [b"(" * 65 + b")" * 65, b"[ <urn:x:p> " * 65 + b"]" * 65, b"(" * 20_000],
    ids=["collections", "blank-nodes", "unclosed"],
)
def test_deep_nesting_is_malformed_not_too_many_statements(nested: bytes) -> None:
    with pytest.raises(MessageParseError, match="nested deeper than 64 levels"):
        parse(b"<urn:x:s> <urn:x:p> " + nested + b" .", "text/turtle")


def test_nesting_at_the_limit_and_brackets_in_strings_iris_comments() -> None:
    at_limit = b"(" * 63 + b"[ <urn:x:p> 1 ]" + b")" * 63
    assert len(parse(b"<urn:x:s> <urn:x:p> " + at_limit + b" .", "text/turtle")) == 128
    text = (
        "<urn:x:s> <urn:x:p> \"((((\", \"\"\"[[\n((\"\"\", '[[[', '''(((''' , <urn:x:((> .\n"
        "# ((((((((\n"
    )
    deep = text.replace("((((", "(" * 200).encode()
    assert len(parse(deep, "text/turtle")) == 5


def test_labelled_blank_nodes_are_fresh_per_document() -> None:
    text = '_:a <http://x/p> "1" .'
    merged = ox_graph(text)
    merged += ox_graph(text)
    assert len(set(merged.subjects())) == 2


@pytest.mark.parametrize(
    "lexical",
    ['tab\\tquote\\"back\\\\slash', "bell\\u0007 form\\f back\\b", "\\u00e9t\\u00E9 \\U0001F600"],
)
def test_escaped_strings_read_as_rdflib_reads_them(lexical: str) -> None:
    # pyoxigraph writes some escapes rdflib's writer does not (\b, \f, \u00XX): each
    # escaped literal is read back to its value, as rdflib reads the same Turtle
    text = f'<http://x/a> <http://x/b> "{lexical}", "{lexical}"@en, "{lexical}"^^<http://x/t> .'
    fast, reference = ox_graph(text), rdflib_graph(text)
    assert set(fast.objects()) == set(reference.objects())
    assert canonical_graph(fast) == canonical_graph(reference)


def test_rdf_star_triple_terms_are_refused() -> None:
    with pytest.raises(MessageParseError, match="RDF-star"):
        parse(b"<urn:x:s> <urn:x:p> << <urn:x:a> <urn:x:b> <urn:x:c> >> .", "text/turtle")


def test_vocabulary_terms_are_the_interned_objects() -> None:
    # the decoder's lookups rely on identity (rdflib compares distinct equal terms in Python)
    g = parse(encode(examples.forecast(2)), "text/turtle")
    firsts = [p for _, p, _ in g if p == RDF.first]
    doubles = [o.datatype for _, _, o in g if isinstance(o, Literal) and o.datatype == XSD.double]
    assert firsts and all(p is v.FIRST for p in firsts)
    assert doubles and all(d is v.INTERNED[str(XSD.double)] for d in doubles)
