"""Turtle and N-Triples read with pyoxigraph (Rust) into the index every inbound stage reads.

rdflib's Turtle parser and its context-aware `Memory` store take about 20 ms for a
96-interval forecast (1,247 triples) here; pyoxigraph parses it in about 0.6 ms. pyoxigraph
parses and writes the triples back as N-Triples in one call, and `TripleIndex.load` splits
each line into its terms and files it in two nested dictionaries (subject -> predicate ->
objects, predicate -> object -> subjects) in one pass, each distinct term turned into an
rdflib term once. The decoder, the shape check and the canonical form read those
dictionaries directly (`index_of`), and the RDF collections (list cells, about 92 % of a
time-series message's statements) as the index finds them once per graph
(`TripleIndex.collections`): one tuple of members per well-formed list, so no stage walks
the cells again. When every list statement is of a plain cell (as pyoxigraph writes
collections), the cells are kept apart in two flat dictionaries instead of nested ones and
filed in the subject index only when a reader needs them there: the canonical form and
the decoder read the index without the inner cells of the collections found
(`lean_spo`), anything else sees every statement (`spo`, the Graph API). The legacy
rewrite, decryption and the 1.1 scheme use the same statements through rdflib's Graph API
(`IndexedGraph`).

The vocabulary terms the decoder compares in its loops (`vocab.INTERNED`) are handed out as
the very objects it compares with, so lookups match by identity: rdflib compares two
distinct equal terms in Python.

Literals keep their lexical form exactly as written (rdflib would normalize `"01"^^xsd:integer`
to `"1"`): the decoder's literal conversion sees what the sender wrote. Their rdflib value is
only computed when something asks for it (`WireLiteral`); the decoder converts them itself.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Generator, Iterator, Sequence
from contextlib import suppress
from itertools import chain, islice
from math import isfinite
from operator import attrgetter
from typing import Any

import pyoxigraph as ox
from rdflib import BNode, Graph, Literal, URIRef
from rdflib.graph import _TripleOrTriplePathType, _TripleSelectorType
from rdflib.namespace import XSD
from rdflib.paths import Path
from rdflib.store import Store
from rdflib.term import Node as RdfNode

from gateway.errors import MessageParseError, TooManyStatements
from gateway.smartapi.vocab import DOUBLES, FIRST, INTERNED, NIL, REST
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
#: the vocabulary's interned terms as N-Triples terms, the seed of each document's terms
_INTERNED_TERMS = {f"<{iri}>": term for iri, term in INTERNED.items()}


class WireLiteral(Literal):
    """An rdflib literal built from its lexical form as written, its Python value cast on
    first use by rdflib's own rules (`Literal(lexical, datatype, normalize=False)`). Its hash
    (rdflib's, computed in Python) is computed once: the index hashes each literal several
    times. An xsd:double or xsd:float keeps its float, computed once per distinct literal
    of a document: the stages read each time series member (`double`, `finite_doubles`)."""

    __slots__ = ("_double", "_hash")
    _hash: int
    _double: float | None

    @classmethod
    def of(cls, lexical: str, datatype: URIRef) -> WireLiteral:
        inst = str.__new__(cls, lexical)
        inst._language = None
        inst._datatype = datatype
        inst._value = _PENDING
        inst._ill_typed = None
        inst._hash = Literal.__hash__(inst)
        inst._double = None
        if datatype in DOUBLES:
            # a form float() does not read is refused when its statement is checked
            with suppress(ValueError):
                inst._double = float(lexical)
        return inst

    def __hash__(self) -> int:
        return self._hash

    def double(self) -> float | None:
        """The value of an xsd:double or xsd:float, None for other datatypes. Its form passed
        the XSD grammar when it was parsed (xsd.check_statement), which admits only what
        float() reads the same way: the decoder's most frequent conversion, done once."""
        return self._double

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


_DOUBLE = attrgetter("_double")


def finite_doubles(members: Sequence[Any]) -> list[float] | None:
    """The values of `members` when every one is a parsed xsd:double or xsd:float literal
    with a finite value (a time series as sent, nearly always), else None: read in C loops,
    where `WireLiteral.double` is one Python call per member."""
    if not members or set(map(type, members)) != _WIRE_ONLY:
        return None
    values = list(map(_DOUBLE, members))
    if None in values or not all(map(isfinite, values)):
        return None
    return values


Triple = tuple[Any, Any, Any]
_Nested = dict[Any, dict[Any, dict[Any, None]]]
_LIST_LINKS = (FIRST, REST)
_NO_PREDICATES: dict[Any, dict[Any, None]] = {}
_ABSENT = object()


class _NotPlainCells(Exception):
    """A document's list links are not all of plain cells: it is loaded statement by
    statement."""


_WIRE_ONLY = {WireLiteral}
_BNODE_ONLY = {BNode}


class Collection(tuple[tuple[Any, ...], tuple[Any, ...]]):
    """A well-formed RDF collection: its cells from the head and their members, in order."""

    __slots__ = ()

    @property
    def cells(self) -> tuple[Any, ...]:
        return self[0]

    @property
    def members(self) -> tuple[Any, ...]:
        return self[1]


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


def _walk_chain(
    head: Any, links: dict[Any, tuple[Any, Any]], outside: set[Any], shared: set[Any]
) -> Collection | None:
    """The collection from `head`, cell by cell, or None where a cell is not plain: named,
    not a cell, referenced from outside its chain or the rest of two cells."""
    cells: list[Any] = []
    members: list[Any] = []
    cell = head
    while True:
        item, after = links[cell]
        cells.append(cell)
        members.append(item)
        if after is NIL or (after.__class__ is not BNode and after == NIL):
            return Collection((tuple(cells), tuple(members)))
        if (
            after.__class__ is not BNode  # a named cell is written under its name
            or after not in links
            or after in outside
            or after in shared
        ):
            return None
        cell = after


class TripleIndex(Store):
    """An in-memory triple store without contexts: subject and predicate indexes of nested
    dictionaries (insertion order kept, as rdflib's stores do). A lookup by object alone
    scans the predicate index (only errors and legacy quantity kinds ask)."""

    context_aware = False

    def __init__(self) -> None:
        super().__init__()
        self._spo: _Nested = {}
        self.pos: _Nested = {}
        self.count = 0
        #: the list cells `load` keeps out of `_spo` (most statements of a time-series
        #: message): cell -> its rdf:first object, cell -> its rdf:rest object; each a blank
        #: node with one of each and nothing else. Filed in `_spo` when a reader needs them
        #: there (`spo`, `lean_spo`)
        self._firsts: dict[Any, Any] = {}
        self._rests: dict[Any, Any] = {}
        self._lean = False
        #: objects but literals of the rdf:first and rdf:rest statements `load` left out of
        #: `pos` (most statements of a message, looked up by object only to name a node in an
        #: error or to look for a legacy term): filed on first need (`_file_if_asked`)
        self._unfiled: list[Any] | None = None
        self._unfiled_set: set[Any] | None = None
        self._collections: dict[Any, Collection] | None = None
        self._namespaces: dict[str, URIRef] = {}
        self._prefixes: dict[URIRef, str] = {}

    @property
    def spo(self) -> _Nested:
        """Subject -> predicate -> objects, of every statement."""
        if self._firsts:
            self._file_cells(list(self._firsts))
        return self._spo

    def lean_spo(self) -> _Nested:
        """The subject index for a reader that takes plain collections from `collections`
        and walks no other list through them: every statement but those of the cells after
        the head of a collection found (only the cell before refers to each)."""
        if self._firsts and not self._lean:
            found = self.collections().values()
            outer = self._firsts.keys() - chain.from_iterable(c.cells[1:] for c in found)
            self._file_cells(list(filter(outer.__contains__, self._firsts)))  # in their order
            self._lean = True  # until the next load: a change files every cell first
        return self._spo

    def _file_cells(self, cells: list[Any]) -> None:
        spo, firsts, rests = self._spo, self._firsts, self._rests
        first, rest = FIRST, REST
        for cell in cells:
            spo[cell] = {first: {firsts.pop(cell): None}, rest: {rests.pop(cell): None}}

    def objects_of(self, s: Any, p: Any) -> tuple[Any, ...]:
        """The objects of the statements of subject `s` and predicate `p`."""
        if s in self._firsts:
            self._file_cells(list(self._firsts))
        return tuple(self._spo.get(s, _NO_PREDICATES).get(p, ()))

    def add(self, triple: Triple, context: Any, quoted: bool = False) -> None:
        s, p, o = triple
        self._collections = None
        if self._unfiled is not None:
            self._file_list_links()
        leaf = self.spo.get(s, {}).get(p)
        if leaf is not None and o in leaf:
            return
        self.spo.setdefault(s, {}).setdefault(p, {})[o] = None
        self.pos.setdefault(p, {}).setdefault(o, {})[s] = None
        self.count += 1

    def load(self, lines: list[str], fresh: str) -> None:
        """Add the statements of N-Triples lines written by pyoxigraph (without their " ."):
        each distinct term becomes an rdflib term once, and a literal's form is judged at
        its first statement (xsd.check_statement). Blank-node labels get `fresh` before
        them. Into an empty index, the list cells are kept apart (`_firsts`, `_rests`) when
        every rdf:first and rdf:rest statement is of a blank node with one of each (the
        first before the rest, as pyoxigraph writes them) and nothing else; otherwise the
        lines are loaded again, every statement into `_spo`."""
        if self._unfiled is not None:
            self._file_list_links()
        self._collections = None
        self._lean = False
        if not self.count:
            try:
                self._load(lines, fresh, cells_apart=True)
                return
            except _NotPlainCells:
                self._spo, self.pos, self._firsts, self._rests = {}, {}, {}, {}
                self._unfiled = self._unfiled_set = None
        self._load(lines, fresh, cells_apart=False)

    def _load(self, lines: list[str], fresh: str, cells_apart: bool) -> None:  # noqa: C901, PLR0912
        terms: dict[str, Any] = dict(_INTERNED_TERMS)
        spo, pos = self.spo, self.pos
        firsts, rests = self._firsts, self._rests
        added = 0
        first, rest = FIRST, REST
        new = str.__new__
        unfiled: list[Any] = []
        linked = False
        for line in lines:
            s, p, o = line.split(" ", 2)
            subject = terms.get(s)
            if subject is None:  # a blank node (most new terms: list cells) made here
                subject = terms[s] = new(BNode, fresh + s[2:]) if s[0] == "_" else _term(s, fresh)
            predicate = terms.get(p)
            if predicate is None:
                predicate = terms[p] = _term(p, fresh)
            obj = terms.get(o)
            if obj is None:
                kind = o[0]
                if kind == "_":
                    obj = terms[o] = new(BNode, fresh + o[2:])
                else:
                    obj = terms[o] = _term(o, fresh)
                    if kind == '"':
                        check_statement(subject, predicate, obj)
            if cells_apart:
                # a cell's statements are kept apart; anything else about a cell is not plain
                if predicate is first:
                    if subject in firsts:
                        if firsts[subject] is obj:
                            continue  # the same statement again
                        raise _NotPlainCells
                    firsts[subject] = obj
                    if o[0] != '"':
                        unfiled.append(obj)
                    continue
                if predicate is rest:
                    if subject in rests or subject not in firsts:
                        if rests.get(subject, _ABSENT) is obj:
                            continue
                        raise _NotPlainCells
                    rests[subject] = obj
                    unfiled.append(obj)
                    continue
            is_link = predicate is first or predicate is rest
            if is_link:
                # filed in `pos` on first need (_file_if_asked), which files them for any
                # literal asked for: only the other objects are kept to look them up
                linked = True
                if o[0] != '"':
                    unfiled.append(obj)
            by_p = spo.get(subject)
            if by_p is None:
                by_p = spo[subject] = {}
            leaf = by_p.get(predicate)
            if leaf is None:
                by_p[predicate] = {obj: None}
            elif obj in leaf:
                continue  # the same statement again
            else:
                leaf[obj] = None
            added += 1
            if is_link:
                continue
            by_o = pos.get(predicate) or pos.setdefault(predicate, {})
            subjects = by_o.get(obj)
            if subjects is None:
                by_o[obj] = {subject: None}
            else:
                subjects[subject] = None
        if firsts and (
            len(rests) != len(firsts)  # a cell without a rest
            or set(map(type, firsts)) != _BNODE_ONLY  # a named cell
            or not firsts.keys().isdisjoint(spo.keys())  # a cell with other statements
        ):
            raise _NotPlainCells
        self.count += added + len(firsts) + len(rests)
        if linked or firsts:
            self._unfiled = unfiled

    def _file_if_asked(self, p: Any, o: Any) -> None:
        """File the list links `load` left out of `pos` if a lookup by predicate `p` or by
        object `o` alone could find one of them."""
        unfiled = self._unfiled
        if unfiled is None:
            return
        if p is not None:
            if p not in _LIST_LINKS:
                return
        elif o is not None and not isinstance(o, Literal):
            if self._unfiled_set is None:
                self._unfiled_set = set(unfiled)
            if o not in self._unfiled_set:
                return
        self._file_list_links()

    def _file_list_links(self) -> None:
        """File the rdf:first and rdf:rest statements `load` left out of `pos`."""
        self._unfiled = self._unfiled_set = None
        pos = self.pos
        for s, by_p in self.spo.items():
            for p in _LIST_LINKS:
                objects = by_p.get(p)
                if objects:
                    by_o = pos.setdefault(p, {})
                    for o in objects:
                        by_o.setdefault(o, {})[s] = None

    def collections(self) -> dict[Any, Collection]:
        """The well-formed RDF collections by head, found once per graph: a chain of cells,
        each with exactly one rdf:first and one rdf:rest and nothing else, ending at rdf:nil,
        every cell but the head a blank node, the object of its predecessor's rdf:rest and of
        nothing else. Anything else (two firsts, a cycle, a shared tail, a cell that is also a
        member or carries more) is left out, for the readers' general walk to judge."""
        if self._collections is not None:
            return self._collections
        # objects of every statement but the list links: a cell among them is referenced
        # from outside its chain
        outside = {o for p, by_o in self.pos.items() if p not in _LIST_LINKS for o in by_o}
        first, rest = FIRST, REST
        links: dict[Any, tuple[Any, Any]] = {}
        for s, by_p in self._spo.items():
            if len(by_p) == 2:
                try:
                    (item,) = by_p[first]
                    (after,) = by_p[rest]
                except (KeyError, ValueError):  # not exactly one of each
                    continue
                links[s] = (item, after)
        firsts = self._firsts
        if firsts:
            after = map(self._rests.__getitem__, firsts)
            links.update(zip(firsts, zip(firsts.values(), after, strict=True), strict=True))
        targets: set[Any] = set()
        shared: set[Any] = set()
        for item, after in links.values():
            if item.__class__ is BNode:
                outside.add(item)  # a cell that is also a member is not plain
            if after in targets:
                shared.add(after)
            else:
                targets.add(after)
        found: dict[Any, Collection] = {}
        for head in links.keys() - targets:
            walked = _walk_chain(head, links, outside, shared)
            if walked is not None:
                found[head] = walked
        self._collections = found
        return found

    def remove(self, triple: Triple, context: Any = None) -> None:
        self._collections = None
        if self._unfiled is not None:
            self._file_list_links()
        for s, p, o in list(self.match(*triple)):
            _drop(self.spo, s, p, o)
            _drop(self.pos, p, o, s)
            self.count -= 1

    def match(self, s: Any, p: Any, o: Any) -> Iterator[Triple]:
        """The triples matching the pattern (None is a wildcard), from a snapshot of the
        matching keys, so the caller may change the graph while iterating."""
        if s is None:
            self._file_if_asked(p, o)
        if s is not None:
            if s in self._firsts:
                self._file_cells(list(self._firsts))
            by_p = self._spo.get(s, {})
            for pred in _keys(by_p, p):
                for obj in _keys(by_p.get(pred, {}), o):
                    yield s, pred, obj
        elif p is not None:
            by_o = self.pos.get(p, {})
            for obj in _keys(by_o, o):
                for subj in tuple(by_o.get(obj, ())):
                    yield subj, p, obj
        elif o is not None:
            # by object alone (naming a blank node in an error, legacy quantity kinds):
            # rare enough that a scan of the predicates beats keeping a third index
            for pred, by_o in tuple(self.pos.items()):
                for subj in tuple(by_o.get(o, ())):
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

    def __init__(self, index: TripleIndex | None = None) -> None:
        self.index = index if index is not None else TripleIndex()
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
            yield from self.index.objects_of(subject, predicate)
        else:
            yield from super().objects(subject, predicate, unique)

    def subjects(
        self,
        predicate: Path | RdfNode | None = None,
        object: RdfNode | list[RdfNode] | None = None,
        unique: bool = False,
    ) -> Generator[RdfNode, None, None]:
        if isinstance(object, RdfNode) and isinstance(predicate, URIRef):
            self.index._file_if_asked(predicate, object)
            yield from tuple(self.index.pos.get(predicate, {}).get(object, ()))
        else:
            yield from super().subjects(predicate, object, unique)


def _unescaped(literal: str) -> str:
    """The lexical form of an N-Triples literal that holds escapes, read by pyoxigraph (rare:
    a quote, backslash or control character in a string)."""
    quad = next(ox.parse(b"<x:s> <x:p> " + literal.encode() + b" .", ox.RdfFormat.N_TRIPLES))
    return str(quad.object.value)


def _term(text: str, fresh: str) -> RdfNode:
    """The rdflib term of one N-Triples term as pyoxigraph writes it (IRIs already checked
    by its parser, so rdflib's IRI check is skipped)."""
    first = text[0]
    if first == "<":
        if text[1] == "<":
            raise MessageParseError("RDF-star quoted triples are not accepted")
        return str.__new__(URIRef, text[1:-1])
    if first == "_":
        # pyoxigraph keeps a document's labels (`_:a`): prefixed with one random token per
        # document (not rdflib's uuid4 per node, a system call each), so graphs merged from
        # several parts never share a blank node by accident
        return str.__new__(BNode, fresh + text[2:])
    body, _, tail = text[1:].rpartition('"')
    lexical = _unescaped(text) if "\\" in body else body
    if not tail:
        return Literal(lexical)  # rdflib's form of a plain literal
    if tail[0] == "@":
        return Literal(lexical, lang=tail[1:])
    iri = tail[3:-1]
    return WireLiteral.of(lexical, INTERNED.get(iri) or str.__new__(URIRef, iri))


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
    the line and column, more than `limit` statements TooManyStatements (parsing stops at
    statement `limit + 1`, so a padded body is never held whole).

    pyoxigraph parses and writes the triples back as N-Triples in one call (Rust from end to
    end); each line splits into its three terms at the first two spaces, and each distinct
    term is turned into an rdflib term once (and a literal's form judged once)."""
    if fmt is ox.RdfFormat.TURTLE:
        check_nesting(body)
    quads: Iterator[ox.Quad] = ox.parse(body, fmt)
    if limit is not None:
        quads = islice(quads, limit + 1)
    try:
        text = ox.serialize(quads, format=ox.RdfFormat.N_TRIPLES)
    except SyntaxError as exc:
        raise MessageParseError(f"invalid {media}: {exc}") from exc
    assert text is not None
    lines = text.decode().split(" .\n")
    lines.pop()  # after the last line end
    if limit is not None and len(lines) > limit:
        raise too_many(limit)
    graph = IndexedGraph()
    graph.index.load(lines, secrets.token_hex(8))
    return graph


def index_of(graph: Graph) -> TripleIndex:
    """The triple index of a parsed graph, or one built from any other rdflib graph (a
    graph made by hand, in tests or tools): the decoder, the shape check and the canonical
    form read statements through this one interface."""
    if isinstance(graph, IndexedGraph):
        return graph.index
    index = TripleIndex()
    for s, p, o in graph:
        index.add((s, p, o), None)
    return index
