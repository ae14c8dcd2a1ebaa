"""The canonical form of a message graph, the input of the secure profile's signatures.

rdflib 7.6 has no RDF Dataset Canonicalization (URDNA2015), and its
`to_canonical_graph` needs about 30 s for a 96-interval forecast (measured here). The
profile therefore restricts blank nodes to trees, which every Smart API message is (each
blank node is the object of at most one triple, no cycles), and labels each blank node by
the SHA-256 of its own sorted outgoing edges, children first. Literals of numeric,
boolean and dateTime datatypes are written in one canonical lexical form, so Turtle,
N-Triples and JSON-LD carry the same canonical form. The result is the sorted, de-duplicated
N-Triples lines (LF line ends, UTF-8). A blank node's lines are sorted and de-duplicated as one
entry (its label is the hash of what they say), a plain collection labelled cell by cell from
its tail.

Two blank nodes with identical content get one label and so merge; the merged graph says
the same thing, and sender and receiver compute the same form.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation

from rdflib import BNode, Graph, Literal, URIRef
from rdflib.namespace import RDF, XSD
from rdflib.term import Node as RdfNode

from gateway.errors import InvalidTerm
from gateway.smartapi.oxparse import Collection, index_of
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
from gateway.smartapi.vocab import FIRST, NIL, REST

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

Spo = dict[RdfNode, dict[RdfNode, dict[RdfNode, None]]]
_NONE: dict[RdfNode, dict[RdfNode, None]] = {}

_FIRST = nt_iri(str(RDF.first))
_REST = nt_iri(str(RDF.rest))
_NIL = nt_iri(str(RDF.nil))
_FIRST_EDGE = _FIRST + " "
_REST_EDGE = _REST + " "


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


def _term_text(term: RdfNode) -> str:
    """A named term or literal in N-Triples, literals in their canonical lexical form."""
    if isinstance(term, URIRef):
        return f"<{term}>"
    if isinstance(term, Literal):
        return canonical_literal(term)
    raise InvalidTerm("term", str(term), "unsupported RDF term")


def _shared(node: BNode) -> InvalidTerm:
    return InvalidTerm(
        "blank node", f"_:{node}", "blank node is the object of more than one triple"
    )


def _blank_order(spo: Spo, lists: dict[RdfNode, Collection]) -> list[BNode | Collection]:
    """Every blank node, children before parents, a plain collection's cells as one entry
    (`lists`, reached at its head: its cells are reached from nothing else); InvalidTerm when
    blank nodes are not trees (a blank node that is the object of two statements, or a
    cycle). The parsers make exact BNodes: `type(...) is BNode` (isinstance on rdflib terms
    is an ABC check)."""
    order: list[BNode | Collection] = []
    seen: set[BNode] = set()

    def walk(start: BNode) -> None:
        # each time a blank node is reached is one statement it is the object of
        stack: list[tuple[BNode | Collection, bool]] = [(start, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded or isinstance(node, Collection):
                order.append(node)
                continue
            coll = lists.get(node)
            if coll is not None:
                # the members in the order the cell-by-cell walk reaches them
                seen.update(coll.cells)
                stack.append((coll, True))
                for o in coll.members:
                    if type(o) is BNode:
                        if o in seen:
                            raise _shared(o)
                        seen.add(o)
                        stack.append((o, False))
                continue
            stack.append((node, True))
            for objects in spo.get(node, _NONE).values():
                for o in objects:
                    if type(o) is BNode:
                        if o in seen:
                            raise _shared(o)
                        seen.add(o)
                        stack.append((o, False))

    for subject, by_p in spo.items():
        if type(subject) is not BNode:
            for objects in by_p.values():
                for o in objects:
                    if type(o) is BNode:
                        if o in seen:
                            raise _shared(o)
                        seen.add(o)
                        walk(o)
    # blank nodes no named node leads to: roots of their own, or on a cycle
    rest = [s for s in spo if type(s) is BNode and s not in seen]
    if rest:
        _walk_unreached(spo, rest, seen, walk)
    return order


def _walk_unreached(
    spo: Spo, rest: list[BNode], seen: set[BNode], walk: Callable[[BNode], None]
) -> None:
    """Walk the blank subjects no named node leads to from those that are no statement's
    object; any left then sit on a cycle."""
    has_parent: set[BNode] = set()
    for subject in rest:
        for objects in spo[subject].values():
            for o in objects:
                if type(o) is BNode:
                    if o in seen or o in has_parent:
                        raise _shared(o)
                    has_parent.add(o)
    for root in rest:
        if root not in has_parent:
            seen.add(root)
            walk(root)
    stray = [s for s in rest if s not in seen]
    if stray:
        raise InvalidTerm("blank node", f"_:{sorted(stray)[0]}", "blank nodes form a cycle")


def canonical_graph(
    graph: Graph, exclude: Iterable[tuple[RdfNode, RdfNode, RdfNode]] = ()
) -> bytes:
    """Canonical N-Triples of an rdflib graph, leaving out the `exclude` triples. Read from
    the parser's index (`oxparse.index_of`): each distinct term written once, each blank
    node labelled from its own statements as they are written."""
    index = index_of(graph)
    spo = index.lean_spo()  # plain collections are labelled from `collections`
    texts: dict[RdfNode, str] = {}

    def text(term: RdfNode) -> str:
        found = texts[term] = _term_text(term)
        return found

    def edges(subject: RdfNode) -> list[str]:
        """ "predicate object" of the subject's statements, blank objects by their label."""
        out: list[str] = []
        for p, objects in spo.get(subject, _NONE).items():
            pt = texts.get(p) or text(p)
            for o in objects:
                out.append(f"{pt} {texts.get(o) or text(o)}")
        if subject in skip:
            return [e for e in out if e not in skip[subject]]
        return out

    skip: dict[RdfNode, set[str]] = {}
    for s, p, o in exclude:
        if (s, p, o) in graph:
            skip.setdefault(s, set()).add(f"{texts.get(p) or text(p)} {texts.get(o) or text(o)}")
    sha256 = hashlib.sha256
    # a blank node's lines are one entry: a label is the hash of what its lines say, so
    # equal labels come with equal lines, and sorting entries sorts the lines (labels are
    # of one length, and no named term's text starts like one)
    entries: list[str] = []
    for node in _blank_order(spo, index.collections()):  # children first: labels known
        if isinstance(node, Collection):
            cells, members = node
            if skip and not skip.keys().isdisjoint(cells):
                _label_cells_one_by_one(node, texts, text, skip, entries)
                continue
            # a plain collection, labelled from the tail back; its cells but the head are
            # the object of nothing else, so only the head's label is kept
            after = texts.get(NIL) or text(NIL)
            for item in reversed(members):
                first = _FIRST_EDGE + (texts.get(item) or text(item))
                rest = _REST_EDGE + after
                label = "_:c" + sha256(f"{first}\n{rest}".encode()).hexdigest()[:32]
                entries.append(f"{label} {first} .\n{label} {rest} .\n")
                after = label
            texts[cells[0]] = after
            continue
        by_p = spo.get(node, _NONE)
        firsts, rests = by_p.get(FIRST), by_p.get(REST)
        if len(by_p) == 2 and firsts and rests and len(firsts) == len(rests) == 1:
            # a list cell, most blank nodes of a message: its two edges, already in order
            # ("...#first" sorts before "...#rest")
            (item,), (after,) = firsts, rests
            mine = [
                _FIRST_EDGE + (texts.get(item) or text(item)),
                _REST_EDGE + (texts.get(after) or text(after)),
            ]
            if node in skip:
                mine = [e for e in mine if e not in skip[node]]
        else:
            mine = edges(node)  # distinct: the index holds each statement once
            mine.sort()
        label = texts[node] = "_:c" + sha256("\n".join(mine).encode()).hexdigest()[:32]
        entries.append("".join(f"{label} {edge} .\n" for edge in mine))
    for subject in spo:
        if type(subject) is not BNode:
            st = texts.get(subject) or text(subject)
            for edge in edges(subject):
                entries.append(f"{st} {edge} .\n")
    return "".join(sorted(set(entries))).encode()


def _label_cells_one_by_one(
    coll: Collection,
    texts: dict[RdfNode, str],
    text: Callable[[RdfNode], str],
    skip: dict[RdfNode, set[str]],
    entries: list[str],
) -> None:
    """Label a plain collection with an excluded statement on one of its cells: each cell
    from what is left of its two edges."""
    sha256 = hashlib.sha256
    after = texts.get(NIL) or text(NIL)
    cells, members = coll
    for cell, item in zip(reversed(cells), reversed(members), strict=True):
        mine = [_FIRST_EDGE + (texts.get(item) or text(item)), _REST_EDGE + after]
        if cell in skip:
            mine = [e for e in mine if e not in skip[cell]]
        after = texts[cell] = "_:c" + sha256("\n".join(mine).encode()).hexdigest()[:32]
        entries.append("".join(f"{after} {edge} .\n" for edge in mine))


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
