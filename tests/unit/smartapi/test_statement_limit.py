"""The statement limit: a body padded with triples is refused as soon as parsing passes the
limit, on every path (pyoxigraph's Turtle and N-Triples, rdflib's JSON-LD parser, Smart API
1.1 multipart parts, encrypted parts), and its parse costs memory in proportion to the
limit, not to the body."""

from __future__ import annotations

import tracemalloc

import pytest

from gateway.errors import TooManyStatements
from gateway.smartapi import examples
from gateway.smartapi.codec import Format, encode, parse
from gateway.smartapi.flexibility import statements_for


def padded(count: int, *, relative: bool = False) -> bytes:
    """`count` distinct statements, optionally with IRIs relative to a base."""
    if relative:
        head = b"@base <http://a.example/> .\n"
        return head + b"".join(b'<s> <p> "%d" .\n' % i for i in range(count))
    return b"".join(b'<urn:x:s> <urn:x:p> "%d" .\n' % i for i in range(count))


def padded_jsonld(count: int) -> bytes:
    items = b",".join(b'{"@id": "urn:x:s%d", "urn:x:p": "%d"}' % (i, i) for i in range(count))
    return b"[" + items + b"]"


@pytest.mark.parametrize(
    ("body", "ctype"),
    [
        (padded(300), "text/turtle"),
        (padded(300, relative=True), "text/turtle"),
        (padded(300), "application/n-triples"),
        (padded_jsonld(300), "application/ld+json"),
    ],
    ids=["turtle", "turtle-base", "ntriples", "jsonld"],
)
def test_the_limit_is_exact_on_every_parser(body: bytes, ctype: str) -> None:
    assert len(parse(body, ctype, 300)) == 300
    with pytest.raises(TooManyStatements, match="more than 299 RDF statements") as caught:
        parse(body, ctype, 299)
    assert caught.value.status == 413


def test_a_graph_within_the_limit_may_grow_afterwards() -> None:
    graph = parse(padded(5, relative=True), "text/turtle", 5)
    graph.parse(data=padded(3).decode(), format="nt")  # what legacy forms and parts do
    assert len(graph) == 8


def test_a_padded_body_costs_memory_of_the_limit_not_of_the_body() -> None:
    body = padded(30_000)  # about 0.9 MB, as the default body limit allows
    tracemalloc.start()
    try:
        with pytest.raises(TooManyStatements):
            parse(body, "text/turtle", 1_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the text and 1,000 statements; the whole body as tokens or triples would be 15-50 MB
    assert peak < 8 * len(body), f"peak {peak / 1e6:.1f} MB for a {len(body) / 1e6:.1f} MB body"


@pytest.mark.parametrize("intervals", [1, 4, 96, 500])
def test_profile_messages_fit_statements_for(intervals: int) -> None:
    """`statements_for` sizes the limit against the flex horizon (gateway.config): the
    largest profile message, a forecast, must fit it in every serialization."""
    forecast = examples.forecast(intervals)
    for fmt in (Format.TURTLE, Format.JSONLD):
        assert len(parse(encode(forecast, fmt), fmt.value)) <= statements_for(intervals) - 10
