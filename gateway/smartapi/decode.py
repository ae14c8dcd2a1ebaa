"""rdflib graph -> model. Every refusal is a typed error naming the term and the node.

Nodes are named by IRI, or for blank nodes by the path from the nearest IRI
(`<urn:mgms:message:m1> smartapi:activity/smartapi:entity`), list members by position
(`smartapi:list[17]`). Values in power and energy units are converted to kW, kvar and kWh
for the information objects.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TypeVar

from rdflib import BNode, Graph, Literal, URIRef
from rdflib.namespace import DCTERMS, RDF, XSD
from rdflib.term import Node as RdfNode

from gateway.errors import (
    InvalidTerm,
    LexicalFormError,
    MissingTerm,
    NonFiniteValue,
    WrongDatatype,
    WrongUnit,
)
from gateway.model import Quality, QualityFlag, Validity
from gateway.smartapi import vocab as v
from gateway.smartapi import xsd
from gateway.smartapi.encode import (
    FLEX_CLASSES,
    FORECAST_COLUMNS,
    RESERVE_COLUMNS,
    VERIFICATION_COLUMNS,
    AnyMessage,
    Column,
)
from gateway.smartapi.flexibility import (
    FlexibilityForecast,
    ForecastInterval,
    ReserveActivation,
    ReservedInterval,
    ReserveNotification,
    ReserveVerification,
    VerificationInterval,
)
from gateway.smartapi.messages import (
    Activity,
    Entity,
    ErrorMessage,
    Method,
    Notification,
    Request,
    Response,
    SeriesRole,
    TimeSeries,
    ValueObject,
)
from gateway.smartapi.oxparse import WireLiteral, finite_doubles, index_of
from gateway.smartapi.vocab import (
    MGMS,
    QK,
    QUDT,
    SMARTAPI,
    UNIT,
    EntityKind,
    QuantityKind,
    curie,
)
from gateway.units import UNITS

T = TypeVar("T")
_Interval = TypeVar("_Interval")

NUMERIC = v.NUMERIC
_STRING_TYPES = (None, XSD.string)
_FIRST, _REST, _NIL = v.FIRST, v.REST, v.NIL
_NONE: dict[RdfNode, dict[RdfNode, None]] = {}
_ENTITY_KINDS = {k.iri: k for k in EntityKind}
_QK = str(QK)
_UNIT = str(UNIT)


def show(term: RdfNode) -> str:
    """A term for an error message (rdflib's n3() warns on ill-typed numbers)."""
    if isinstance(term, Literal):
        if term.language:
            return f'"{term}"@{term.language}'
        return f'"{term}"' + (f"^^{curie(term.datatype)}" if term.datatype else "")
    return curie(term)


class Reader:
    """Typed access to one graph's terms; raises the typed decode errors."""

    def __init__(self, graph: Graph) -> None:
        self.g = graph
        #: statements by subject and predicate, read straight from the parser's index
        self.index = index_of(graph)
        # plain collections are read from `collections`, any other list in the full index
        self.spo = self.index.lean_spo()

    def objects(self, node: RdfNode, predicate: URIRef) -> list[RdfNode]:
        return list(self.spo.get(node, _NONE).get(predicate, ()))

    # -- naming ------------------------------------------------------------------------------

    def describe(self, node: RdfNode) -> str:
        if not isinstance(node, BNode):
            return f"<{node}>"
        path: list[str] = []
        current: RdfNode = node
        rests = 0
        for _ in range(100_000):
            parent = next(iter(self.g.subject_predicates(current)), None)
            if parent is None:
                break
            subject, predicate = parent
            if predicate == RDF.rest:
                rests += 1
            elif predicate == RDF.first:
                rests = 0
                path.append("[")  # placeholder, filled with the index when the list starts
            else:
                label = curie(predicate)
                if path and path[-1] == "[":
                    path[-1] = f"{label}[{rests}]"
                else:
                    path.append(label)
                rests = 0
            current = subject
            if not isinstance(current, BNode):
                return f"<{current}> " + "/".join(reversed(path))
        return "blank node " + "/".join(reversed(path))

    @contextmanager
    def building(self, term: str, node: RdfNode) -> Iterator[None]:
        """Model validation failures become InvalidTerm on this node."""
        try:
            yield
        except ValueError as exc:
            raise InvalidTerm(term, self.describe(node), str(exc)) from exc

    # -- single values -----------------------------------------------------------------------

    def one(self, node: RdfNode, predicate: URIRef, required: bool = True) -> RdfNode | None:
        values = self.objects(node, predicate)
        if not values:
            if required:
                raise MissingTerm(curie(predicate), self.describe(node), "required term missing")
            return None
        if len(values) > 1:
            raise InvalidTerm(
                curie(predicate), self.describe(node), f"{len(values)} values where one is allowed"
            )
        return values[0]

    def iri(self, node: RdfNode, predicate: URIRef, required: bool = True) -> URIRef | None:
        term = self.one(node, predicate, required)
        if term is None:
            return None
        if not isinstance(term, URIRef):
            raise InvalidTerm(curie(predicate), self.describe(node), f"{term!r} is not an IRI")
        return term

    def string(self, node: RdfNode, predicate: URIRef, required: bool = True) -> str | None:
        term = self.one(node, predicate, required)
        if term is None:
            return None
        if not isinstance(term, Literal) or term.datatype not in _STRING_TYPES:
            raise WrongDatatype(
                curie(predicate), self.describe(node), f"{show(term)} is not an xsd:string"
            )
        return str(term)

    def number(
        self, node: RdfNode, predicate: URIRef, required: bool = True
    ) -> float | int | bool | None:
        term = self.one(node, predicate, required)
        if term is None:
            return None
        return self.literal_number(term, curie(predicate), node)

    def literal_number(self, term: RdfNode, name: str, node: RdfNode) -> float | int | bool:
        if term.__class__ is WireLiteral:
            fast = term.double()
            if fast is not None and math.isfinite(fast):
                return fast
        # the parser's literals first: isinstance on rdflib terms is an ABC check
        if not (term.__class__ is WireLiteral or isinstance(term, Literal)) or (
            term.datatype not in NUMERIC and term.datatype != v.BOOLEAN
        ):
            shown = show(term) if isinstance(term, Literal) else self.describe(term)
            raise WrongDatatype(name, self.describe(node), f"{shown} is not a number")
        try:
            number = xsd.number(str(term), str(term.datatype))
        except LexicalFormError as exc:
            raise WrongDatatype(name, self.describe(node), str(exc)) from None
        if isinstance(number, bool | int):
            return number
        if not math.isfinite(number):
            raise NonFiniteValue(name, self.describe(node), f"{show(term)} is not finite")
        return number

    def datetime(self, node: RdfNode, predicate: URIRef, required: bool = True) -> datetime | None:
        term = self.one(node, predicate, required)
        if term is None:
            return None
        if not isinstance(term, Literal) or term.datatype != XSD.dateTime:
            raise WrongDatatype(
                curie(predicate), self.describe(node), f"{show(term)} is not an xsd:dateTime"
            )
        try:
            value = xsd.date_time(str(term))
        except LexicalFormError as exc:
            raise WrongDatatype(curie(predicate), self.describe(node), str(exc)) from None
        if value.tzinfo is None:
            raise WrongDatatype(
                curie(predicate), self.describe(node), f"{show(term)} has no timezone"
            )
        return value

    def duration(self, node: RdfNode, predicate: URIRef) -> timedelta:
        term = self.one(node, predicate)
        if not isinstance(term, Literal) or term.datatype not in (
            XSD.duration,
            XSD.dayTimeDuration,
        ):
            raise WrongDatatype(
                curie(predicate), self.describe(node), f"{term!r} is not an xsd:duration"
            )
        try:
            return xsd.duration(str(term), str(term.datatype))
        except LexicalFormError as exc:  # also years or months: no fixed length
            raise WrongDatatype(curie(predicate), self.describe(node), str(exc)) from None

    def unit(self, node: RdfNode, required: bool = False) -> str | None:
        term = self.one(node, QUDT.hasUnit, required)
        if term is None:
            return None
        text = str(term)
        if (
            not isinstance(term, URIRef)
            or not text.startswith(_UNIT)
            or text[len(_UNIT) :] not in UNITS
        ):
            raise WrongUnit("qudt:hasUnit", self.describe(node), f"unknown unit {curie(term)}")
        return text[len(_UNIT) :]

    def quantity(self, node: RdfNode, required: bool = False) -> QuantityKind | None:
        term = self.one(node, QUDT.hasQuantityKind, required)
        if term is None:
            return None
        text = str(term)
        try:
            if not isinstance(term, URIRef) or not text.startswith(_QK):
                raise ValueError
            return QuantityKind(text[len(_QK) :])
        except ValueError:
            raise InvalidTerm(
                "qudt:hasQuantityKind", self.describe(node), f"unknown quantity kind {curie(term)}"
            ) from None

    def quantity_and_unit(
        self, node: RdfNode, required: bool
    ) -> tuple[QuantityKind | None, str | None]:
        kind = self.quantity(node, required)
        unit = self.unit(node, required)
        if kind is not None and unit is not None and not v.unit_fits(kind, unit):
            raise WrongUnit(
                "qudt:hasUnit", self.describe(node), f"unit {unit} does not fit quantity {kind}"
            )
        return kind, unit

    def types(self, node: RdfNode) -> set[RdfNode]:
        return set(self.objects(node, RDF.type))


# -- structure ---------------------------------------------------------------------------------


def message_node(graph: Graph) -> URIRef | BNode:
    found = {s for t in v.MESSAGE_TYPES for s in graph.subjects(RDF.type, t)}
    if not found:
        raise MissingTerm(
            "rdf:type", "graph", "no Smart API Request, Response, Notification or Error"
        )
    if len(found) > 1:
        raise InvalidTerm("rdf:type", "graph", f"{len(found)} messages in one graph")
    node = found.pop()
    assert isinstance(node, URIRef | BNode)
    return node


def _quality(text: str, r: Reader, node: RdfNode) -> Quality:
    validity, _, flags = text.partition("[")
    try:
        return Quality(
            Validity(validity),
            frozenset(QualityFlag(f) for f in flags.rstrip("]").split(",") if f),
        )
    except ValueError:
        raise InvalidTerm("mgms:quality", r.describe(node), f"unknown quality {text!r}") from None


def value_object(r: Reader, node: RdfNode) -> ValueObject:
    kind, unit = r.quantity_and_unit(node, required=False)
    value = r.number(node, RDF.value, required=False)
    quality_text = r.string(node, MGMS.quality, required=False)
    with r.building("smartapi:valueObject", node):
        return ValueObject(
            quantity=kind,
            unit=unit,
            value=value,
            point=r.string(node, MGMS.point, required=False),
            role=r.string(node, MGMS.role, required=False),
            quality=_quality(quality_text, r, node) if quality_text is not None else None,
            time=r.datetime(node, DCTERMS.date, required=False),
        )


def _list_cells(r: Reader, owner: RdfNode, head: RdfNode) -> Iterable[tuple[RdfNode, RdfNode]]:
    """(cell, member) of the list at `head`, in order: a well-formed collection as the
    parser's index found it, anything else walked here (`_walk_list`)."""
    found = r.index.collections().get(head)
    if found is not None:
        return zip(*found, strict=True)
    return _walk_list(r, owner, head)


def _walk_list(r: Reader, owner: RdfNode, head: RdfNode) -> Iterator[tuple[RdfNode, RdfNode]]:
    """(cell, member) of a list that is not a plain collection, one cell at a time (a
    member's error comes before a later cell's); a cycle or a cell without exactly one
    rdf:first and one rdf:rest is refused naming the cell."""
    cell = head
    seen: set[RdfNode] = set()
    spo = r.index.spo
    # the parser's nil is v.NIL itself, and a cell is a BNode: rdflib's == only for others
    while cell is not _NIL and (cell.__class__ is BNode or cell != _NIL):
        if cell in seen:
            raise InvalidTerm("smartapi:list", r.describe(owner), "list is cyclic")
        seen.add(cell)
        by_p = spo.get(cell, _NONE)
        items, nexts = by_p.get(_FIRST, _NONE), by_p.get(_REST, _NONE)
        if len(items) != 1 or len(nexts) != 1:
            raise MissingTerm(
                "rdf:first" if len(items) != 1 else "rdf:rest",
                r.describe(cell),
                "a list cell needs exactly one rdf:first and one rdf:rest",
            )
        [item], [following] = items, nexts
        yield cell, item
        cell = following


def _list_items(r: Reader, owner: RdfNode, head: RdfNode) -> list[float]:
    found = r.index.collections().get(head)
    if found is not None:
        doubles = finite_doubles(found.members)
        if doubles is not None:
            return doubles
    values: list[float] = []
    isfinite = math.isfinite
    for cell, item in _list_cells(r, owner, head):
        if item.__class__ is WireLiteral:
            fast = item.double()
            if fast is not None and isfinite(fast):
                values.append(fast)  # the common case: a parsed double
                continue
        # a member is a literal or an Evaluation node carrying rdf:value
        if item.__class__ is WireLiteral or isinstance(item, Literal):
            number = r.literal_number(item, "smartapi:list", cell)
        else:
            inner = r.number(item, RDF.value)
            assert inner is not None
            number = inner
        if isinstance(number, bool):
            raise WrongDatatype("smartapi:list", r.describe(cell), "boolean in a time series")
        values.append(float(number))
    return values


def time_series(r: Reader, node: RdfNode) -> TimeSeries:
    kind, unit = r.quantity_and_unit(node, required=True)
    assert kind is not None and unit is not None
    step = r.duration(node, SMARTAPI.timeStep)
    context = r.one(node, SMARTAPI.temporalContext)
    assert context is not None
    start = r.datetime(context, SMARTAPI.start)
    end = r.datetime(context, SMARTAPI.end, required=False)
    head = r.one(node, SMARTAPI.list)
    assert head is not None and start is not None
    values = _list_items(r, node, head)
    role = _enum_iri(r, node, MGMS.role, SeriesRole, str(MGMS))
    of = _enum_iri(r, node, MGMS.quantityOf, QuantityKind, _QK)
    with r.building("smartapi:timeSeries", node):
        series = TimeSeries(
            quantity=kind, unit=unit, start=start, step=step, values=tuple(values), role=role, of=of
        )
    if end is not None and end != series.end:
        raise InvalidTerm(
            "smartapi:end",
            r.describe(context),
            f"end {end.isoformat()} does not match start + {len(values)} x {step}",
        )
    return series


E = TypeVar("E", SeriesRole, QuantityKind)


def _enum_iri(r: Reader, node: RdfNode, predicate: URIRef, enum: type[E], base: str) -> E | None:
    term = r.iri(node, predicate, required=False)
    if term is None:
        return None
    text = str(term)
    try:
        if not text.startswith(base):
            raise ValueError
        return enum(text[len(base) :])
    except ValueError:
        raise InvalidTerm(
            curie(predicate), r.describe(node), f"unknown value {curie(term)}"
        ) from None


def entity(r: Reader, node: RdfNode) -> Entity:
    if not isinstance(node, URIRef):
        raise InvalidTerm("smartapi:entity", r.describe(node), "an entity must be named by an IRI")
    kinds = frozenset(
        _ENTITY_KINDS[t] for t in r.types(node) if isinstance(t, URIRef) and t in _ENTITY_KINDS
    )
    parts = tuple(str(p) for p in r.objects(node, DCTERMS.hasPart))
    with r.building("smartapi:entity", node):
        return Entity(
            iri=str(node),
            kinds=kinds,
            identifier=r.string(node, DCTERMS.identifier, required=False),
            name=r.string(node, DCTERMS.title, required=False),
            value_objects=tuple(
                value_object(r, vo) for vo in r.objects(node, SMARTAPI.valueObject)
            ),
            time_series=tuple(time_series(r, ts) for ts in r.objects(node, SMARTAPI.timeSeries)),
            parts=parts,
        )


def activity(r: Reader, node: RdfNode) -> Activity:
    method_iri = r.iri(node, SMARTAPI.method)
    try:
        method = Method(str(method_iri)[len(str(SMARTAPI)) :])
        if not str(method_iri).startswith(str(SMARTAPI)):
            raise ValueError
    except ValueError:
        raise InvalidTerm(
            "smartapi:method",
            r.describe(node),
            f"method {curie(method_iri)} is not Read or Write",
        ) from None
    context = r.one(node, SMARTAPI.temporalContext, required=False)
    start = end = None
    if context is not None:
        start = r.datetime(context, SMARTAPI.start, required=False)
        end = r.datetime(context, SMARTAPI.end, required=False)
    entities = [entity(r, e) for e in r.objects(node, SMARTAPI.entity)]
    if not entities:
        raise MissingTerm("smartapi:entity", r.describe(node), "activity without entity")
    with r.building("smartapi:activity", node):
        return Activity(
            method=method,
            entities=tuple(entities),
            start=start,
            end=end,
        )


# -- messages ----------------------------------------------------------------------------------


def decode_graph(graph: Graph) -> AnyMessage:
    """The one message in `graph` (already normalized from legacy forms)."""
    r = Reader(graph)
    node = message_node(graph)
    types = r.types(node)
    header = {
        "id": r.string(node, SMARTAPI.id),
        "sender": str(r.iri(node, SMARTAPI.generatedBy)),
        "generated_at": r.datetime(node, SMARTAPI.generatedAt),
    }
    flex = [cls for cls, iri in FLEX_CLASSES.items() if iri in types]
    if len(flex) > 1:
        raise InvalidTerm("rdf:type", r.describe(node), "more than one information object class")
    if flex:
        return _flex(r, node, flex[0], header)
    if v.ERROR in types:
        code = r.number(node, SMARTAPI.errorCode)
        if not isinstance(code, int) or isinstance(code, bool):
            raise WrongDatatype(
                "smartapi:errorCode", r.describe(node), "errorCode is not an integer"
            )
        with r.building("smartapi:Error", node):
            return ErrorMessage(
                **header,  # type: ignore[arg-type]
                code=code,
                message=r.string(node, SMARTAPI.errorMessage) or "",
                in_reply_to=r.string(node, MGMS.inReplyTo, required=False),
            )
    activities = tuple(activity(r, a) for a in r.objects(node, SMARTAPI.activity))
    with r.building("rdf:type", node):
        if v.RESPONSE in types:
            return Response(
                **header,  # type: ignore[arg-type]
                activities=activities,
                in_reply_to=r.string(node, MGMS.inReplyTo, required=False),
            )
        if not activities:
            raise MissingTerm("smartapi:activity", r.describe(node), "no activity")
        if v.REQUEST in types:
            return Request(**header, activities=activities)  # type: ignore[arg-type]
        return Notification(**header, activities=activities)  # type: ignore[arg-type]


def _microgrid_entity(r: Reader, node: RdfNode) -> tuple[RdfNode, RdfNode, str]:
    acts = list(r.objects(node, SMARTAPI.activity))
    if len(acts) != 1:
        if not acts:
            raise MissingTerm("smartapi:activity", r.describe(node), "no activity")
        raise InvalidTerm("smartapi:activity", r.describe(node), f"{len(acts)} activities, want 1")
    act = acts[0]
    method = r.iri(act, SMARTAPI.method)
    if method != v.WRITE:
        raise InvalidTerm("smartapi:method", r.describe(act), f"{curie(method)} is not Write")
    ent = r.one(act, SMARTAPI.entity)
    assert ent is not None
    microgrid = r.string(ent, DCTERMS.identifier)
    assert microgrid is not None
    return act, ent, microgrid


def _columns(
    r: Reader, ent: RdfNode, columns: tuple[Column, ...]
) -> tuple[datetime, timedelta, dict[str, list[float]]]:
    found: dict[
        tuple[SeriesRole | None, QuantityKind, QuantityKind | None], tuple[RdfNode, TimeSeries]
    ] = {}
    for ts_node in r.objects(ent, SMARTAPI.timeSeries):
        ts = time_series(r, ts_node)
        key = (ts.role, ts.quantity, ts.of)
        if key in found:
            raise InvalidTerm(
                "smartapi:timeSeries", r.describe(ts_node), f"second {ts.role} {ts.quantity} series"
            )
        found[key] = (ts_node, ts)
    out: dict[str, list[float]] = {}
    start: datetime | None = None
    step: timedelta | None = None
    length: int | None = None
    for role, kind, of, _unit, attr in columns:
        if (role, kind, of) not in found:
            what = f"{role} {kind}" + (f" of {of}" if of else "")
            raise MissingTerm("smartapi:timeSeries", r.describe(ent), f"no {what} series")
        ts_node, ts = found[(role, kind, of)]
        if start is None:
            start, step, length = ts.start, ts.step, len(ts.values)
        elif (ts.start, ts.step, len(ts.values)) != (start, step, length):
            raise InvalidTerm(
                "smartapi:timeSeries",
                r.describe(ts_node),
                f"{role} {kind} series does not cover the same intervals as the others",
            )
        factor = v.TO_BASE.get(ts.unit, 1.0)
        out[attr] = [x * factor for x in ts.values] if factor != 1.0 else list(ts.values)
    assert start is not None and step is not None
    return start, step, out


def _intervals(cls: type[_Interval], columns: dict[str, list[float]]) -> tuple[_Interval, ...]:
    """One interval per row of the columns (each a field of `cls`), built positionally."""
    fields = list(cls.__dataclass_fields__)  # type: ignore[attr-defined]
    assert sorted(fields) == sorted(columns)  # and of one length (`_columns`)
    return tuple(map(cls, *(columns[f] for f in fields)))


def _flex(r: Reader, node: RdfNode, cls: type, header: Mapping[str, object]) -> AnyMessage:
    act, ent, microgrid = _microgrid_entity(r, node)
    common = {**header, "microgrid": microgrid}
    if cls is ReserveActivation:
        p = q = None
        for vo_node in r.objects(ent, SMARTAPI.valueObject):
            vo = value_object(r, vo_node)
            if vo.value is None or isinstance(vo.value, bool) or vo.unit is None:
                raise MissingTerm("rdf:value", r.describe(vo_node), "set point without a number")
            amount = float(vo.value) * v.TO_BASE.get(vo.unit, 1.0)
            if vo.quantity is QuantityKind.ACTIVE_POWER and p is None:
                p = amount
            elif vo.quantity is QuantityKind.REACTIVE_POWER and q is None:
                q = amount
            else:
                raise InvalidTerm(
                    "smartapi:valueObject", r.describe(vo_node), f"unexpected {vo.quantity} value"
                )
        if p is None or q is None:
            missing = "ActivePower" if p is None else "ReactivePower"
            raise MissingTerm("smartapi:valueObject", r.describe(ent), f"no {missing} set point")
        context = r.one(act, SMARTAPI.temporalContext)
        assert context is not None
        with r.building("mgms:ReserveActivation", node):
            return ReserveActivation(
                **common,  # type: ignore[arg-type]
                notification=r.string(node, MGMS.notificationId) or "",
                p_kw=p,
                q_kvar=q,
                start=r.datetime(context, SMARTAPI.start),  # type: ignore[arg-type]
                end=r.datetime(context, SMARTAPI.end, required=False),
            )
    if cls is FlexibilityForecast:
        start, step, cols = _columns(r, ent, FORECAST_COLUMNS)
        with r.building("mgms:FlexibilityForecast", node):
            return FlexibilityForecast(
                **common,  # type: ignore[arg-type]
                start=start,
                step=step,
                intervals=_intervals(ForecastInterval, cols),
            )
    if cls is ReserveNotification:
        purchase = r.string(node, MGMS.purchaseId)
        start, step, cols = _columns(r, ent, RESERVE_COLUMNS)
        with r.building("mgms:ReserveNotification", node):
            return ReserveNotification(
                **common,  # type: ignore[arg-type]
                purchase=purchase or "",
                start=start,
                step=step,
                intervals=_intervals(ReservedInterval, cols),
            )
    activation = r.string(node, MGMS.activationId)
    start, step, cols = _columns(r, ent, VERIFICATION_COLUMNS)
    with r.building("mgms:ReserveVerification", node):
        return ReserveVerification(
            **common,  # type: ignore[arg-type]
            activation=activation or "",
            start=start,
            step=step,
            intervals=_intervals(VerificationInterval, cols),
        )
