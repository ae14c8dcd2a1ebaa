"""The canonical form: equal exactly for isomorphic graphs, whatever the serialization."""

from __future__ import annotations

import pytest
from rdflib import BNode, Graph, Literal, URIRef
from rdflib.compare import isomorphic
from rdflib.namespace import RDF, XSD

from gateway.errors import InvalidTerm
from gateway.smartapi import examples
from gateway.smartapi.canonical import canonical_graph, canonical_lexical, canonical_tree
from gateway.smartapi.codec import Format, encode, parse, serialize_graph
from gateway.smartapi.encode import AnyMessage, to_tree

from .samples import all_messages


@pytest.mark.parametrize("msg", all_messages(), ids=lambda m: type(m).__name__)
def test_tree_and_graph_paths_agree_in_every_format(msg: AnyMessage) -> None:
    expected = canonical_tree(to_tree(msg))
    for fmt in Format:
        graph = parse(encode(msg, fmt), fmt.value)
        assert canonical_graph(graph) == expected, fmt
        again = parse(serialize_graph(graph, fmt), fmt.value)  # rdflib's own writers
        assert canonical_graph(again) == expected, f"rdflib {fmt}"


def test_equal_canonical_form_iff_isomorphic() -> None:
    msgs = all_messages()
    graphs = [parse(encode(m), "text/turtle") for m in msgs]
    for i, a in enumerate(graphs):
        for b in graphs[i:]:
            assert (canonical_graph(a) == canonical_graph(b)) == isomorphic(a, b)


def test_lexical_forms() -> None:
    dbl, integer, boolean = str(XSD.double), str(XSD.integer), str(XSD.boolean)
    assert canonical_lexical("1.25e+01", dbl) == canonical_lexical("12.5", dbl) == "12.5E0"
    assert canonical_lexical("007", integer) == "7"
    assert canonical_lexical("1", boolean) == "true"
    assert canonical_lexical("2025-06-02T12:00:00+02:00", str(XSD.dateTime)) == (
        "2025-06-02T10:00:00Z"
    )
    assert canonical_lexical("ten", dbl) == "ten"


def test_changes_are_visible() -> None:
    g = parse(encode(examples.reserve_activation()), "text/turtle")
    before = canonical_graph(g)
    vo = next(iter(g.subjects(RDF.value, None)))
    g.set((vo, RDF.value, Literal("10.5", datatype=XSD.double)))
    assert canonical_graph(g) != before


def test_shared_or_cyclic_blank_nodes_are_refused() -> None:
    a, b, shared = URIRef("urn:a"), URIRef("urn:b"), BNode()
    g = Graph()
    g.add((a, URIRef("urn:p"), shared))
    g.add((b, URIRef("urn:p"), shared))
    with pytest.raises(InvalidTerm, match="more than one"):
        canonical_graph(g)
    x, y = BNode(), BNode()
    g = Graph()
    g.add((x, URIRef("urn:p"), y))
    g.add((y, URIRef("urn:p"), x))
    with pytest.raises(InvalidTerm, match="cycle"):
        canonical_graph(g)


def test_a_cycle_below_a_named_node_is_refused() -> None:
    # _:x is reached from <urn:a> and again from _:y: the object of two statements
    a, p, x, y = URIRef("urn:a"), URIRef("urn:p"), BNode(), BNode()
    g = Graph()
    g.add((a, p, x))
    g.add((x, p, y))
    g.add((y, p, x))
    with pytest.raises(InvalidTerm, match="more than one"):
        canonical_graph(g)


def test_blank_trees_no_named_node_leads_to() -> None:
    # a blank root with a blank child, beside a named node: labelled like any tree, and
    # equal for any labelling of the blank nodes
    def graph() -> Graph:
        g = Graph()
        root, child, p = BNode(), BNode(), URIRef("urn:p")
        g.add((root, p, child))
        g.add((child, p, Literal("1", datatype=XSD.integer)))
        g.add((URIRef("urn:a"), p, Literal("x")))
        return g

    first, second = canonical_graph(graph()), canonical_graph(graph())
    assert first == second
    assert first.count(b"_:c") == 3  # root (subject), child (object and subject)
    assert b"<urn:a> <urn:p> " in first


def test_excluded_statement_on_a_blank_node() -> None:
    g = parse(encode(examples.reserve_activation()), "text/turtle")
    vo = next(iter(g.subjects(RDF.value, None)))
    value = g.value(vo, RDF.value)
    assert value is not None
    without = canonical_graph(g, exclude=[(vo, RDF.value, value)])
    g.remove((vo, RDF.value, value))
    assert without == canonical_graph(g)


def test_blank_nodes_of_equal_content_give_each_line_once_in_order() -> None:
    # two plain lists of one member, a list under a named head whose blank tail has the
    # same content, and a blank node with the same two edges reached as a value: one label
    # for all of them, each line once, all lines sorted
    turtle = b"""
        @prefix rdf: <http://www.w3.org/1999/02/22-rdf-syntax-ns#> .
        <urn:a> <urn:p> ( 2.0 ) ; <urn:q> ( 2.0 ) ; <urn:r> <urn:head> ;
            <urn:s> [ rdf:first 2.0 ; rdf:rest rdf:nil ] .
        <urn:head> rdf:first 1.0 ; rdf:rest ( 2.0 ) .
    """
    text = canonical_graph(parse(turtle, "text/turtle")).decode()
    lines = text.splitlines(keepends=True)
    assert lines == sorted(set(lines))
    blank_labels = {line.split(" ", 1)[0] for line in lines if line.startswith("_:")}
    assert len(blank_labels) == 1
    assert len(lines) == 2 + 4 + 2  # the shared cell's two, <urn:a>'s four, the head's two
    reference = Graph().parse(data=turtle.decode(), format="turtle")
    assert text.encode() == canonical_graph(reference)
