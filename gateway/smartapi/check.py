"""The fast shape check: the hand-written twin of `shapes.ttl`, used on the hot path.

Each function mirrors one node shape of `gateway.smartapi.shapes` constraint by
constraint, so both give the same verdict on any graph (a test runs both on a corpus of
good and bad messages). Each finding names the term and the node and carries the typed
decode error it raises as.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import cast

from rdflib import Graph, Literal, URIRef
from rdflib.namespace import DCTERMS, RDF, XSD
from rdflib.term import Node as RdfNode

from gateway.errors import (
    InvalidTerm,
    LexicalFormError,
    MessageDecodeError,
    MissingTerm,
    NonFiniteValue,
    WrongDatatype,
    WrongUnit,
)
from gateway.smartapi import vocab as v
from gateway.smartapi import xsd
from gateway.smartapi.decode import NUMERIC, Reader, show
from gateway.smartapi.encode import FORECAST_COLUMNS, RESERVE_COLUMNS, VERIFICATION_COLUMNS, Column
from gateway.smartapi.messages import ID_PATTERN, QUALITY_PATTERN, TZ_PATTERN, SeriesRole
from gateway.smartapi.oxparse import WireLiteral, finite_doubles
from gateway.smartapi.vocab import MGMS, QUDT, SMARTAPI, UNIT, QuantityKind, curie

_ID = re.compile(ID_PATTERN)
_TZ = re.compile(TZ_PATTERN)
_QUALITY = re.compile(QUALITY_PATTERN)
_NONEMPTY = re.compile(".")
_DOUBLE_MAX = 1.7976931348623157e308
_DOUBLES = v.DOUBLES
_NONE: dict[RdfNode, dict[RdfNode, None]] = {}
_NO_OBJECTS: dict[RdfNode, None] = {}
_QKS = {k.iri: k for k in QuantityKind}
_UNITS = {UNIT[u] for us in v.UNITS_OF.values() for u in us}
_FIT = {k.iri: {UNIT[u] for u in us} for k, us in v.UNITS_OF.items()}
_ROLES = {MGMS[r.value] for r in SeriesRole}
_P_Q = {QuantityKind.ACTIVE_POWER.iri, QuantityKind.REACTIVE_POWER.iri}
_FLEX_COLUMNS = {
    MGMS.FlexibilityForecast: (FORECAST_COLUMNS, MGMS.purchaseId, False),
    MGMS.ReserveNotification: (RESERVE_COLUMNS, MGMS.purchaseId, True),
    MGMS.ReserveVerification: (VERIFICATION_COLUMNS, MGMS.activationId, True),
}


#: a column's role, quantity kind and quantity-of terms
_COLUMN_TERMS: dict[Column, tuple[URIRef, URIRef, URIRef | None]] = {
    column: (MGMS[column[0].value], column[1].iri, column[2].iri if column[2] else None)
    for columns, _, _ in _FLEX_COLUMNS.values()
    for column in columns
}
#: a time series by its roles, quantity kinds and quantityOf terms
_Described = tuple[set[RdfNode], set[RdfNode], set[RdfNode]]


def _name(path: URIRef | tuple[URIRef, ...]) -> str:
    """A property path as a finding names it."""
    return curie(path) if isinstance(path, URIRef) else "/".join(curie(p) for p in path)


@dataclass(frozen=True)
class Violation:
    error: type[MessageDecodeError]
    term: str
    node: str
    message: str

    def exception(self) -> MessageDecodeError:
        return self.error(self.term, self.node, self.message)

    def __str__(self) -> str:
        return f"{self.node}: {self.term}: {self.message}"


class _Checker:
    def __init__(self, graph: Graph) -> None:
        self.g = graph
        self.reader = Reader(graph)
        self.found: list[Violation] = []

    def fail(self, error: type[MessageDecodeError], term: str, node: RdfNode, msg: str) -> None:
        self.found.append(Violation(error, term, self.reader.describe(node), msg))

    # -- property helpers (sh:minCount / sh:maxCount / sh:datatype / sh:pattern) -------------

    def values(self, node: RdfNode, path: URIRef | tuple[URIRef, ...]) -> list[RdfNode]:
        if isinstance(path, URIRef):
            return self.reader.objects(node, path)
        frontier: list[RdfNode] = [node]
        for step in path:
            found = (o for n in frontier for o in self.reader.objects(n, step))
            frontier = list(dict.fromkeys(found))
        return frontier

    def count(
        self,
        node: RdfNode,
        path: URIRef | tuple[URIRef, ...],
        lo: int,
        hi: int | None,
    ) -> list[RdfNode]:
        found = self.values(node, path)
        if len(found) < lo:
            self.fail(MissingTerm, _name(path), node, "required term missing")
        elif hi is not None and len(found) > hi:
            self.fail(InvalidTerm, _name(path), node, f"{len(found)} values where at most {hi}")
        return found

    def strings(
        self,
        node: RdfNode,
        path: URIRef | tuple[URIRef, ...],
        required: bool,
        pattern: re.Pattern[str] | None = None,
    ) -> None:
        for value in self.count(node, path, 1 if required else 0, 1):
            if (
                not isinstance(value, Literal)
                or value.datatype not in (None, XSD.string)
                or (value.language is not None)
            ):
                self.fail(WrongDatatype, _name(path), node, f"{show(value)} is not an xsd:string")
            elif pattern is not None and not pattern.search(str(value)):
                self.fail(
                    InvalidTerm,
                    _name(path),
                    node,
                    f"{show(value)} does not match {pattern.pattern}",
                )

    def datetimes(self, node: RdfNode, path: URIRef, required: bool) -> None:
        for value in self.count(node, path, 1 if required else 0, 1):
            if not isinstance(value, Literal) or value.datatype != XSD.dateTime or value.ill_typed:
                self.fail(WrongDatatype, curie(path), node, f"{show(value)} is not an xsd:dateTime")
            elif not _TZ.search(str(value)):
                self.fail(WrongDatatype, curie(path), node, f"{show(value)} has no timezone")

    def number(self, value: RdfNode, allow_boolean: bool, term: str, node: RdfNode) -> None:
        """sh:datatype (a well-typed literal of a numeric type, or boolean where allowed)
        and, for doubles, the finite bounds. Well-typed is the XSD lexical form (`xsd`),
        which the parsers have already required of every literal of these types."""
        # the parser's literals first: isinstance on rdflib terms is an ABC check
        is_literal = value.__class__ is WireLiteral or isinstance(value, Literal)
        datatype = cast(Literal, value).datatype if is_literal else None
        # a parsed double directly: its form was checked when it was parsed
        number = value.double() if value.__class__ is WireLiteral else None
        if number is None and (datatype in NUMERIC or (allow_boolean and datatype == v.BOOLEAN)):
            try:
                number = xsd.number(str(value), str(datatype))
            except LexicalFormError:
                number = None
        if number is None:
            shown = show(value) if is_literal else self.reader.describe(value)
            self.fail(WrongDatatype, term, node, f"{shown} is not a number")
        elif datatype in _DOUBLES and not -_DOUBLE_MAX <= number <= _DOUBLE_MAX:
            self.fail(NonFiniteValue, term, node, f"{show(value)} is not finite")

    def one_of(
        self,
        node: RdfNode,
        path: URIRef,
        allowed: Collection[URIRef],
        lo: int,
        error: type[MessageDecodeError] = InvalidTerm,
    ) -> list[RdfNode]:
        found = self.count(node, path, lo, 1)
        for value in found:
            if value not in allowed:
                self.fail(error, curie(path), node, f"{curie(value)} is not allowed here")
        return found

    # -- node shapes ------------------------------------------------------------------------

    def message(self, node: RdfNode, types: set[RdfNode]) -> None:
        self.strings(node, SMARTAPI.id, True, _ID)
        for sender in self.count(node, SMARTAPI.generatedBy, 1, 1):
            if not isinstance(sender, URIRef):
                self.fail(InvalidTerm, "smartapi:generatedBy", node, "sender is not an IRI")
        self.datetimes(node, SMARTAPI.generatedAt, True)
        self.strings(node, MGMS.inReplyTo, False, _ID)
        activities = self.values(node, SMARTAPI.activity)
        for act in activities:
            self.activity(act)
        if types & {v.REQUEST, v.NOTIFICATION} and not activities:
            self.fail(MissingTerm, "smartapi:activity", node, "required term missing")
        if v.ERROR in types:
            for code in self.count(node, SMARTAPI.errorCode, 1, 1):
                if not isinstance(code, Literal) or code.datatype != XSD.integer or code.ill_typed:
                    self.fail(WrongDatatype, "smartapi:errorCode", node, "not an xsd:integer")
                elif not 100 <= int(code) <= 999:
                    self.fail(InvalidTerm, "smartapi:errorCode", node, f"code {code} out of range")
            self.strings(node, SMARTAPI.errorMessage, True, _NONEMPTY)
        for flex_class in types & {*_FLEX_COLUMNS, MGMS.ReserveActivation}:
            self.information_object(node, flex_class)

    def activity(self, node: RdfNode) -> None:
        self.one_of(node, SMARTAPI.method, {v.READ, v.WRITE}, 1)
        for ent in self.count(node, SMARTAPI.entity, 1, None):
            if not isinstance(ent, URIRef):
                self.fail(InvalidTerm, "smartapi:entity", node, "an entity must be an IRI")
            self.entity(ent)
        for context in self.count(node, SMARTAPI.temporalContext, 0, 1):
            self.datetimes(context, SMARTAPI.start, False)
            self.datetimes(context, SMARTAPI.end, False)

    def entity(self, node: RdfNode) -> None:
        self.strings(node, DCTERMS.identifier, False)
        self.strings(node, DCTERMS.title, False)
        for part in self.values(node, DCTERMS.hasPart):
            if not isinstance(part, URIRef):
                self.fail(InvalidTerm, "dcterms:hasPart", node, "a part must be an IRI")
        for vo in self.values(node, SMARTAPI.valueObject):
            self.value_object(vo)
        for ts in self.values(node, SMARTAPI.timeSeries):
            self.time_series(ts)

    def unit_fits(self, node: RdfNode) -> None:
        kinds = self.values(node, QUDT.hasQuantityKind)
        units = self.values(node, QUDT.hasUnit)
        if not kinds or not units:
            return
        if not any(
            isinstance(k, URIRef) and k in _FIT and all(u in _FIT[k] for u in units) for k in kinds
        ):
            shown = ", ".join(curie(u) for u in units)
            self.fail(WrongUnit, "qudt:hasUnit", node, f"{shown} does not fit the quantity kind")

    def value_object(self, node: RdfNode) -> None:
        self.one_of(node, QUDT.hasQuantityKind, _QKS, 0)
        self.one_of(node, QUDT.hasUnit, _UNITS, 0, WrongUnit)
        self.unit_fits(node)
        values = self.count(node, RDF.value, 0, 1)
        for value in values:
            self.number(value, True, "rdf:value", node)
        if values and not self.values(node, QUDT.hasUnit):
            self.fail(MissingTerm, "qudt:hasUnit", node, "a value needs a unit")
        self.strings(node, MGMS.point, False, _ID)
        self.strings(node, MGMS.role, False)
        self.strings(node, MGMS.quality, False, _QUALITY)
        self.datetimes(node, DCTERMS.date, False)

    def time_series(self, node: RdfNode) -> None:
        self.one_of(node, QUDT.hasQuantityKind, _QKS, 1)
        self.one_of(node, QUDT.hasUnit, _UNITS, 1, WrongUnit)
        self.unit_fits(node)
        for step in self.count(node, SMARTAPI.timeStep, 1, 1):
            if (
                not isinstance(step, Literal)
                or step.datatype not in (XSD.duration, XSD.dayTimeDuration)
                or step.ill_typed
            ):
                self.fail(WrongDatatype, "smartapi:timeStep", node, "not an xsd:duration")
        for context in self.count(node, SMARTAPI.temporalContext, 1, 1):
            self.datetimes(context, SMARTAPI.start, True)
            self.datetimes(context, SMARTAPI.end, False)
        heads = self.count(node, SMARTAPI.list, 1, 1)
        members = self._list_members(heads)
        if heads and not members:
            self.fail(MissingTerm, "smartapi:list", node, "empty time series")
        if finite_doubles(members) is not None:
            members = []  # the common case, settled in one pass
        for member in dict.fromkeys(members):
            if member.__class__ is WireLiteral:
                value = member.double()  # a parsed double: its form was checked when parsed
                if value is not None and -_DOUBLE_MAX <= value <= _DOUBLE_MAX:
                    continue  # the common case, settled without the general check
            if isinstance(member, Literal):
                self.number(member, False, "smartapi:list", node)
            else:
                for inner in self.count(member, RDF.value, 1, 1):
                    self.number(inner, False, "rdf:value", member)
        self.one_of(node, MGMS.role, _ROLES, 0)
        self.one_of(node, MGMS.quantityOf, _QKS, 0)

    def _list_members(self, heads: list[RdfNode]) -> list[RdfNode]:
        """Values of the path smartapi:list/rdf:rest*/rdf:first in the order of the general
        walk below (the last head's list first); a value may repeat (the caller keeps the
        first of each)."""
        lists = self.reader.index.collections()
        found = [lists[head] for head in reversed(heads) if head in lists]
        if len(found) == len(heads):  # plain collections, as the parser's index found them
            return [m for c in found for m in c.members]
        seen: set[RdfNode] = set()
        frontier = list(heads)
        members: dict[RdfNode, None] = {}
        spo = self.reader.index.spo
        while frontier:
            cell = frontier.pop()
            if cell in seen:
                continue
            seen.add(cell)
            by_p = spo.get(cell, _NONE)
            members.update(by_p.get(v.FIRST, _NO_OBJECTS))
            frontier.extend(by_p.get(v.REST, _NO_OBJECTS))
        return list(members)

    def information_object(self, node: RdfNode, flex_class: RdfNode) -> None:
        act, ent, ident = SMARTAPI.activity, SMARTAPI.entity, DCTERMS.identifier
        self.count(node, act, 1, 1)
        if v.WRITE not in self.values(node, (act, SMARTAPI.method)):
            self.fail(InvalidTerm, "smartapi:method", node, "information objects are Write")
        self.count(node, (act, ent), 1, 1)
        self.strings(node, (act, ent, ident), True, _ID)
        if flex_class == MGMS.ReserveActivation:
            self.activation(node)
            return
        columns, ref, has_ref = _FLEX_COLUMNS[flex_class]  # type: ignore[index]
        if has_ref:
            self.strings(node, ref, True, _ID)
        series = [
            (
                set(self.values(s, MGMS.role)),
                set(self.values(s, QUDT.hasQuantityKind)),
                set(self.values(s, MGMS.quantityOf)),
            )
            for s in self.values(node, (act, ent, SMARTAPI.timeSeries))
        ]
        for column in columns:
            self.column(node, series, column)

    def column(self, node: RdfNode, series: list[_Described], column: Column) -> None:
        """Exactly one of the series (each by its roles, quantity kinds and quantityOf)
        is the column's."""
        role, kind, of, _unit, _attr = column
        role_iri, kind_iri, of_iri = _COLUMN_TERMS[column]
        matching = [
            s
            for s in series
            if role_iri in s[0]
            and kind_iri in s[1]
            and (of_iri in s[2] if of_iri is not None else not s[2])
        ]
        if len(matching) != 1:
            what = f"{role.value} {kind.value}" + (f" of {of.value}" if of else "")
            error = MissingTerm if not matching else InvalidTerm
            self.fail(error, "smartapi:timeSeries", node, f"exactly one {what} series")

    def activation(self, node: RdfNode) -> None:
        act, ent = SMARTAPI.activity, SMARTAPI.entity
        self.strings(node, MGMS.notificationId, True, _ID)
        self.count(node, (act, SMARTAPI.temporalContext), 1, 1)
        self.count(node, (act, SMARTAPI.temporalContext, SMARTAPI.start), 1, None)
        vos = self.values(node, (act, ent, SMARTAPI.valueObject))
        for vo in vos:
            self.one_of(vo, QUDT.hasQuantityKind, _P_Q, 1)
            for value in self.count(vo, RDF.value, 1, None):
                self.number(value, False, "rdf:value", vo)
        for kind in (QuantityKind.ACTIVE_POWER, QuantityKind.REACTIVE_POWER):
            n = sum(kind.iri in self.values(vo, QUDT.hasQuantityKind) for vo in vos)
            if n != 1:
                error = MissingTerm if n == 0 else InvalidTerm
                self.fail(
                    error, "smartapi:valueObject", node, f"exactly one {kind.value} set point"
                )


def violations(graph: Graph) -> list[Violation]:
    """Every way the graph breaks the shapes (empty: it conforms)."""
    checker = _Checker(graph)
    for node in {s for t in v.MESSAGE_TYPES for s in graph.subjects(RDF.type, t)}:
        checker.message(node, set(graph.objects(node, RDF.type)))
    return checker.found


def ensure_valid(graph: Graph) -> None:
    """Raise the typed error of the first finding; all findings are on `.violations`."""
    found = violations(graph)
    if found:
        error = found[0].exception()
        error.violations = [str(f) for f in found]  # type: ignore[attr-defined]
        raise error
