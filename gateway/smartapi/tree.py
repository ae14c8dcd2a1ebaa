"""A small tree form of the graphs the codec emits, and its writers.

Every message the codec builds is a tree: named nodes (IRIs) at the top, blank nodes nested
under exactly one parent, RDF collections for ordered values. Writing Turtle, N-Triples and
the canonical form straight from this tree keeps rdflib's graph building off the hot path;
`to_graph` gives the same triples as an rdflib graph (JSON-LD output, the reference path).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from rdflib import BNode, Graph, Literal, URIRef
from rdflib.namespace import RDF, XSD

from gateway.smartapi.vocab import PREFIXES


@dataclass(frozen=True, slots=True)
class Lit:
    """A literal in the lexical form we emit (already canonical for our datatypes)."""

    lexical: str
    datatype: str | None = None  # None: plain xsd:string


@dataclass(slots=True)
class Node:
    """A subject with its predicate/object pairs; `iri` None makes it a blank node."""

    iri: str | None = None
    props: list[tuple[str, Obj]] = field(default_factory=list)

    def add(self, predicate: str, obj: Obj) -> Node:
        self.props.append((predicate, obj))
        return self


@dataclass(frozen=True, slots=True)
class Coll:
    """An RDF collection (rdf:List) of literals, IRIs or nodes."""

    items: tuple[Lit | Node | URIRef, ...]


Obj = URIRef | Lit | Node | Coll

_XSD_DOUBLE = str(XSD.double)
_XSD_INTEGER = str(XSD.integer)
_XSD_BOOLEAN = str(XSD.boolean)
_XSD_DATETIME = str(XSD.dateTime)
_XSD_DURATION = str(XSD.duration)
_XSD_STRING = str(XSD.string)


# -- literal constructors (our lexical forms are the canonical ones) -------------------------


def fmt_double(value: float) -> str:
    """Shortest round-trip form, always with an exponent (a valid Turtle DOUBLE)."""
    if not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("INF" if value > 0 else "-INF")
    text = repr(float(value))
    mantissa, _, exponent = text.partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    return f"{mantissa}E{int(exponent) if exponent else 0}"


def double(value: float) -> Lit:
    return Lit(fmt_double(value), _XSD_DOUBLE)


def integer(value: int) -> Lit:
    return Lit(str(int(value)), _XSD_INTEGER)


def boolean(value: bool) -> Lit:
    return Lit("true" if value else "false", _XSD_BOOLEAN)


def string(value: str) -> Lit:
    return Lit(value)


def fmt_datetime(value: datetime) -> str:
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def date_time(value: datetime) -> Lit:
    return Lit(fmt_datetime(value), _XSD_DATETIME)


def fmt_duration(value: timedelta) -> str:
    """xsd:duration of a positive timedelta in days/hours/minutes/seconds (PT15M, P1DT2H)."""
    total_us = value.days * 86_400_000_000 + value.seconds * 1_000_000 + value.microseconds
    sign = "-" if total_us < 0 else ""
    total_us = abs(total_us)
    days, rest = divmod(total_us, 86_400_000_000)
    hours, rest = divmod(rest, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    seconds, micro = divmod(rest, 1_000_000)
    out = f"{sign}P" + (f"{days}D" if days else "")
    time = ""
    if hours:
        time += f"{hours}H"
    if minutes:
        time += f"{minutes}M"
    if seconds or micro:
        time += f"{seconds}.{micro:06d}".rstrip("0") + "S" if micro else f"{seconds}S"
    if time:
        out += "T" + time
    return out if out not in ("P", "-P") else "PT0S"


def duration(value: timedelta) -> Lit:
    return Lit(fmt_duration(value), _XSD_DURATION)


def number(value: float | int | bool) -> Lit:
    if isinstance(value, bool):
        return boolean(value)
    if isinstance(value, int):
        return integer(value)
    return double(value)


# -- N-Triples terms -------------------------------------------------------------------------

_NT_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_NT_SPECIAL = re.compile(r'[\\"\n\r\t]')


def nt_string(text: str) -> str:
    if _NT_SPECIAL.search(text) is None:
        return f'"{text}"'
    return '"' + _NT_SPECIAL.sub(lambda m: _NT_ESCAPES[m.group()], text) + '"'


def nt_literal(lexical: str, datatype: str | None, lang: str | None = None) -> str:
    quoted = nt_string(lexical)
    if lang:
        return f"{quoted}@{lang.lower()}"
    if datatype is None or datatype == _XSD_STRING:
        return quoted
    return f"{quoted}^^<{datatype}>"


def nt_iri(iri: str) -> str:
    return f"<{iri}>"


# -- writers ---------------------------------------------------------------------------------


def iter_triples(roots: list[Node]) -> Iterator[tuple[str, str, Lit | str, bool]]:
    """(subject, predicate, object, object_is_iri) with blank nodes labelled _:b<n>;
    subject strings starting with "_:" are blank nodes, IRIs are bare."""
    counter = 0

    def label() -> str:
        nonlocal counter
        counter += 1
        return f"_:b{counter}"

    stack: list[tuple[Node, str]] = [(r, r.iri or label()) for r in reversed(roots)]
    while stack:
        node, subject = stack.pop()
        for predicate, obj in node.props:
            if isinstance(obj, Coll):
                if not obj.items:
                    yield subject, predicate, str(RDF.nil), True
                    continue
                cell = label()
                yield subject, predicate, cell, True
                for i, item in enumerate(obj.items):
                    if isinstance(item, Node):
                        child = item.iri or label()
                        stack.append((item, child))
                        yield cell, str(RDF.first), child, True
                    else:
                        yield cell, str(RDF.first), item, isinstance(item, str)
                    nxt = label() if i + 1 < len(obj.items) else str(RDF.nil)
                    yield cell, str(RDF.rest), nxt, True
                    cell = nxt
            elif isinstance(obj, Node):
                child = obj.iri or label()
                stack.append((obj, child))
                yield subject, predicate, child, True
            else:
                yield subject, predicate, obj, isinstance(obj, str)


def _nt_term(term: str) -> str:
    return term if term.startswith("_:") else nt_iri(term)


def to_ntriples(roots: list[Node]) -> str:
    lines = []
    for s, p, o, is_iri in iter_triples(roots):
        obj = _nt_term(o) if is_iri else nt_literal(o.lexical, o.datatype)  # type: ignore[union-attr,arg-type]
        lines.append(f"{_nt_term(s)} <{p}> {obj} .\n")
    return "".join(lines)


def to_graph(roots: list[Node], graph: Graph | None = None) -> Graph:
    graph = graph if graph is not None else Graph()
    for prefix, ns in PREFIXES.items():
        graph.bind(prefix, ns)
    bnodes: dict[str, BNode] = {}

    def term(t: str) -> URIRef | BNode:
        if t.startswith("_:"):
            return bnodes.setdefault(t, BNode())
        return URIRef(t)

    for s, p, o, is_iri in iter_triples(roots):
        if is_iri:
            obj: URIRef | BNode | Literal = term(o)  # type: ignore[arg-type]
        else:
            assert isinstance(o, Lit)
            obj = Literal(o.lexical, datatype=URIRef(o.datatype) if o.datatype else None)
        graph.add((term(s), URIRef(p), obj))
    return graph


_PN_LOCAL = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_SORTED_PREFIXES = sorted(PREFIXES.items(), key=lambda kv: -len(kv[1]))


def _curie(iri: str) -> str:
    for prefix, ns in _SORTED_PREFIXES:
        if iri.startswith(ns):
            local = iri[len(ns) :]
            if _PN_LOCAL.match(local):
                return f"{prefix}:{local}"
    return nt_iri(iri)


_TTL_NUMERIC = {_XSD_DOUBLE, _XSD_INTEGER, _XSD_BOOLEAN}


def _ttl_literal(lit: Lit) -> str:
    if lit.datatype in _TTL_NUMERIC and lit.lexical not in ("NaN", "INF", "-INF"):
        return lit.lexical
    quoted = nt_string(lit.lexical)
    if lit.datatype is None or lit.datatype == _XSD_STRING:
        return quoted
    return f"{quoted}^^{_curie(lit.datatype)}"


def to_turtle(roots: list[Node], newline: str = "\n") -> str:
    """Turtle with the profile's prefixes; blank nodes nested, collections inline.

    `newline` "\\r\\n" gives the Smart API 1.1 signing form.
    """
    out: list[str] = [f"@prefix {p}: <{ns}> .{newline}" for p, ns in PREFIXES.items()]
    rdf_type = str(RDF.type)

    def obj_text(obj: Obj, indent: str) -> str:
        if isinstance(obj, Lit):
            return _ttl_literal(obj)
        if isinstance(obj, Node):
            if obj.iri is not None:
                return _curie(obj.iri)
            return "[" + body(obj, indent + "    ") + f"{newline}{indent}]"
        if isinstance(obj, Coll):
            items = " ".join(obj_text(i, indent + "    ") for i in obj.items)
            return f"( {items} )"
        return _curie(obj)

    def body(node: Node, indent: str) -> str:
        parts: list[str] = []
        for predicate, obj in node.props:
            pred = "a" if predicate == rdf_type else _curie(predicate)
            parts.append(f"{newline}{indent}{pred} {obj_text(obj, indent)}")
        return " ;".join(parts)

    named: list[Node] = []

    def collect(node: Node) -> None:
        for _, obj in node.props:
            children = obj.items if isinstance(obj, Coll) else (obj,)
            for child in children:
                if isinstance(child, Node):
                    if child.iri is not None and child.props:
                        named.append(child)
                    collect(child)

    for root in roots:
        named.append(root)
        collect(root)
    for node in named:
        subject = _curie(node.iri) if node.iri else "[]"
        out.append(f"{newline}{subject}" + body(node, "    ") + f" .{newline}")
    return "".join(out)


def find_named(roots: list[Node], iri: str) -> Node | None:
    """The node with this IRI that carries properties, anywhere in the tree."""
    stack: list[Obj] = list(roots)
    while stack:
        obj = stack.pop()
        if isinstance(obj, Node):
            if obj.iri == iri and obj.props:
                return obj
            stack.extend(o for _, o in obj.props)
        elif isinstance(obj, Coll):
            stack.extend(obj.items)
    return None


def named_below(root: Node) -> list[str]:
    """IRIs of the nodes with properties nested under `root` (e.g. a message's entities)."""
    out: list[str] = []
    stack: list[Obj] = [o for _, o in root.props]
    while stack:
        obj = stack.pop()
        if isinstance(obj, Node):
            if obj.iri is not None and obj.props and obj.iri not in out:
                out.append(obj.iri)
            stack.extend(o for _, o in obj.props)
        elif isinstance(obj, Coll):
            stack.extend(obj.items)
    return out


def replace_named(roots: list[Node], iri: str, new: Node) -> list[Node]:
    """A copy of the tree with the node named `iri` replaced; the input is not changed."""

    def swap(obj: Obj) -> Obj:
        if isinstance(obj, Node):
            if obj.iri == iri and obj.props:
                return new
            return Node(obj.iri, [(p, swap(o)) for p, o in obj.props])
        if isinstance(obj, Coll):
            return Coll(tuple(swap(i) for i in obj.items))  # type: ignore[misc]
        return obj

    return [swap(r) for r in roots]  # type: ignore[misc]


def message_id_of(root: Node) -> str:
    from gateway.smartapi.vocab import SMARTAPI

    for predicate, obj in root.props:
        if predicate == str(SMARTAPI.id) and isinstance(obj, Lit):
            return obj.lexical
    raise ValueError("tree root is not a message")
