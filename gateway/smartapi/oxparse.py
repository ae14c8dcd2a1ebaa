"""Turtle and N-Triples read with pyoxigraph (Rust) into an rdflib graph.

rdflib's Turtle parser and its context-aware `Memory` store take about 20 ms for a
96-interval forecast (1,241 triples) here; pyoxigraph parses it in about 1 ms. The terms are
turned into rdflib terms once per distinct term and kept in `TripleIndex`, three nested
dictionaries without contexts, which `IndexedGraph.triples` reads directly (rdflib's own
stores answer each lookup through two generators and a context iterator, most of the cost of
the decoder's thousands of lookups). The decoder, the shape check, the legacy rewrite and the
signature check walk the same rdflib Graph API as before.

Literals keep their lexical form exactly as written (rdflib would normalize `"01"^^xsd:integer`
to `"1"`): the decoder's literal conversion sees what the sender wrote. Their Python value is
only computed when something asks for it (`WireLiteral`), which most literals of a message
never need before the decoder converts them itself.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Generator, Iterator
from typing import Any

import pyoxigraph as ox
from rdflib import BNode, Graph, Literal, URIRef
from rdflib.graph import _TripleOrTriplePathType, _TripleSelectorType
from rdflib.namespace import XSD
from rdflib.paths import Path
from rdflib.store import Store
from rdflib.term import Node as RdfNode

from gateway.errors import MessageParseError, TooManyStatements
from gateway.smartapi.xsd import check_statement

_XSD_STRING = str(XSD.string)
#: deepest `[ ]` / `( )` nesting accepted in Turtle; Smart API messages nest about ten deep
MAX_NESTING = 64
#: brackets, and what may hold brackets that are not structure: strings (long forms first),
#: IRIs, comments
_BRACKETS = re.compile(
    rb'"""(?:[^"\\]|\\.|"(?!""))*"""'
    rb"|'''(?:[^'\\]|\\.|'(?!''))*'''"
    rb'|"(?:[^"\\\r\n]|\\.)*"'
    rb"|'(?:[^'\\\r\n]|\\.)*'"
    rb"|<[^<>\s]*>"
    rb"|#[^\r\n]*"
    rb"|(?P<open>[(\[])|(?P<close>[)\]])",
    re.S,
)
_PENDING = object()


class WireLiteral(Literal):
    """An rdflib literal built from its lexical form as written, its Python value cast on
    first use by rdflib's own rules (`Literal(lexical, datatype, normalize=False)`)."""

    __slots__ = ()

    @classmethod
    def of(cls, lexical: str, datatype: URIRef) -> WireLiteral:
        inst = str.__new__(cls, lexical)
        inst._language = None
        inst._datatype = datatype
        inst._value = _PENDING
        inst._ill_typed = None
        return inst

    def _cast(self) -> None:
        full = Literal(str(self), datatype=self._datatype, normalize=False)
        self._value = full.value
        self._ill_typed = full.ill_typed

    @property
    def value(self) -> Any:
        if self._value is _PENDING:
            self._cast()
        return self._value

    @property
    def ill_typed(self) -> bool | None:
        if self._value is _PENDING:
            self._cast()
        return self._ill_typed


Triple = tuple[Any, Any, Any]
_Nested = dict[Any, dict[Any, dict[Any, None]]]


def _drop(index: _Nested, a: Any, b: Any, c: Any) -> None:
    inner = index[a]
    leaf = inner[b]
    del leaf[c]
    if not leaf:
        del inner[b]
        if not inner:
            del index[a]


def _keys(found: dict[Any, Any], wanted: Any) -> tuple[Any, ...]:
    if wanted is None:
        return tuple(found)
    return (wanted,) if wanted in found else ()


class TripleIndex(Store):
    """An in-memory triple store without contexts: subject, predicate and object indexes of
    nested dictionaries (insertion order kept, as rdflib's stores do)."""

    context_aware = False

    def __init__(self) -> None:
        super().__init__()
        self.spo: _Nested = {}
        self.pos: _Nested = {}
        self._osp: _Nested | None = None  # built on the first lookup by object alone
        self.count = 0
        self._namespaces: dict[str, URIRef] = {}
        self._prefixes: dict[URIRef, str] = {}

    def add(self, triple: Triple, context: Any, quoted: bool = False) -> None:
        s, p, o = triple
        leaf = self.spo.get(s, {}).get(p)
        if leaf is not None and o in leaf:
            return
        self.spo.setdefault(s, {}).setdefault(p, {})[o] = None
        self.pos.setdefault(p, {}).setdefault(o, {})[s] = None
        if self._osp is not None:
            self._osp.setdefault(o, {}).setdefault(s, {})[p] = None
        self.count += 1

    def remove(self, triple: Triple, context: Any = None) -> None:
        for s, p, o in list(self.match(*triple)):
            _drop(self.spo, s, p, o)
            _drop(self.pos, p, o, s)
            if self._osp is not None:
                _drop(self._osp, o, s, p)
            self.count -= 1

    @property
    def osp(self) -> _Nested:
        """The object index, which a message's decoding rarely needs: built when asked."""
        if self._osp is None:
            self._osp = {}
            for s, by_p in self.spo.items():
                for p, objects in by_p.items():
                    for o in objects:
                        self._osp.setdefault(o, {}).setdefault(s, {})[p] = None
        return self._osp

    def match(self, s: Any, p: Any, o: Any) -> Iterator[Triple]:
        """The triples matching the pattern (None is a wildcard), from a snapshot of the
        matching keys, so the caller may change the graph while iterating."""
        if s is not None:
            by_p = self.spo.get(s, {})
            for pred in _keys(by_p, p):
                for obj in _keys(by_p.get(pred, {}), o):
                    yield s, pred, obj
        elif p is not None:
            by_o = self.pos.get(p, {})
            for obj in _keys(by_o, o):
                for subj in tuple(by_o.get(obj, ())):
                    yield subj, p, obj
        elif o is not None:
            for subj, preds in tuple(self.osp.get(o, {}).items()):
                for pred in tuple(preds):
                    yield subj, pred, o
        else:
            for subj, by_p in tuple(self.spo.items()):
                for pred, objects in tuple(by_p.items()):
                    for obj in tuple(objects):
                        yield subj, pred, obj

    def triples(self, triple_pattern: Any, context: Any = None) -> Iterator[Any]:
        for triple in self.match(*triple_pattern):
            yield triple, iter(())

    def __len__(self, context: Any = None) -> int:
        return self.count

    def contexts(self, triple: Any = None) -> Generator[Any, None, None]:
        yield from ()

    def bind(self, prefix: str, namespace: URIRef, override: bool = True) -> None:
        if not override and (prefix in self._namespaces or namespace in self._prefixes):
            return
        self._namespaces[prefix] = namespace
        self._prefixes[namespace] = prefix

    def namespace(self, prefix: str) -> URIRef | None:
        return self._namespaces.get(prefix)

    def prefix(self, namespace: URIRef) -> str | None:
        return self._prefixes.get(namespace)

    def namespaces(self) -> Iterator[tuple[str, URIRef]]:
        yield from tuple(self._namespaces.items())


class IndexedGraph(Graph):
    """An rdflib graph on a `TripleIndex`, its triple lookups read straight from the index."""

    def __init__(self) -> None:
        self.index = TripleIndex()
        super().__init__(store=self.index)

    # one implementation for rdflib's three overloads (plain predicate, path, either)
    def triples(  # type: ignore[override]
        self, triple: _TripleSelectorType
    ) -> Generator[_TripleOrTriplePathType, None, None]:
        s, p, o = triple
        if isinstance(p, Path):
            yield from super().triples(triple)
        else:
            yield from self.index.match(s, p, o)

    # the decoder's most frequent lookups, one dictionary read instead of three generators

    def objects(
        self,
        subject: RdfNode | list[RdfNode] | None = None,
        predicate: Path | RdfNode | None = None,
        unique: bool = False,
    ) -> Generator[RdfNode, None, None]:
        if isinstance(subject, RdfNode) and isinstance(predicate, URIRef):
            yield from tuple(self.index.spo.get(subject, {}).get(predicate, ()))
        else:
            yield from super().objects(subject, predicate, unique)

    def subjects(
        self,
        predicate: Path | RdfNode | None = None,
        object: RdfNode | list[RdfNode] | None = None,
        unique: bool = False,
    ) -> Generator[RdfNode, None, None]:
        if isinstance(object, RdfNode) and isinstance(predicate, URIRef):
            yield from tuple(self.index.pos.get(predicate, {}).get(object, ()))
        else:
            yield from super().subjects(predicate, object, unique)


def _rdflib_term(term: ox.NamedNode | ox.BlankNode | ox.Literal | ox.Triple, fresh: str) -> RdfNode:
    if isinstance(term, ox.NamedNode):
        return URIRef(term.value)
    if isinstance(term, ox.BlankNode):
        # pyoxigraph keeps a document's labels (`_:a`): prefixed with one random token per
        # document (not rdflib's uuid4 per node, a system call each), so graphs merged from
        # several parts never share a blank node by accident
        return BNode(fresh + term.value)
    if isinstance(term, ox.Literal):
        if term.language:
            return Literal(term.value, lang=term.language)
        datatype = term.datatype.value
        if datatype == _XSD_STRING:
            return Literal(term.value)  # rdflib's form of a plain literal
        return WireLiteral.of(term.value, URIRef(datatype))
    raise MessageParseError("RDF-star quoted triples are not accepted")


def too_many(limit: int) -> TooManyStatements:
    return TooManyStatements(f"more than {limit} RDF statements, the limit for one message")


def check_nesting(body: bytes, limit: int = MAX_NESTING) -> None:
    """MessageParseError for Turtle nested deeper than `limit` brackets. pyoxigraph parses
    any depth without recursing, but a message that deep is malformed for this profile, and
    the decoder and the canonical form walk what it nests."""
    if body.count(b"(") + body.count(b"[") <= limit:
        return
    depth = 0
    for m in _BRACKETS.finditer(body):  # one match at a time: memory stays flat
        if m.lastgroup == "open":
            depth += 1
        elif m.lastgroup == "close":
            depth -= 1
        if depth > limit:
            raise MessageParseError(f"invalid text/turtle: nested deeper than {limit} levels")


def parse_graph(body: bytes, fmt: ox.RdfFormat, media: str, limit: int | None) -> Graph:
    """The triples of `body` in an rdflib graph; a syntax error is a MessageParseError naming
    the line and column, more than `limit` statements TooManyStatements (counted while
    parsing, so a padded body stops there)."""
    if fmt is ox.RdfFormat.TURTLE:
        check_nesting(body)
    graph = IndexedGraph()
    add = graph.index.add
    cache: dict[Any, RdfNode] = {}
    fresh = secrets.token_hex(8)
    count = 0
    try:
        for quad in ox.parse(body, fmt):
            count += 1
            if limit is not None and count > limit:
                raise too_many(limit)
            terms = []
            first_seen = quad.object not in cache
            for term in (quad.subject, quad.predicate, quad.object):
                found = cache.get(term)
                if found is None:
                    found = cache[term] = _rdflib_term(term, fresh)
                terms.append(found)
            if first_seen:  # a literal's form is judged once, at its first statement
                check_statement(terms[0], terms[1], terms[2])
            add((terms[0], terms[1], terms[2]), graph)
    except SyntaxError as exc:
        raise MessageParseError(f"invalid {media}: {exc}") from exc
    return graph
