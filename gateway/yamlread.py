"""YAML text -> Python data straight from libyaml's event stream, with limits.

PyYAML's loaders compose the whole node tree before they build any data: for a mapping of
10,000 points that is 130,000 nodes with two marks each, ~50 MB held by the process for
the rest of its life (the allocator keeps the arenas). Here libyaml's parser (PyYAML's
`CSafeLoader`, C speed) hands over events and the data is built as they come, with the
safe loader's own tag resolution and scalar constructors, so the result is the one
`yaml.safe_load` gives, merge keys (`<<`) included. The line of every value is collected
only when asked for (to locate a problem), by a second pass.

Limits, checked while building: nesting depth, and the number of nodes once aliases are
expanded (a few aliases repeating each other expand to billions: an alias bomb); an alias
inside the very node it names is refused.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.events import (
    AliasEvent,
    CollectionStartEvent,
    DocumentStartEvent,
    Event,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    StreamEndEvent,
)

Loc = tuple[str | int, ...]

_Loader = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader

_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"
_NO_KEY = object()
_MERGE_KEY = object()  # a `<<` key, told apart from any string key


def _mark(event: Event | None) -> Any:
    """Where an event starts (the stubs type libyaml's marks apart from PyYAML's)."""
    return None if event is None else event.start_mark


class TooComplex(Exception):
    """The text is valid YAML but beyond what a mapping file may be."""


class _Open:
    """A mapping or sequence being built."""

    __slots__ = ("anchor", "key", "loc", "merges", "size", "value")

    def __init__(self, value: dict[Any, Any] | list[Any], loc: Loc, anchor: str | None) -> None:
        self.value = value
        self.loc = loc
        self.anchor = anchor
        self.size = 1
        self.key: Any = _NO_KEY
        self.merges: list[Any] = []


class _Builder:
    def __init__(
        self, text: str, max_depth: int, max_nodes: int, lines: dict[Loc, int] | None
    ) -> None:
        self.loader = _Loader(text)
        self.max_depth = max_depth
        self.max_nodes = max_nodes
        self.lines = lines
        self.stack: list[_Open] = []
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.root: Any = None
        self.documents = 0

    def run(self) -> Any:
        try:
            while True:
                event = self.loader.get_event()
                if event is None or isinstance(event, StreamEndEvent):
                    return self.root
                self._on(event)
        finally:
            self.loader.dispose()

    def _on(self, event: Event) -> None:
        if isinstance(event, ScalarEvent):
            self._scalar(event)
        elif isinstance(event, CollectionStartEvent):
            self._start(event)
        elif isinstance(event, MappingEndEvent | SequenceEndEvent):
            self._end()
        elif isinstance(event, AliasEvent):
            self._alias(event)
        elif isinstance(event, DocumentStartEvent):
            self.documents += 1
            if self.documents > 1:
                raise yaml.composer.ComposerError(
                    "expected a single document in the stream",
                    None,
                    "but found another document",
                    _mark(event),
                )

    def _child_loc(self) -> Loc | None:
        """Where the next value goes; None when it is a mapping key."""
        if not self.stack:
            return ()
        top = self.stack[-1]
        if isinstance(top.value, list):
            return (*top.loc, len(top.value))
        if top.key is _NO_KEY:
            return None
        return (*top.loc, top.key)

    def _note_line(self, event: Event) -> Loc | None:
        loc = self._child_loc()
        if loc is not None and self.lines is not None:
            self.lines[loc] = _mark(event).line + 1
        return loc

    def _scalar(self, event: ScalarEvent) -> None:
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.loader.resolve(yaml.ScalarNode, event.value, event.implicit)  # type: ignore[no-untyped-call]
        node = yaml.ScalarNode(tag, event.value, _mark(event), event.end_mark, event.style)  # type: ignore[arg-type]
        constructors = self.loader.yaml_constructors
        if tag == _MERGE and self.stack and self.stack[-1].key is _NO_KEY:
            value: Any = _MERGE_KEY
        else:
            value = (constructors.get(tag) or constructors[None])(self.loader, node)
        self._note_line(event)
        self._attach(value, 1, event)
        if event.anchor is not None:
            self.anchors[event.anchor] = (value, 1)

    def _start(self, event: CollectionStartEvent) -> None:
        is_map = isinstance(event, MappingStartEvent)
        tag = event.tag
        if tag not in (None, "!", _MAP if is_map else _SEQ):
            raise ConstructorError(
                None, None, f"tag {tag} is not supported in these files", _mark(event)
            )
        loc = self._note_line(event)
        if loc is None:
            raise ConstructorError(None, None, "a mapping key must be a plain value", _mark(event))
        if len(self.stack) >= self.max_depth:
            raise TooComplex(f"nested deeper than {self.max_depth} levels")
        self.stack.append(_Open({} if is_map else [], loc, event.anchor))

    def _end(self) -> None:
        done = self.stack.pop()
        value = done.value
        if isinstance(value, dict) and done.merges:
            merged: dict[Any, Any] = {}
            for source in reversed(done.merges):  # earlier sources win over later ones
                merged.update(source)
            merged.update(value)  # the mapping's own keys win over merged ones
            value.clear()
            value.update(merged)
        if done.anchor is not None:
            self.anchors[done.anchor] = (value, done.size)
        self._attach(value, done.size, None)

    def _alias(self, event: AliasEvent) -> None:
        anchor = event.anchor
        if anchor not in self.anchors:
            if any(o.anchor == anchor for o in self.stack):
                raise TooComplex(f"an alias that contains itself (*{anchor} inside &{anchor})")
            raise yaml.composer.ComposerError(
                None, None, f"found undefined alias {anchor!r}", _mark(event)
            )
        value, size = self.anchors[anchor]
        self._note_line(event)
        self._attach(value, size, event)

    def _attach(self, value: Any, size: int, event: Event | None) -> None:
        if not self.stack:
            self.root = value
            self._check_size(size)
            return
        top = self.stack[-1]
        if isinstance(top.value, list):
            top.value.append(value)
        elif top.key is _NO_KEY:
            if isinstance(value, dict | list):
                raise ConstructorError(
                    None, None, "a mapping key must be a plain value", _mark(event)
                )
            top.key = value
            return  # keys do not count as nodes
        else:
            if top.key is _MERGE_KEY:
                sources = value if isinstance(value, list) else [value]
                if not all(isinstance(s, dict) for s in sources):
                    raise ConstructorError(
                        None,
                        None,
                        "a merge key (<<) needs a mapping or a list of them",
                        _mark(event),
                    )
                top.merges.extend(sources)
            else:
                top.value[top.key] = value
            top.key = _NO_KEY
        top.size += size
        self._check_size(top.size)

    def _check_size(self, size: int) -> None:
        if size > self.max_nodes:
            raise TooComplex(
                f"more than {self.max_nodes} nodes once aliases are expanded"
                " (aliases that repeat each other?)"
            )


def load(text: str, *, max_depth: int, max_nodes: int) -> Any:
    """The data of a single-document YAML text, as `yaml.safe_load` builds it. Raises
    yaml.YAMLError (with a mark where libyaml has one) or TooComplex."""
    return _Builder(text, max_depth, max_nodes, None).run()


def lines(text: str, *, max_depth: int, max_nodes: int) -> dict[Loc, int]:
    """The line (1-based) where each value of the text starts, by its path of keys and
    indexes (values reached through an alias are found at the alias's path prefix)."""
    found: dict[Loc, int] = {}
    _Builder(text, max_depth, max_nodes, found).run()
    return found
