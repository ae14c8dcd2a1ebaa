"""The fast check agrees with the SHACL shapes (pyshacl) on good and bad messages, and every
decode error class comes out of the decoder for the defect it stands for."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from rdflib import BNode, Graph, Literal, URIRef
from rdflib.namespace import DCTERMS, RDF, XSD

from gateway.errors import (
    InvalidTerm,
    MessageDecodeError,
    MissingTerm,
    NonFiniteValue,
    ShapeViolation,
    WrongDatatype,
    WrongUnit,
)
from gateway.model import Quality, QualityFlag, Validity
from gateway.smartapi import examples, shapes
from gateway.smartapi.check import violations
from gateway.smartapi.codec import encode, parse, prepare
from gateway.smartapi.decode import decode_graph
from gateway.smartapi.encode import AnyMessage
from gateway.smartapi.messages import QUALITY_PATTERN
from gateway.smartapi.vocab import MGMS, QK, QUDT, SMARTAPI, UNIT

from .samples import all_messages, read_response

SHAPES = shapes.load()


def graph_of(msg: AnyMessage) -> Graph:
    return parse(encode(msg), "text/turtle")


def _set(g: Graph, s: object, p: URIRef, o: object) -> None:
    g.remove((s, p, None))  # type: ignore[arg-type]
    g.add((s, p, o))  # type: ignore[arg-type]


def _msg(g: Graph) -> URIRef:
    return next(s for s in g.subjects(SMARTAPI.id, None))  # type: ignore[return-value]


def _first_vo(g: Graph) -> object:
    return next(iter(g.objects(None, SMARTAPI.valueObject)))


def _series(g: Graph, role: str, kind: str) -> object:
    return next(
        s for s in g.subjects(MGMS.role, MGMS[role]) if (s, QUDT.hasQuantityKind, QK[kind]) in g
    )


def _first_list_cell(g: Graph) -> object:
    return next(iter(g.subjects(RDF.first, None)))


Mutation = Callable[[Graph], None]

# (name, sample, mutation, error class)
BAD: list[tuple[str, Callable[[], AnyMessage], Mutation, type[MessageDecodeError]]] = [
    (
        "no generatedAt",
        examples.reserve_activation,
        lambda g: g.remove((None, SMARTAPI.generatedAt, None)),
        MissingTerm,
    ),
    (
        "generatedAt as string",
        examples.reserve_activation,
        lambda g: _set(g, _msg(g), SMARTAPI.generatedAt, Literal("2025-06-02T10:00:00Z")),
        WrongDatatype,
    ),
    (
        "generatedAt without timezone",
        examples.reserve_activation,
        lambda g: _set(
            g, _msg(g), SMARTAPI.generatedAt, Literal("2025-06-02T10:00:00", datatype=XSD.dateTime)
        ),
        WrongDatatype,
    ),
    (
        "id with a space",
        examples.reserve_activation,
        lambda g: _set(g, _msg(g), SMARTAPI.id, Literal("a b")),
        InvalidTerm,
    ),
    (
        "two ids",
        examples.reserve_activation,
        lambda g: g.add((_msg(g), SMARTAPI.id, Literal("other"))),
        InvalidTerm,
    ),
    (
        "sender is a literal",
        examples.reserve_activation,
        lambda g: _set(g, _msg(g), SMARTAPI.generatedBy, Literal("ams")),
        InvalidTerm,
    ),
    (
        "unknown method",
        read_response,
        lambda g: _set(
            g, next(iter(g.subjects(SMARTAPI.method, None))), SMARTAPI.method, SMARTAPI.Delete
        ),
        InvalidTerm,
    ),
    (
        "energy unit on active power",
        examples.reserve_activation,
        lambda g: _set(
            g,
            next(iter(g.subjects(QUDT.hasQuantityKind, QK.ActivePower))),
            QUDT.hasUnit,
            UNIT["KiloW-HR"],
        ),
        WrongUnit,
    ),
    (
        "unknown unit",
        read_response,
        lambda g: _set(g, _first_vo(g), QUDT.hasUnit, UNIT.Furlong),
        WrongUnit,
    ),
    (
        "unknown quantity kind",
        read_response,
        lambda g: _set(g, _first_vo(g), QUDT.hasQuantityKind, QK.Mood),
        InvalidTerm,
    ),
    (
        "NaN set point",
        examples.reserve_activation,
        lambda g: _set(
            g,
            next(iter(g.subjects(QUDT.hasQuantityKind, QK.ActivePower))),
            RDF.value,
            Literal("NaN", datatype=XSD.double),
        ),
        NonFiniteValue,
    ),
    (
        "infinite list member",
        examples.forecast,
        lambda g: _set(g, _first_list_cell(g), RDF.first, Literal("INF", datatype=XSD.double)),
        NonFiniteValue,
    ),
    (
        "ill-typed double",
        examples.reserve_activation,
        lambda g: _set(
            g,
            next(iter(g.subjects(QUDT.hasQuantityKind, QK.ActivePower))),
            RDF.value,
            Literal("ten", datatype=XSD.double),
        ),
        WrongDatatype,
    ),
    (
        "number as string",
        read_response,
        lambda g: _set(g, next(iter(g.subjects(RDF.value, None))), RDF.value, Literal("12.5")),
        WrongDatatype,
    ),
    (
        "string in a series",
        examples.forecast,
        lambda g: _set(g, _first_list_cell(g), RDF.first, Literal("12")),
        WrongDatatype,
    ),
    (
        "forecast without the P maximum series",
        examples.forecast,
        lambda g: g.remove((_series(g, "Maximum", "ActivePower"), MGMS.role, None)),
        MissingTerm,
    ),
    (
        "two P baseline series",
        examples.forecast,
        lambda g: _set(g, _series(g, "Maximum", "ActivePower"), MGMS.role, MGMS.Baseline),
        InvalidTerm,
    ),
    (
        "time step as string",
        examples.reserve_notification,
        lambda g: [
            _set(g, s, SMARTAPI.timeStep, Literal("PT15M"))
            for s in list(g.subjects(SMARTAPI.timeStep, None))
        ],
        WrongDatatype,
    ),
    (
        "activation without Q",
        examples.reserve_activation,
        lambda g: g.remove(
            (
                None,
                SMARTAPI.valueObject,
                next(iter(g.subjects(QUDT.hasQuantityKind, QK.ReactivePower))),
            )
        ),
        MissingTerm,
    ),
    (
        "activation without notification reference",
        examples.reserve_activation,
        lambda g: g.remove((None, MGMS.notificationId, None)),
        MissingTerm,
    ),
    (
        "verification without activation reference",
        examples.reserve_verification,
        lambda g: g.remove((None, MGMS.activationId, None)),
        MissingTerm,
    ),
    (
        "notification without microgrid identity",
        examples.reserve_notification,
        lambda g: g.remove((None, DCTERMS.identifier, None)),
        MissingTerm,
    ),
    (
        "error code out of range",
        lambda: all_messages()[3],
        lambda g: _set(g, _msg(g), SMARTAPI.errorCode, Literal(42)),
        InvalidTerm,
    ),
    (
        "unknown quality",
        read_response,
        lambda g: _set(
            g, next(iter(g.subjects(MGMS.quality, None))), MGMS.quality, Literal("great")
        ),
        InvalidTerm,
    ),
    (
        "entity is a blank node",
        read_response,
        lambda g: _entity_to_bnode(g),
        InvalidTerm,
    ),
    (
        "read activity without entity",
        read_response,
        lambda g: g.remove((None, SMARTAPI.entity, None)),
        MissingTerm,
    ),
]


def _entity_to_bnode(g: Graph) -> None:
    act, ent = next(iter(g.subject_objects(SMARTAPI.entity)))
    blank = BNode()
    for p, o in list(g.predicate_objects(ent)):
        g.add((blank, p, o))
    _set(g, act, SMARTAPI.entity, blank)


def _shacl_conforms(g: Graph) -> bool:
    try:
        shapes.validate(g, SHAPES)
    except ShapeViolation:
        return False
    return True


@pytest.mark.parametrize("msg", all_messages(), ids=lambda m: type(m).__name__)
def test_good_messages_conform_to_both(msg: AnyMessage) -> None:
    g = graph_of(msg)
    assert violations(g) == []
    assert _shacl_conforms(g)


@pytest.mark.parametrize(("name", "sample", "mutate", "error"), BAD, ids=[b[0] for b in BAD])
def test_bad_messages_fail_both_with_the_typed_error(
    name: str, sample: Callable[[], AnyMessage], mutate: Mutation, error: type[Exception]
) -> None:
    g = graph_of(sample())
    mutate(g)
    found = violations(g)
    assert found, "fast check accepted it"
    assert not _shacl_conforms(g), "pyshacl accepted it"
    with pytest.raises(error) as info:
        decode_graph(prepare(g))
    assert info.value.term and info.value.node  # type: ignore[attr-defined]


@pytest.mark.parametrize(("name", "sample", "mutate", "error"), BAD, ids=[b[0] for b in BAD])
def test_decoder_alone_refuses_the_same_defects(
    name: str, sample: Callable[[], AnyMessage], mutate: Mutation, error: type[Exception]
) -> None:
    """Without the fast check, the decoder still refuses (defence in depth)."""
    g = graph_of(sample())
    mutate(g)
    with pytest.raises(MessageDecodeError):
        decode_graph(g)


def test_errors_name_term_and_node() -> None:
    g = graph_of(examples.forecast())
    _set(g, _first_list_cell(g), RDF.first, Literal("INF", datatype=XSD.double))
    with pytest.raises(NonFiniteValue) as info:
        prepare(g)
    assert info.value.term == "smartapi:list"
    assert info.value.node.startswith("<urn:mgms:microgrid:demo-microgrid> smartapi:timeSeries")


def test_shipped_shapes_are_current() -> None:
    assert shapes.SHAPES_PATH.read_text(encoding="utf-8") == shapes.build()


@pytest.mark.parametrize("validity", list(Validity))
def test_every_quality_the_model_writes_passes_check_and_shapes(validity: Validity) -> None:
    # the patterns are built from Validity and QualityFlag: a new flag needs no edit here
    flags = list(QualityFlag)
    for quality in (Quality(validity), Quality(validity, frozenset(flags))):
        assert re.fullmatch(QUALITY_PATTERN, str(quality)), quality
        assert re.fullmatch(QUALITY_PATTERN, f"{validity}[{flags[-1]},{flags[0]}]")
    assert not re.fullmatch(QUALITY_PATTERN, f"{validity}[no_such_flag]")
    assert f'"{QUALITY_PATTERN.replace(chr(92), chr(92) * 2)}"' in shapes.build()
