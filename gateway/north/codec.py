"""The pipeline's MessageCodec on the Smart API layer (gateway.smartapi).

Inbound security (signature by a key trusted for the sender, decryption, replay window) is
the Smart API layer's `Opener`; outbound signing its `Sealer` (gateway.smartapi.access
defines both interfaces). The service builds them from the config's `signing:` keys.
"""

from __future__ import annotations

from typing import cast

from rdflib import Graph, Literal

from gateway.errors import MessageDecodeError, SmartApiError
from gateway.north.wire import JSON_LD, TURTLE
from gateway.smartapi import codec
from gateway.smartapi.access import Opener, Sealer
from gateway.smartapi.decode import decode_graph, message_node
from gateway.smartapi.encode import AnyMessage, to_tree
from gateway.smartapi.messages import ErrorMessage, Message
from gateway.smartapi.vocab import SMARTAPI


class SmartApiCodec:
    """Turtle and JSON-LD bodies to typed messages and back."""

    accepted_types = frozenset({TURTLE, JSON_LD})

    def __init__(self, opener: Opener | None = None, sealer: Sealer | None = None) -> None:
        self._opener = opener
        self._sealer = sealer

    def open(self, body: bytes, content_type: str) -> Graph:
        if self._opener is not None:
            return self._opener.open(body, content_type)
        return codec.parse(body, content_type)

    def message_id(self, opened: Graph) -> str | None:
        try:
            node = message_node(opened)
        except MessageDecodeError:
            return None
        value = opened.value(node, SMARTAPI.id)
        return str(value) if isinstance(value, Literal) else None

    def decode(self, opened: Graph) -> AnyMessage:
        return decode_graph(codec.prepare(opened))

    def encode(self, message: Message, content_type: str) -> bytes:
        roots = to_tree(cast(AnyMessage, message))
        if self._sealer is not None:
            roots = self._sealer.seal(roots)
        return codec.serialize(roots, codec.media_format(content_type))


def answer_text(body: bytes, content_type: str, limit: int = 300) -> str:
    """What a refusal says, for logs and the outbox's last_error: the Smart API Error's
    message when the body is one, else the start of the body."""
    try:
        message = codec.decode(body, content_type)
    except SmartApiError:
        message = None
    if isinstance(message, ErrorMessage):
        return message.message[:limit]
    return body[:limit].decode("utf-8", "replace")
