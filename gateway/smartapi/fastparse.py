"""A fast reader for the Turtle most Smart API peers send (and all N-Triples).

rdflib's Turtle parser needs about 4 ms for a 50-triple activation here, most of the
activation's parse+verify budget. This reader handles the common subset (prefix
directives, absolute IRIs, prefixed names, quoted literals with datatype or language,
numbers, booleans, `a`, blank node labels and property lists, collections, `;` and `,`)
in one regular-expression tokenizer and a small recursive descent. Anything outside the
subset (base and relative IRIs, long strings, escapes in names, syntax errors) returns
None and the caller falls back to rdflib, which stays the reference: tests require both to
give the same graph.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from rdflib import BNode, Graph, Literal, URIRef
from rdflib.namespace import RDF, XSD
from rdflib.term import Node as RdfNode

from gateway.errors import TooManyStatements
from gateway.smartapi.xsd import check_statement

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+|\#[^\r\n]*)
  | (?P<iri><[^<>"{}|^`\\\x00-\x20]*>)
  | (?P<str>"(?:[^"\\\r\n]|\\[tbnrf"'\\]|\\u[0-9A-Fa-f]{4}|\\U[0-9A-Fa-f]{8})*")
  | (?P<dt>\^\^)
  | (?P<prefixkw>@prefix(?![A-Za-z0-9\-])|PREFIX(?![A-Za-z0-9_\-:]))
  | (?P<lang>@[A-Za-z]+(?:-[A-Za-z0-9]+)*)
  | (?P<bnode>_:[A-Za-z0-9_](?:[A-Za-z0-9_.\-]*[A-Za-z0-9_\-])?)
  | (?P<num>[+-]?(?:[0-9]+\.[0-9]*[eE][+-]?[0-9]+|\.[0-9]+[eE][+-]?[0-9]+
        |[0-9]+[eE][+-]?[0-9]+|[0-9]*\.[0-9]+|[0-9]+))
  | (?P<kw>(?:a|true|false)(?![A-Za-z0-9_\-:]))
  | (?P<pname>(?:[A-Za-z][A-Za-z0-9_\-]*)?:(?:[A-Za-z0-9_](?:[A-Za-z0-9_\-.]*[A-Za-z0-9_\-])?)?)
  | (?P<punct>[.;,\[\]()])
    """,
    re.VERBOSE,
)
_ESCAPES = {"t": "\t", "b": "\b", "n": "\n", "r": "\r", "f": "\f", '"': '"', "'": "'", "\\": "\\"}
_ESCAPE = re.compile(r"\\(?:([tbnrf\"'\\])|u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8}))")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")


class Unsupported(Exception):
    """Outside the subset (or malformed): let rdflib decide."""


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text

    def one(m: re.Match[str]) -> str:
        if m.group(1):
            return _ESCAPES[m.group(1)]
        return chr(int(m.group(2) or m.group(3), 16))

    return _ESCAPE.sub(one, text)


_EOF = ("eof", "")


def _tokens(text: str) -> Iterator[tuple[str, str]]:
    """The tokens of `text` one at a time (a padded body is never held as a token list)."""
    pos, end = 0, len(text)
    match = _TOKEN.match
    while pos < end:
        m = match(text, pos)
        if m is None:
            raise Unsupported(f"at {pos}")
        kind = m.lastgroup
        assert kind is not None
        if kind != "ws":
            yield kind, m.group()
        pos = m.end()


class _Parser:
    def __init__(self, tokens: Iterator[tuple[str, str]], limit: int | None) -> None:
        self._next = tokens.__next__
        self._ahead = self._pull()
        self.limit = limit
        self.prefixes: dict[str, str] = {}
        self.bnodes: dict[str, BNode] = {}
        self.triples: list[tuple[RdfNode, RdfNode, RdfNode]] = []

    def _pull(self) -> tuple[str, str]:
        try:
            return self._next()
        except StopIteration:
            return _EOF

    def peek(self) -> tuple[str, str]:
        return self._ahead

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self._ahead
        if token[0] == "eof" or (value is not None and token[1] != value):
            raise Unsupported(f"expected {value!r}, got {token[1]!r}")
        self._ahead = self._pull()
        return token

    def emit(self, s: RdfNode, p: RdfNode, o: RdfNode) -> None:
        check_statement(s, p, o)
        self.triples.append((s, p, o))
        if self.limit is not None and len(self.triples) > self.limit:
            raise too_many(self.limit)

    def document(self) -> list[tuple[RdfNode, RdfNode, RdfNode]]:
        while self.peek()[0] != "eof":
            kind, value = self.peek()
            if kind == "prefixkw":
                self.take()
                name = self.take()
                iri = self.take()
                if name[0] != "pname" or not name[1].endswith(":") or iri[0] != "iri":
                    raise Unsupported("prefix")
                self.prefixes[name[1][:-1]] = self._iri_text(iri[1])
                if value == "@prefix":
                    self.take(".")
                continue
            subject: RdfNode
            if value == "[":
                subject = self.blank_property_list()
                if self.peek()[1] != ".":
                    self.predicate_object_list(subject)
            else:
                subject = self.term()
                self.predicate_object_list(subject)
            self.take(".")
        return self.triples

    def _iri_text(self, token: str) -> str:
        iri = _unescape(token[1:-1])
        if not _SCHEME.match(iri):
            raise Unsupported("relative IRI")
        return iri

    def term(self) -> RdfNode:
        if self.peek()[1] == "[":
            return self.blank_property_list()
        kind, value = self.take()
        if kind == "iri":
            return URIRef(self._iri_text(value))
        if kind == "pname":
            prefix, _, local = value.partition(":")
            if prefix not in self.prefixes:
                raise Unsupported(f"undeclared prefix {prefix!r}")
            return URIRef(self.prefixes[prefix] + local)
        if kind == "bnode":
            return self.bnodes.setdefault(value, BNode())
        if kind == "str":
            lexical = _unescape(value[1:-1])
            nxt = self.peek()
            if nxt[0] == "dt":
                self.take()
                datatype = self.term()
                if not isinstance(datatype, URIRef):
                    raise Unsupported("datatype")
                return Literal(lexical, datatype=datatype)
            if nxt[0] == "lang":
                self.take()
                return Literal(lexical, lang=nxt[1][1:])
            return Literal(lexical)
        if kind == "num":
            if "e" in value or "E" in value:
                return Literal(value, datatype=XSD.double)
            if "." in value:
                return Literal(value, datatype=XSD.decimal)
            return Literal(value, datatype=XSD.integer)
        if kind == "kw" and value in ("true", "false"):
            return Literal(value, datatype=XSD.boolean)
        if value == "(":
            return self.collection()
        raise Unsupported(f"unexpected {value!r}")

    def blank_property_list(self) -> BNode:
        self.take("[")
        node = BNode()
        if self.peek()[1] != "]":
            self.predicate_object_list(node)
        self.take("]")
        return node

    def collection(self) -> RdfNode:
        items: list[RdfNode] = []
        while self.peek()[1] != ")":
            items.append(self.term())
        self.take(")")
        if not items:
            return RDF.nil
        head = BNode()
        cell = head
        for n, item in enumerate(items):
            self.emit(cell, RDF.first, item)
            nxt: RdfNode = BNode() if n + 1 < len(items) else RDF.nil
            self.emit(cell, RDF.rest, nxt)
            cell = nxt  # type: ignore[assignment]
        return head

    def predicate_object_list(self, subject: RdfNode) -> None:
        while True:
            kind, value = self.peek()
            if kind == "kw" and value == "a":
                self.take()
                predicate: RdfNode = RDF.type
            else:
                predicate = self.term()
                if not isinstance(predicate, URIRef):
                    raise Unsupported("predicate")
            while True:
                self.emit(subject, predicate, self.term())
                if self.peek()[1] != ",":
                    break
                self.take(",")
            if self.peek()[1] != ";":
                return
            while self.peek()[1] == ";":
                self.take(";")
            if self.peek()[1] in (".", "]"):
                return


def too_many(limit: int) -> TooManyStatements:
    return TooManyStatements(f"more than {limit} RDF statements, the limit for one message")


def triples(text: str, limit: int | None = None) -> list[tuple[RdfNode, RdfNode, RdfNode]] | None:
    """The triples of `text`, or None when it is outside the subset; TooManyStatements as
    soon as there are more than `limit`."""
    try:
        return _Parser(_tokens(text), limit).document()
    except (Unsupported, RecursionError):
        return None


def parse_into(graph: Graph, text: str, limit: int | None = None) -> bool:
    found = triples(text, limit)
    if found is None:
        return False
    graph.addN((s, p, o, graph) for s, p, o in found)
    return True


def iter_tokens(text: str) -> Iterator[tuple[str, str]]:
    """For tests: the token stream (raises Unsupported)."""
    yield from _tokens(text)
