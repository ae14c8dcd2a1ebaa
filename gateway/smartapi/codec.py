"""The Smart API codec: messages <-> bytes in Turtle, JSON-LD and N-Triples.

Encoding writes Turtle and N-Triples straight from the message tree (no rdflib graph);
JSON-LD goes through rdflib with the profile's compact @context. Decoding parses Turtle and
N-Triples with pyoxigraph (`oxparse`) and JSON-LD with rdflib, into the same indexed graph
either way, rewrites Smart API 1.1 forms (`legacy.normalize`), runs the fast shape check
(`check.ensure_valid`, which agrees with the shipped SHACL shapes) and builds the model.
The parsers' exceptions are translated here (and in `oxparse`) into `MessageParseError`.
"""

from __future__ import annotations

import enum
import gc
import json
import warnings
from typing import Any

from pyoxigraph import RdfFormat
from rdflib import Graph
from rdflib.plugins.stores.memory import Memory

from gateway.errors import (
    MessageParseError,
    SmartApiError,
    TooManyStatements,
    UnsupportedMediaType,
    WrongDatatype,
)
from gateway.smartapi import check, keep_literals_as_written, legacy, xsd
from gateway.smartapi.decode import decode_graph
from gateway.smartapi.encode import AnyMessage, to_tree
from gateway.smartapi.oxparse import IndexedGraph, index_of, parse_graph, too_many
from gateway.smartapi.tree import Node, to_graph, to_ntriples, to_turtle
from gateway.smartapi.vocab import PREFIXES


class Format(enum.StrEnum):
    TURTLE = "text/turtle"
    JSONLD = "application/ld+json"
    NTRIPLES = "application/n-triples"

    @property
    def rdflib_name(self) -> str:
        return {"text/turtle": "turtle", "application/ld+json": "json-ld"}.get(self.value, "nt")

    @property
    def oxigraph_format(self) -> RdfFormat:
        return RdfFormat.TURTLE if self is Format.TURTLE else RdfFormat.N_TRIPLES


_ALIASES = {
    "text/turtle": Format.TURTLE,
    "application/x-turtle": Format.TURTLE,
    "application/ld+json": Format.JSONLD,
    "application/n-triples": Format.NTRIPLES,
    "text/plain": Format.NTRIPLES,  # the historical N-Triples media type
}

#: statements of a JSON-LD document beyond which its parse is followed by a collection
COLLECT_AFTER = 5_000

#: the JSON-LD @context of every JSON-LD document we emit
JSONLD_CONTEXT: dict[str, str] = dict(PREFIXES)


def media_format(content_type: str | None) -> Format:
    """The format of a Content-Type header value (parameters ignored)."""
    if not content_type:
        return Format.TURTLE  # Smart API's default
    base = content_type.split(";", 1)[0].strip().lower()
    try:
        return _ALIASES[base]
    except KeyError:
        raise UnsupportedMediaType(
            f"content type {base!r} is not text/turtle, application/ld+json or "
            "application/n-triples"
        ) from None


def _sniffed(content_type: str | None, text: str) -> Format | None:
    """The format of a `text/plain` body, from its first token. The Smart API 1.1 library
    labels JSON-LD (and N-Triples) `text/plain; charset="us-ascii"`; text/plain is also the
    historical N-Triples type. A JSON document starts with `{` or `[`, a Turtle document
    with a directive (`@prefix`, `PREFIX`, ...); anything else stays N-Triples. The first
    token decides, never a failed parse, and the chosen parser's errors are reported."""
    if not content_type or content_type.split(";", 1)[0].strip().lower() != "text/plain":
        return None
    head = text.lstrip()[:8]
    if head[:1] in ("{", "["):
        return Format.JSONLD
    if head.lower().startswith(("@prefix", "@base", "prefix ", "base ")):
        return Format.TURTLE
    return Format.NTRIPLES


def negotiate(accept: str | None, default: Format = Format.TURTLE) -> Format:
    """The best format for an Accept header (q-values honoured; */* gives the default)."""
    if not accept:
        return default
    choices: list[tuple[float, int, Format]] = []
    for order, item in enumerate(accept.split(",")):
        parts = [p.strip() for p in item.split(";")]
        media = parts[0].lower()
        q = 1.0
        for param in parts[1:]:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        fmt = _ALIASES.get(media)
        if fmt is None and media in ("*/*", "text/*", "application/*"):
            fmt = default
        if fmt is not None and q > 0:
            choices.append((-q, order, fmt))
    if not choices:
        raise UnsupportedMediaType(f"cannot answer in any of {accept!r}")
    return min(choices)[2]


def serialize(roots: list[Node], fmt: Format = Format.TURTLE) -> bytes:
    if fmt is Format.TURTLE:
        return to_turtle(roots).encode()
    if fmt is Format.NTRIPLES:
        return to_ntriples(roots).encode()
    return serialize_graph(to_graph(roots), fmt)


def serialize_graph(graph: Graph, fmt: Format) -> bytes:
    if fmt is Format.JSONLD:
        text = graph.serialize(format="json-ld", context=JSONLD_CONTEXT, auto_compact=True)
    else:
        text = graph.serialize(format=fmt.rdflib_name)
    return text.encode()


def encode(msg: AnyMessage, fmt: Format = Format.TURTLE) -> bytes:
    return serialize(to_tree(msg), fmt)


def _reject_remote_contexts(data: Any) -> None:
    """A JSON-LD @context given by URL (or an @import in one) would make the parser fetch
    it over the network: refuse."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            context = item.get("@context")
            contexts = context if isinstance(context, list) else [context]
            if any(isinstance(c, str) for c in contexts) or "@import" in item:
                raise MessageParseError("JSON-LD @context by reference is not accepted")
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _load_json(text: str, max_statements: int | None) -> Any:
    """The JSON document, refused as soon as it holds more objects than a message of
    `max_statements` statements can need (every statement takes at least one object or
    array member beyond the first), so a padded document is never held whole."""
    limit = None if max_statements is None else 2 * max_statements
    objects = 0

    def counted(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal objects
        objects += 1
        if limit is not None and objects > limit:
            raise too_many(max_statements or 0)
        return dict(pairs)

    try:
        return json.loads(text, object_pairs_hook=counted)
    except RecursionError:
        raise MessageParseError("invalid JSON: nested too deeply") from None
    except ValueError as exc:  # also an integer beyond Python's digit limit
        raise MessageParseError(f"invalid JSON: {exc}") from exc


class _Budget(Memory):
    """rdflib's in-memory store that checks each statement while a parser fills it (its
    parsers add as they read): literals in XSD lexical forms only, and statement
    `limit + 1` refused, so a body padded with triples stops there."""

    def __init__(self, limit: int | None) -> None:
        super().__init__()
        self.limit = limit
        self.added = 0

    def add(self, triple: Any, context: Any, quoted: bool = False) -> None:
        self.added += 1
        if self.limit is not None and self.added > self.limit:
            raise too_many(self.limit)
        xsd.check_statement(*triple)
        super().add(triple, context, quoted)


def parse(body: bytes, content_type: str | None, max_statements: int | None = None) -> Graph:
    """Parse the body into a graph; any syntax problem is a MessageParseError, more than
    `max_statements` statements TooManyStatements (found while parsing, not after)."""
    fmt = media_format(content_type)
    keep_literals_as_written()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MessageParseError(f"body is not UTF-8: {exc}") from exc
    fmt = _sniffed(content_type, text) or fmt
    if fmt is not Format.JSONLD:
        return parse_graph(body, fmt.oxigraph_format, fmt.value, max_statements)
    document = _load_json(text, max_statements)
    _reject_remote_contexts(document)
    # rdflib takes the document as loaded (JSON is parsed once); a top-level array is
    # the default graph's node list
    document = document if isinstance(document, dict) else {"@graph": document}
    budget = _Budget(max_statements)  # also where each statement's literal is judged
    graph = Graph(store=budget)
    failure: SmartApiError | None = None
    try:
        with warnings.catch_warnings():
            # rdflib 7.6's JSON-LD parser builds a ConjunctiveGraph internally and warns
            # about its own use of it; nothing for us to act on
            warnings.filterwarnings("ignore", "ConjunctiveGraph is deprecated", DeprecationWarning)
            graph.parse(data=document, format=fmt.rdflib_name)  # type: ignore[arg-type]
    except (TooManyStatements, WrongDatatype) as exc:
        failure = exc.with_traceback(None)
    # rdflib raises many unrelated types; translated here, raised below once freed
    except Exception as exc:  # noqa: BLE001
        failure = MessageParseError(f"invalid {fmt.value}: {exc}")
    indexed = None if failure is not None else IndexedGraph(index_of(graph))
    if budget.added > COLLECT_AFTER:
        # rdflib's store and the graphs it keeps as contexts reference each other, and its
        # JSON-LD parser leaves a closure per statement in cycles: only the collector's next
        # full pass would free them (a refusal's traceback would hold them too, so it is
        # dropped). A large document's go now.
        del graph, document, budget
        gc.collect()
    if failure is not None:
        try:
            raise failure
        finally:
            del failure  # else exception -> traceback -> this frame -> exception: a cycle
    assert indexed is not None
    return indexed


def prepare(graph: Graph) -> Graph:
    """Legacy forms rewritten and the fast shape check passed (raises its typed error)."""
    legacy.normalize(graph)
    check.ensure_valid(graph)
    return graph


def decode(body: bytes, content_type: str | None) -> AnyMessage:
    return decode_graph(prepare(parse(body, content_type)))
