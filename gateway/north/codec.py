"""The pipeline's MessageCodec on the Smart API layer (gateway.smartapi)."""

from __future__ import annotations

from typing import cast

from rdflib import Graph, Literal

from gateway.errors import MessageDecodeError
from gateway.north.wire import JSON_LD, TURTLE
from gateway.smartapi import codec
from gateway.smartapi.decode import decode_graph, message_node
from gateway.smartapi.encode import AnyMessage
from gateway.smartapi.messages import Message
from gateway.smartapi.vocab import SMARTAPI


class SmartApiCodec:
    """Turtle and JSON-LD bodies to typed messages and back."""

    accepted_types = frozenset({TURTLE, JSON_LD})

    def parse(self, body: bytes, content_type: str) -> Graph:
        return codec.parse(body, content_type)

    def message_id(self, parsed: Graph) -> str | None:
        try:
            node = message_node(parsed)
        except MessageDecodeError:
            return None
        value = parsed.value(node, SMARTAPI.id)
        return str(value) if isinstance(value, Literal) else None

    def verify(self, parsed: Graph) -> None:
        return None

    def decode(self, parsed: Graph) -> AnyMessage:
        return decode_graph(codec.prepare(parsed))

    def encode(self, message: Message, content_type: str) -> bytes:
        return codec.encode(cast(AnyMessage, message), codec.media_format(content_type))
