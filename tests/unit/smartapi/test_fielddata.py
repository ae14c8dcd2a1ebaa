from __future__ import annotations

from rdflib.namespace import RDF

from gateway.config import LoadedConfig
from gateway.points import PointTable
from gateway.smartapi import shapes
from gateway.smartapi.check import violations
from gateway.smartapi.codec import decode, encode
from gateway.smartapi.encode import der_iri, microgrid_iri
from gateway.smartapi.fielddata import describe, describe_graph, entities, quantity_kind
from gateway.smartapi.vocab import QK, SMARTAPI, EntityKind, QuantityKind


def test_every_der_and_point_becomes_an_entity_with_values(
    demo_config: LoadedConfig, table: PointTable
) -> None:
    ents = {e.iri: e for e in entities(demo_config, table)}
    mg = demo_config.gateway.microgrid.id
    for der in [*(d.id for d in demo_config.gateway.ders), "pcc"]:
        assert der_iri(mg, der) in ents
    assert set(ents[microgrid_iri(mg)].parts) == set(ents) - {microgrid_iri(mg)}
    points = {vo.point for e in ents.values() for vo in e.value_objects}
    assert points == {m.point.id for m in table}
    bess = ents[der_iri(mg, "bess1")]
    assert EntityKind.BATTERY in bess.kinds
    p = next(vo for vo in bess.value_objects if vo.point == "bess1.p")
    assert (p.quantity, p.unit, p.value, str(p.quality)) == (
        QuantityKind.ACTIVE_POWER,
        "KiloW",
        -12.5,
        "good",
    )
    pv = next(vo for vo in ents[der_iri(mg, "pv1")].value_objects if vo.point == "pv1.p")
    assert pv.value is None and str(pv.quality) == "invalid[comm_failure]"


def test_unit_decides_the_kind_of_a_percent_limit(demo_config: LoadedConfig) -> None:
    point = next(p for d in demo_config.devices for p in d.points if p.id == "pv1.limit")
    assert quantity_kind(point) is QuantityKind.DIMENSIONLESS


def test_description_round_trips_and_conforms(demo_config: LoadedConfig, table: PointTable) -> None:
    msg = describe(demo_config, table, sender="urn:mgms:gateway:demo-microgrid")
    assert decode(encode(msg), "text/turtle") == msg
    graph = describe_graph(demo_config, table, sender="urn:mgms:gateway:demo-microgrid")
    assert violations(graph) == []
    shapes.validate(graph)
    assert (None, SMARTAPI.valueObject, None) in graph
    assert (None, None, QK.StateOfCharge) in graph
    assert (None, RDF.type, SMARTAPI.Battery) in graph
