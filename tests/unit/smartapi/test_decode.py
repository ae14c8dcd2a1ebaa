"""Refusals the shapes cannot express: the decoder's own model checks."""

from __future__ import annotations

import pytest
from rdflib import Graph, Literal
from rdflib.namespace import RDF, XSD

from gateway.errors import InvalidTerm, MissingTerm, WrongDatatype
from gateway.smartapi import examples
from gateway.smartapi.codec import encode, parse, prepare
from gateway.smartapi.decode import decode_graph
from gateway.smartapi.vocab import MGMS, QK, QUDT, SMARTAPI


def graph(msg: object) -> Graph:
    return parse(encode(msg), "text/turtle")  # type: ignore[arg-type]


def test_empty_graph_has_no_message() -> None:
    with pytest.raises(MissingTerm):
        decode_graph(prepare(Graph()))


def test_two_messages_in_one_graph() -> None:
    g = graph(examples.reserve_activation())
    g += graph(examples.reserve_notification())
    with pytest.raises(InvalidTerm, match="2 messages"):
        decode_graph(prepare(g))


def test_forecast_baseline_outside_its_range() -> None:
    g = graph(examples.forecast())
    series = next(
        s
        for s in g.subjects(MGMS.role, MGMS.Maximum)
        if (s, QUDT.hasQuantityKind, QK.ActivePower) in g
    )
    head = g.value(series, SMARTAPI.list)
    g.set((head, RDF.first, Literal("-1000.0", datatype=XSD.double)))  # type: ignore[arg-type]
    with pytest.raises(InvalidTerm, match="P range"):
        decode_graph(prepare(g))


def test_series_of_different_lengths() -> None:
    g = graph(examples.reserve_notification())
    g.remove((None, SMARTAPI.end, None))  # optional; its check would fire first
    head = g.value(next(iter(g.subjects(SMARTAPI.list, None))), SMARTAPI.list)
    g.set((head, RDF.rest, RDF.nil))  # type: ignore[arg-type]
    with pytest.raises(InvalidTerm, match="same intervals"):
        decode_graph(prepare(g))


def test_series_end_must_match_its_values() -> None:
    text = encode(examples.reserve_notification()).decode()
    wrong = text.replace(
        'smartapi:end "2025-06-02T10:30:00Z"', 'smartapi:end "2025-06-02T11:30:00Z"', 1
    )
    assert wrong != text
    with pytest.raises(InvalidTerm, match="does not match"):
        decode_graph(prepare(parse(wrong.encode(), "text/turtle")))


def test_calendar_duration_is_not_a_fixed_step() -> None:
    text = encode(examples.reserve_notification()).decode().replace('"PT15M"', '"P1M"')
    with pytest.raises(WrongDatatype, match="fixed duration"):
        decode_graph(prepare(parse(text.encode(), "text/turtle")))


def test_activation_ending_before_it_starts() -> None:
    text = encode(examples.reserve_activation()).decode()
    wrong = text.replace(
        'smartapi:end "2025-06-02T10:30:00Z"', 'smartapi:end "2025-06-02T10:00:00Z"'
    )
    assert wrong != text
    with pytest.raises(InvalidTerm, match="ends"):
        decode_graph(prepare(parse(wrong.encode(), "text/turtle")))
