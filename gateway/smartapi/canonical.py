"""The canonical form of a message graph, the input of the secure profile's signatures.

rdflib 7.6 has no RDF Dataset Canonicalization (URDNA2015), and its
`to_canonical_graph` needs about 30 s for a 96-interval forecast (measured here). The
profile therefore restricts blank nodes to trees, which every Smart API message is (each
blank node is the object of at most one triple, no cycles), and labels each blank node by
the SHA-256 of its own sorted outgoing edges, children first. Literals of numeric,
boolean and dateTime datatypes are written in one canonical lexical form, so Turtle,
N-Triples and JSON-LD carry the same canonical form. The result is the sorted, de-duplicated
N-Triples lines (LF line ends, UTF-8).

Two blank nodes with identical content get one label and so merge; the merged graph says
the same thing, and sender and receiver compute the same form.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation

from rdflib import BNode, Graph, Literal, URIRef
from rdflib.namespace import RDF, XSD
from rdflib.term import Node as RdfNode

from gateway.errors import InvalidTerm
from gateway.smartapi.tree import (
    Coll,
    Lit,
    Node,
    Obj,
    fmt_datetime,
    fmt_double,
    nt_iri,
    nt_literal,
)

_DOUBLES = {str(XSD.double), str(XSD.float)}
_INTEGERS = {
    str(XSD[t])
    for t in (
        "integer",
        "int",
        "long",
        "short",
        "byte",
        "nonNegativeInteger",
        "positiveInteger",
        "nonPositiveInteger",
        "negativeInteger",
        "unsignedInt",
        "unsignedLong",
        "unsignedShort",
        "unsignedByte",
    )
}
_DECIMAL = str(XSD.decimal)
_BOOLEAN = str(XSD.boolean)
_DATETIME = str(XSD.dateTime)

Triple = tuple[str, str, str]

_FIRST = nt_iri(str(RDF.first))
_REST = nt_iri(str(RDF.rest))
_NIL = nt_iri(str(RDF.nil))


def canonical_lexical(lexical: str, datatype: str | None) -> str:
    """One lexical form per value for the datatypes whose serializers rewrite lexical forms
    (JSON-LD turns numbers into JSON numbers); anything ill-typed stays as it is."""
    if datatype is None:
        return lexical
    try:
        if datatype in _DOUBLES:
            return fmt_double(float(lexical.strip()))
        if datatype in _INTEGERS:
            return str(int(lexical.strip()))
        if datatype == _DECIMAL:
            text = format(Decimal(lexical.strip()).normalize(), "f")
            return text if "." in text else text + ".0"
        if datatype == _BOOLEAN:
            word = lexical.strip()
            return {"1": "true", "0": "false"}.get(word, word)
        if datatype == _DATETIME:
            value = Literal(lexical, datatype=XSD.dateTime).value
            if value is not None and getattr(value, "tzinfo", None) is not None:
                return fmt_datetime(value)
    except (ValueError, ArithmeticError, InvalidOperation):
        pass
    return lexical


def canonical_literal(lit: Literal) -> str:
    datatype = str(lit.datatype) if lit.datatype is not None else None
    return nt_literal(canonical_lexical(str(lit), datatype), datatype, lit.language)


def _canonicalize(triples: Iterable[Triple]) -> bytes:
    """`triples` in N-Triples term syntax, blank nodes as "_:<label>"."""
    triples = list(triples)
    edges: dict[str, list[tuple[str, str]]] = {}
    parent: dict[str, str] = {}
    for s, p, o in triples:
        if s.startswith("_:"):
            edges.setdefault(s, []).append((p, o))
        if o.startswith("_:"):
            if o in parent:
                raise InvalidTerm(
                    "blank node", o, "blank node is the object of more than one triple"
                )
            parent[o] = s
    # children before parents, walking down from the blank nodes without a blank parent;
    # with in-degree <= 1, a blank node not reached that way sits on a cycle
    order: list[str] = []
    visited: set[str] = set()
    blanks = edges.keys() | parent.keys()
    for start in blanks:
        if start in visited or parent.get(start, "").startswith("_:"):
            continue
        visited.add(start)
        stack: list[tuple[str, bool]] = [(start, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            stack.append((node, True))
            for _, o in edges.get(node, ()):
                if o.startswith("_:"):
                    if o in visited:
                        raise InvalidTerm("blank node", o, "blank nodes form a cycle")
                    visited.add(o)
                    stack.append((o, False))
    if len(visited) != len(blanks):
        stray = sorted(blanks - visited)[0]
        raise InvalidTerm("blank node", stray, "blank nodes form a cycle")
    labels: dict[str, str] = {}
    sha256 = hashlib.sha256
    for node in order:
        lines = sorted(
            {f"{p} {labels[o] if o.startswith('_:') else o}" for p, o in edges.get(node, ())}
        )
        labels[node] = "_:c" + sha256("\n".join(lines).encode()).hexdigest()[:32]

    def key(term: str) -> str:
        return labels[term] if term.startswith("_:") else term

    out = {f"{key(s)} {p} {key(o)} .\n" for s, p, o in triples}
    return "".join(sorted(out)).encode()


def _graph_term(term: RdfNode, cache: dict[RdfNode, str]) -> str:
    found = cache.get(term)
    if found is not None:
        return found
    if isinstance(term, BNode):
        text = f"_:{term}"
    elif isinstance(term, URIRef):
        text = nt_iri(str(term))
    elif isinstance(term, Literal):
        text = canonical_literal(term)
    else:
        raise InvalidTerm("term", str(term), "unsupported RDF term")
    cache[term] = text
    return text


def canonical_graph(
    graph: Graph, exclude: Iterable[tuple[RdfNode, RdfNode, RdfNode]] = ()
) -> bytes:
    """Canonical N-Triples of an rdflib graph, leaving out the `exclude` triples."""
    skip = set(exclude)
    # predicates first: an IRI hashes in C, a triple of rdflib terms through Literal.__hash__
    skip_predicates = {p for _, p, _ in skip}
    cache: dict[RdfNode, str] = {}
    return _canonicalize(
        (_graph_term(s, cache), _graph_term(p, cache), _graph_term(o, cache))
        for s, p, o in graph
        if p not in skip_predicates or (s, p, o) not in skip
    )


def canonical_tree(roots: list[Node]) -> bytes:
    """Canonical N-Triples of a tree built by the codec; equal to `canonical_graph` of the
    same triples parsed from any serialization (tested), but computed bottom-up on the tree
    without building a graph. The tree's literal constructors already write canonical
    lexical forms."""
    out: set[str] = set()
    sha256 = hashlib.sha256

    def label(lines: set[str]) -> str:
        return "_:c" + sha256("\n".join(sorted(lines)).encode()).hexdigest()[:32]

    def term(obj: Obj) -> str:
        if isinstance(obj, Lit):
            return nt_literal(obj.lexical, obj.datatype)
        if isinstance(obj, Node):
            return visit(obj)
        if isinstance(obj, Coll):
            return collection(obj)
        return f"<{obj}>"

    def visit(node: Node) -> str:
        pairs = [(f"<{p}>", term(o)) for p, o in node.props]
        subject = f"<{node.iri}>" if node.iri is not None else label({f"{p} {o}" for p, o in pairs})
        out.update(f"{subject} {p} {o} .\n" for p, o in pairs)
        return subject

    def collection(coll: Coll) -> str:
        rest = _NIL
        for item in reversed(coll.items):
            first = term(item)
            cell = label({f"{_FIRST} {first}", f"{_REST} {rest}"})
            out.add(f"{cell} {_FIRST} {first} .\n")
            out.add(f"{cell} {_REST} {rest} .\n")
            rest = cell
        return rest

    for root in roots:
        visit(root)
    return "".join(sorted(out)).encode()
