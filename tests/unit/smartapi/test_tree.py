from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from rdflib import Graph, Literal, URIRef
from rdflib.namespace import XSD

from gateway.smartapi.tree import (
    Coll,
    Node,
    fmt_datetime,
    fmt_double,
    fmt_duration,
    string,
    to_graph,
    to_ntriples,
    to_turtle,
)
from gateway.smartapi.vocab import LEGACY_UNITS, UNITS_OF
from gateway.units import UNITS


@pytest.mark.parametrize(
    ("value", "text"),
    [(12.5, "12.5E0"), (-3.0, "-3.0E0"), (1e-7, "1.0E-7"), (1.5e20, "1.5E20"), (0.1, "0.1E0")],
)
def test_doubles(value: float, text: str) -> None:
    assert fmt_double(value) == text
    assert Literal(text, datatype=XSD.double).toPython() == value


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(minutes=15), "PT15M"),
        (timedelta(days=1, hours=2), "P1DT2H"),
        (timedelta(seconds=1.5), "PT1.5S"),
        (timedelta(0), "PT0S"),
    ],
)
def test_durations(value: timedelta, text: str) -> None:
    assert fmt_duration(value) == text
    assert Literal(text, datatype=XSD.duration).toPython() == value


def test_datetimes_are_utc_with_z() -> None:
    assert (
        fmt_datetime(datetime(2025, 1, 1, 1, 2, 3, 500000, tzinfo=UTC)) == "2025-01-01T01:02:03.5Z"
    )


def test_strings_survive_every_writer() -> None:
    tricky = 'quote " backslash \\ newline \n tab \t unicode é ✓'
    root = Node("urn:x").add("urn:p", string(tricky)).add("urn:list", Coll((string("a"),)))
    expected = to_graph([root])
    assert (URIRef("urn:x"), URIRef("urn:p"), Literal(tricky)) in expected
    for text, fmt in ((to_turtle([root]), "turtle"), (to_ntriples([root]), "nt")):
        assert Graph().parse(data=text, format=fmt).isomorphic(expected)


def test_unit_tables_name_known_units() -> None:
    assert {u for units in UNITS_OF.values() for u in units} <= set(UNITS)
    assert set(LEGACY_UNITS.values()) <= set(UNITS)
