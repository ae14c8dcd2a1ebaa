"""RDF collections found once by the parser's index (`TripleIndex.collections`): plain lists
are read from it, and anything else gets exactly the verdict of the general cell-by-cell
walk (the same code with no collection found), in the canonical form, the shape check and
the decoder."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from rdflib import BNode, Graph, Literal, URIRef
from rdflib.namespace import RDF, XSD

from gateway.errors import SmartApiError
from gateway.smartapi import examples
from gateway.smartapi import vocab as v
from gateway.smartapi.canonical import canonical_graph
from gateway.smartapi.check import violations
from gateway.smartapi.codec import Format, encode, parse
from gateway.smartapi.decode import decode_graph
from gateway.smartapi.oxparse import TripleIndex, index_of

Mutation = Callable[[Graph, list[list[BNode]]], None]
_P = URIRef("urn:test:p")


def _cells(graph: Graph) -> list[list[BNode]]:
    """The cells of each time series list, from the head."""
    out = []
    for head in graph.objects(None, v.SMARTAPI.list):
        cells, cell = [], head
        while cell != RDF.nil:
            cells.append(cell)
            cell = graph.value(cell, RDF.rest)
        out.append(cells)
    return out


def _relink(g: Graph, cell: BNode, after: object) -> None:
    g.remove((cell, RDF.rest, None))
    g.add((cell, RDF.rest, after))  # type: ignore[arg-type]


def _double(text: str) -> Literal:
    return Literal(text, datatype=XSD.double)


#: each mutation, and how many of the message's lists it leaves not plain
MALFORMED: dict[str, tuple[Mutation, int]] = {
    "two firsts": (lambda g, ls: g.add((ls[0][2], RDF.first, _double("9.5"))), 1),
    "two rests": (lambda g, ls: g.add((ls[0][2], RDF.rest, RDF.nil)), 1),
    "no first": (lambda g, ls: g.remove((ls[0][1], RDF.first, None)), 1),
    "cycle": (lambda g, ls: _relink(g, ls[0][-1], ls[0][1]), 1),
    "self loop": (lambda g, ls: _relink(g, ls[0][-1], ls[0][-1]), 1),
    "shared tail": (lambda g, ls: _relink(g, ls[0][1], ls[1][2]), 2),
    "cell typed": (lambda g, ls: g.add((ls[0][2], RDF.type, v.SMARTAPI.Evaluation)), 1),
    "cell named elsewhere": (lambda g, ls: g.add((URIRef("urn:test:x"), _P, ls[0][2])), 1),
    "cell as member": (lambda g, ls: g.set((ls[0][0], RDF.first, ls[0][3])), 1),
    "head shared": (lambda g, ls: g.add((URIRef("urn:test:x"), _P, ls[0][0])), 0),
    "ends in a literal": (lambda g, ls: _relink(g, ls[0][-1], _double("1")), 1),
    "ends in a named node": (lambda g, ls: _relink(g, ls[0][-1], URIRef("urn:test:end")), 1),
    "named cell": (lambda g, ls: _name_cell(g, ls[0][1], ls[0][0]), 1),
    "member not a number": (lambda g, ls: g.set((ls[0][3], RDF.first, Literal("x"))), 0),
}


def _name_cell(g: Graph, cell: BNode, before: BNode) -> None:
    named = URIRef("urn:test:cell")
    for p, o in list(g.predicate_objects(cell)):
        g.add((named, p, o))
    g.remove((cell, None, None))
    _relink(g, before, named)


def _outcome(fn: Callable[[], object]) -> object:
    try:
        return fn()
    except SmartApiError as exc:
        # blank node labels start with a random token per parse
        return (type(exc).__name__, re.sub("_:[0-9a-f]{16}", "_:", str(exc)))


def _verdicts(graph: Graph) -> tuple[object, object, object]:
    return (
        _outcome(lambda: canonical_graph(graph)),
        _outcome(lambda: [str(f) for f in violations(graph)]),
        _outcome(lambda: decode_graph(graph)),
    )


def _mutated(mutate: Mutation) -> bytes:
    """A 4-interval forecast with one mutation, as N-Triples (parsed again by the codec)."""
    g = parse(encode(examples.forecast(4)), "text/turtle")
    plain = Graph()
    for triple in g:
        plain.add(triple)
    mutate(plain, _cells(plain))
    return plain.serialize(format="nt", encoding="utf-8")


def test_plain_lists_are_found() -> None:
    graph = parse(encode(examples.forecast(4)), "text/turtle")
    heads = set(graph.objects(None, v.SMARTAPI.list))
    found = index_of(graph).collections()
    assert set(found) == heads
    for head, (cells, members) in found.items():
        assert cells[0] == head and len(cells) == len(members) == 4


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_lists_get_the_general_walks_verdict(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    mutate, spoiled = MALFORMED[name]
    body = _mutated(mutate)
    graph = parse(body, "application/n-triples")
    heads = set(graph.objects(None, v.SMARTAPI.list))
    # the lists at fault are not taken as plain collections, the others still are
    assert len(heads - index_of(graph).collections().keys()) == spoiled
    fast = _verdicts(graph)
    monkeypatch.setattr(TripleIndex, "collections", lambda self: {})
    general = _verdicts(parse(body, "application/n-triples"))
    assert fast == general


def test_a_well_formed_message_gets_the_same_verdicts(monkeypatch: pytest.MonkeyPatch) -> None:
    body = encode(examples.forecast(8))
    fast = _verdicts(parse(body, "text/turtle"))
    monkeypatch.setattr(TripleIndex, "collections", lambda self: {})
    assert fast == _verdicts(parse(body, "text/turtle"))
    assert fast[1] == []  # conforms, and decoded
    assert not isinstance(fast[2], tuple)


def test_a_graph_changed_after_parsing_finds_its_lists_again() -> None:
    graph = parse(encode(examples.forecast(4)), "text/turtle")
    before = canonical_graph(graph)
    cells = _cells(graph)[0]
    graph.set((cells[1], RDF.first, _double("123.5")))
    assert cells[0] in index_of(graph).collections()
    assert canonical_graph(graph) != before
    graph.add((cells[1], RDF.type, v.SMARTAPI.Evaluation))
    assert cells[0] not in index_of(graph).collections()


def test_list_links_are_found_by_object_and_predicate() -> None:
    # load leaves the list links out of the predicate index until a lookup needs them
    graph = parse(encode(examples.forecast(4)), "text/turtle")
    cells = _cells(graph)[0]
    assert list(graph.subjects(RDF.rest, cells[2])) == [cells[1]]
    graph = parse(encode(examples.forecast(4)), "text/turtle")
    assert list(graph.subject_predicates(cells[2])) == []  # another parse, other labels
    cells = _cells(graph)[0]
    assert list(graph.subject_predicates(cells[2])) == [(cells[1], RDF.rest)]
    member = graph.value(cells[0], RDF.first)
    assert (cells[0], RDF.first) in set(graph.subject_predicates(member))
    assert len(list(graph.triples((None, RDF.first, None)))) == 4 * len(_cells(graph))


def test_excluded_statement_on_a_list_cell() -> None:
    graph = parse(encode(examples.forecast(4)), "text/turtle")
    cell = _cells(graph)[0][2]
    member = graph.value(cell, RDF.first)
    assert member is not None
    without = canonical_graph(graph, exclude=[(cell, RDF.first, member)])
    assert without != canonical_graph(graph)
    graph.remove((cell, RDF.first, member))  # no longer a plain collection
    assert without == canonical_graph(graph)


def test_cells_kept_apart_read_like_any_statement() -> None:
    # the parser keeps plain list cells out of the subject index until a reader needs them
    # there; decoding (which reads the collections) first, then every other way in
    text = encode(examples.forecast(4))
    graph = parse(text, "text/turtle")
    decode_graph(graph)
    assert canonical_graph(graph) == canonical_graph(Graph().parse(data=text, format="turtle"))
    cells = _cells(graph)  # rdf:rest of each cell, through rdflib's Graph API
    assert [len(c) for c in cells] == [4] * len(cells)
    assert all(graph.value(cell, RDF.first) is not None for c in cells for cell in c)
    reference = Graph().parse(data=text, format="turtle")
    assert len(graph) == len(reference) == len(list(graph))
    assert canonical_graph(graph) == canonical_graph(reference)


_FIRST_NT, _REST_NT = f"<{RDF.first}>", f"<{RDF.rest}>"


def _layouts() -> dict[str, str]:
    """A 2-interval forecast as N-Triples, its list statements laid out in other ways."""
    lines = encode(examples.forecast(2), Format.NTRIPLES).decode().splitlines(keepends=True)
    links = [line for line in lines if _FIRST_NT in line or _REST_NT in line]
    rests = [line for line in links if _REST_NT in line]
    others = [line for line in lines if line not in links]
    cell = links[0].split(" ", 1)[0]
    return {
        "as written": "".join(lines),
        "rests before firsts": "".join(others + rests + [x for x in links if x not in rests]),
        "a link twice": "".join(lines + links[:1]),
        "a cell with a type": "".join([*lines, f"{cell} <{RDF.type}> <urn:test:Cell> .\n"]),
        "a named cell": "".join(lines).replace(f"{cell} ", "<urn:test:cell> "),
        "a first without a rest": "".join([*lines, f'_:extra {_FIRST_NT} "x" .\n']),
        "a rest without a first": "".join([*lines, f"_:extra {_REST_NT} <{RDF.nil}> .\n"]),
        "two firsts": "".join([*lines, f'{cell} {_FIRST_NT} "2.5E0"^^<{XSD.double}> .\n']),
    }


@pytest.mark.parametrize("name", list(_layouts()))
def test_any_layout_of_list_statements_is_the_same_graph(name: str) -> None:
    text = _layouts()[name]
    graph = parse(text.encode(), "application/n-triples")
    reference = Graph().parse(data=text, format="nt")
    assert len(graph) == len(reference)
    assert _outcome(lambda: canonical_graph(graph)) == _outcome(lambda: canonical_graph(reference))
    assert _kinds(graph) == _kinds(reference)


def _kinds(graph: Graph) -> tuple[object, object]:
    """What the shape check and the decoder make of a graph: the findings' and the error's
    types (blank node labels differ between parsers)."""
    decoded = _outcome(lambda: decode_graph(graph))
    return (
        [f.error for f in violations(graph)],
        decoded[0] if isinstance(decoded, tuple) else type(decoded),
    )
