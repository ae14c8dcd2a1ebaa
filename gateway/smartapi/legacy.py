"""Rewrites Smart API 1.1 forms of an inbound graph into the current profile, in place.

Accepted legacy forms:
- NASA QUDT properties `qudt#unit` / `qudt#quantityKind` (data.nasa.gov/qudt/owl) for
  `qudt:hasUnit` / `qudt:hasQuantityKind`;
- NASA QUDT units (`unit#Kilowatt`, `unit#Kilowatthour`, ...) for current QUDT units;
- quantity kinds in the Smart API namespace (`smartapi:ActivePower`, ...) for QUDT ones;
- a time series on the Activity (where the 1.1 library writes it) instead of on the entity:
  moved to the activity's entity when it names exactly one;
- the 1.1 list shape of time series: `smartapi:list` (or `dcterms:abstract`) leading to a
  node whose `smartapi:entry` items carry `smartapi:index` and `rdf:value`, possibly one
  `dcterms:abstract` hop further, instead of an RDF collection;
- `smartapi:instant` (the library's time of a value object) for `dcterms:date`, when the
  value object does not carry both (then `dcterms:date` is the one read).

An unknown legacy unit is left as it is, so the decoder reports it as a wrong unit.
"""

from __future__ import annotations

from rdflib import BNode, Graph, Literal, URIRef
from rdflib.collection import Collection
from rdflib.namespace import DCTERMS, RDF, XSD
from rdflib.term import Node as RdfNode

from gateway.errors import InvalidTerm, MissingTerm, WrongDatatype
from gateway.smartapi.vocab import (
    LEGACY_QUANTITIES,
    LEGACY_UNITS,
    NASA_QUDT,
    NASA_UNIT,
    QUDT,
    SMARTAPI,
    UNIT,
)

_PREDICATES = {NASA_QUDT.unit: QUDT.hasUnit, NASA_QUDT.quantityKind: QUDT.hasQuantityKind}
_NASA_UNIT = str(NASA_UNIT)
_INTEGER_TYPES = {XSD.integer, XSD.int, XSD.long, XSD.short, XSD.nonNegativeInteger}


def has_legacy_forms(graph: Graph) -> bool:
    return (
        any((None, p, None) in graph for p in _PREDICATES)
        or any((None, None, qk) in graph for qk in LEGACY_QUANTITIES)
        or (None, SMARTAPI.entry, None) in graph
        or (None, SMARTAPI.instant, None) in graph
        or any(True for _ in _activity_series(graph))
    )


def _activity_series(graph: Graph) -> list[tuple[RdfNode, RdfNode]]:
    return [
        (a, ts)
        for a, ts in graph.subject_objects(SMARTAPI.timeSeries)
        if (a, RDF.type, SMARTAPI.Activity) in graph
    ]


def normalize(graph: Graph) -> bool:
    """Rewrite legacy forms; True if anything changed."""
    if not has_legacy_forms(graph):
        return False
    for old, new in _PREDICATES.items():
        for s, o in list(graph.subject_objects(old)):
            graph.remove((s, old, o))
            graph.add((s, new, _unit(o) if new == QUDT.hasUnit else o))
    for s, p, o in list(graph.triples((None, QUDT.hasUnit, None))):
        mapped = _unit(o)
        if mapped != o:
            graph.remove((s, p, o))
            graph.add((s, p, mapped))
    for old_qk, kind in LEGACY_QUANTITIES.items():
        for s, p in list(graph.subject_predicates(old_qk)):
            graph.remove((s, p, old_qk))
            graph.add((s, p, kind.iri))
    for activity, series in _activity_series(graph):
        entities = list(graph.objects(activity, SMARTAPI.entity))
        if len(entities) != 1:
            raise InvalidTerm(
                "smartapi:timeSeries",
                str(activity),
                f"a time series on an activity needs exactly one entity, not {len(entities)}",
            )
        graph.remove((activity, SMARTAPI.timeSeries, series))
        graph.add((entities[0], SMARTAPI.timeSeries, series))
    _rewrite_indexed_arrays(graph)
    for s, o in list(graph.subject_objects(SMARTAPI.instant)):
        graph.remove((s, SMARTAPI.instant, o))
        if (s, DCTERMS.date, None) not in graph:
            graph.add((s, DCTERMS.date, o))
    return True


def _unit(o: RdfNode) -> RdfNode:
    if isinstance(o, URIRef) and str(o).startswith(_NASA_UNIT):
        local = str(o)[len(_NASA_UNIT) :]
        if local in LEGACY_UNITS:
            return UNIT[LEGACY_UNITS[local]]
    return o


def _entries_holder(graph: Graph, node: RdfNode) -> RdfNode | None:
    if (node, SMARTAPI.entry, None) in graph:
        return node
    for inner in graph.objects(node, DCTERMS.abstract):
        if (inner, SMARTAPI.entry, None) in graph:
            return inner
        # the library's own writer: dcterms:abstract [ smartapi:indexedArray [ entry ... ] ]
        for array in graph.objects(inner, SMARTAPI.indexedArray):
            if (array, SMARTAPI.entry, None) in graph:
                return array
    return None


def _rewrite_indexed_arrays(graph: Graph) -> None:
    # a series names its list by smartapi:list, or (1.1) by dcterms:abstract on the series
    # itself; a dcterms:abstract inside the list node is a hop of the list shape
    series_nodes = set(graph.subjects(SMARTAPI.list)) | {
        s for s in graph.subjects(DCTERMS.abstract) if (s, SMARTAPI.timeStep, None) in graph
    }
    for series in series_nodes:
        for predicate in (SMARTAPI.list, DCTERMS.abstract):
            for start in list(graph.objects(series, predicate)):
                holder = _entries_holder(graph, start)
                if holder is None:
                    continue
                values = _ordered_values(graph, holder)
                _remove_tree(graph, start)
                graph.remove((series, predicate, start))
                head = BNode()
                Collection(graph, head, values)
                graph.add((series, SMARTAPI.list, head))


def _ordered_values(graph: Graph, holder: RdfNode) -> list[RdfNode]:
    by_index: dict[int, RdfNode] = {}
    for entry in graph.objects(holder, SMARTAPI.entry):
        index = graph.value(entry, SMARTAPI["index"])
        if index is None:
            raise MissingTerm("smartapi:index", str(entry), "list entry without index")
        if not isinstance(index, Literal) or index.datatype not in _INTEGER_TYPES:
            raise WrongDatatype("smartapi:index", str(entry), f"index {index!r} is not an integer")
        try:
            position = int(index)
        except ValueError as exc:
            raise WrongDatatype("smartapi:index", str(entry), f"index {index!r}: {exc}") from exc
        value = graph.value(entry, RDF.value)
        if value is None:
            raise MissingTerm("rdf:value", str(entry), "list entry without value")
        if position in by_index:
            raise InvalidTerm("smartapi:index", str(entry), f"index {position} repeated")
        by_index[position] = value
    if sorted(by_index) != list(range(len(by_index))):
        raise InvalidTerm(
            "smartapi:index", str(holder), f"indices {sorted(by_index)} are not 0..n-1"
        )
    return [by_index[i] for i in range(len(by_index))]


def _remove_tree(graph: Graph, node: RdfNode) -> None:
    """Remove the list node and the entries hanging off it; the entries' values (literals
    or Evaluation nodes) stay, linked from the new collection."""
    stack = [node]
    while stack:
        current = stack.pop()
        for p, o in list(graph.predicate_objects(current)):
            graph.remove((current, p, o))
            if p != RDF.value and isinstance(o, BNode):
                stack.append(o)
