"""Smart API 1.1 forms on input: NASA QUDT units and properties, Smart API quantity kinds and
the indexedArray list shape."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.errors import InvalidTerm, MissingTerm, WrongUnit
from gateway.smartapi import examples
from gateway.smartapi.codec import decode
from gateway.smartapi.flexibility import ReserveActivation, ReserveNotification

PREFIXES = """\
@prefix smartapi: <http://smart-api.io/ontology/1.0/smartapi#> .
@prefix qudt: <http://data.nasa.gov/qudt/owl/qudt#> .
@prefix unit: <http://data.nasa.gov/qudt/owl/unit#> .
@prefix mgms: <urn:mgms:profile:1.0#> .
@prefix dcterms: <http://purl.org/dc/terms/> .
@prefix rdf: <http://www.w3.org/1999/02/22-rdf-syntax-ns#> .
@prefix xsd: <http://www.w3.org/2001/XMLSchema#> .
"""

ACTIVATION_11 = (
    PREFIXES
    + """
<urn:ams:msg:77> a smartapi:Request, mgms:ReserveActivation ;
    smartapi:id "77" ;
    smartapi:generatedBy <https://ams.example.net/smartapi> ;
    smartapi:generatedAt "2025-06-02T10:01:00Z"^^xsd:dateTime ;
    mgms:notificationId "9d2a41f0-reserve-0001" ;
    smartapi:activity [ a smartapi:Activity ; smartapi:method smartapi:Write ;
        smartapi:temporalContext [ smartapi:start "2025-06-02T10:01:00Z"^^xsd:dateTime ] ;
        smartapi:entity <urn:mgms:microgrid:demo-microgrid> ] .
<urn:mgms:microgrid:demo-microgrid> dcterms:identifier "demo-microgrid" ;
    smartapi:valueObject [ qudt:quantityKind smartapi:ActivePower ; qudt:unit unit:Kilowatt ;
        rdf:value "-12.5"^^xsd:decimal ] ;
    smartapi:valueObject [ qudt:quantityKind smartapi:ReactivePower ;
        qudt:unit unit:KilovoltAmpereReactive ; rdf:value 0 ] .
"""
)


def test_legacy_units_and_quantity_kinds() -> None:
    msg = decode(ACTIVATION_11.encode(), "text/turtle")
    assert isinstance(msg, ReserveActivation)
    assert (msg.p_kw, msg.q_kvar, msg.end) == (-12.5, 0.0, None)
    assert msg.notification == "9d2a41f0-reserve-0001"


def test_unknown_legacy_unit_is_a_wrong_unit() -> None:
    with pytest.raises(WrongUnit) as info:
        decode(ACTIVATION_11.replace("unit:Kilowatt", "unit:Horsepower").encode(), "text/turtle")
    assert "Horsepower" in str(info.value)


def _series(role: str, kind: str, unit: str, values: list[float], shape: str) -> str:
    entries = ", ".join(
        f"[ smartapi:index {i} ; rdf:value {v} ]" for i, v in reversed(list(enumerate(values)))
    )
    if shape == "direct":
        listing = f'smartapi:list [ dcterms:abstract "indexedArray" ; smartapi:entry {entries} ]'
    else:  # the entries one dcterms:abstract hop further
        listing = f"smartapi:list [ dcterms:abstract [ smartapi:entry {entries} ] ]"
    return f"""[ a smartapi:TimeSeries ; mgms:role mgms:{role} ;
        qudt:quantityKind smartapi:{kind} ; qudt:unit unit:{unit} ;
        smartapi:timeStep "PT15M"^^xsd:duration ;
        smartapi:temporalContext [ smartapi:start "2025-06-02T10:00:00Z"^^xsd:dateTime ] ;
        {listing} ]"""


def reserve_11(shape: str, p_down: list[float] | None = None) -> str:
    p_down = p_down if p_down is not None else [30.0, 30.0]
    series = ", ".join(
        [
            _series("ReservedUp", "ActivePower", "Kilowatt", [0.0, 0.0], shape),
            _series("ReservedDown", "ActivePower", "Watt", [x * 1000 for x in p_down], shape),
            _series("ReservedUp", "ReactivePower", "KilovoltAmpereReactive", [0.0, 0.0], shape),
            _series("ReservedDown", "ReactivePower", "KilovoltAmpereReactive", [0.0, 0.0], shape),
        ]
    )
    return (
        PREFIXES
        + f"""
<urn:ams:msg:76> a smartapi:Request, mgms:ReserveNotification ;
    smartapi:id "9d2a41f0-reserve-0001" ;
    smartapi:generatedBy <https://ams.example.net/smartapi> ;
    smartapi:generatedAt "2025-06-02T09:58:00Z"^^xsd:dateTime ;
    mgms:purchaseId "fmo-clearing-2025-06-02-0042" ;
    smartapi:activity [ a smartapi:Activity ; smartapi:method smartapi:Write ;
        smartapi:entity <urn:mgms:microgrid:demo-microgrid> ] .
<urn:mgms:microgrid:demo-microgrid> dcterms:identifier "demo-microgrid" ;
    smartapi:timeSeries {series} .
"""
    )


@pytest.mark.parametrize("shape", ["direct", "nested"])
def test_indexed_array_lists(shape: str) -> None:
    msg = decode(reserve_11(shape).encode(), "text/turtle")
    assert isinstance(msg, ReserveNotification)
    assert msg == examples.reserve_notification()
    assert msg.step == timedelta(minutes=15)


def test_indexed_array_with_a_gap_is_refused() -> None:
    text = reserve_11("direct").replace("smartapi:index 1 ;", "smartapi:index 2 ;", 1)
    with pytest.raises(InvalidTerm) as info:
        decode(text.encode(), "text/turtle")
    assert info.value.term == "smartapi:index"


def test_indexed_array_entry_without_index_is_refused() -> None:
    text = reserve_11("direct").replace("smartapi:index 1 ;", "", 1)
    with pytest.raises(MissingTerm):
        decode(text.encode(), "text/turtle")
