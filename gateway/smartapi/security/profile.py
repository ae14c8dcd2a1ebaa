"""Inbound and outbound security policies, as the access endpoint and the northbound client
use them.

Inbound (`InboundSecurity.open`): a multipart/related body is the 1.1 scheme, anything else
is parsed and checked for a secure-profile proof; encrypted parts are decrypted after the
signature is verified; a required signature that is absent, a signer that is unknown,
untrusted or speaks for another sender, and a stale or repeated message id are refused
with the typed SecurityError, before anything is decoded or applied.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from rdflib import Graph

from gateway.errors import SignatureMissing, UnsupportedMediaType
from gateway.model import utcnow
from gateway.smartapi.codec import Format, parse, serialize
from gateway.smartapi.decode import Reader, message_node
from gateway.smartapi.security import legacy, multipart
from gateway.smartapi.security.graphsig import decrypt_parts, encrypt_part, sign_tree, verify_graph
from gateway.smartapi.security.keys import Identity, Peer, TrustStore
from gateway.smartapi.security.replay import ReplayGuard
from gateway.smartapi.tree import Node, named_below
from gateway.smartapi.vocab import SMARTAPI


@dataclass
class InboundSecurity:
    trust: TrustStore
    #: our own key, to decrypt parts sent to us
    identity: Identity | None = None
    require_signature: bool = True
    replay: ReplayGuard | None = field(default_factory=ReplayGuard)
    accept_legacy: bool = True
    #: RDF statements a message may hold (None: no limit); parsing stops at the first beyond
    max_statements: int | None = None
    #: the peer that signed the last message opened (for role checks by the caller)
    last_signer: Peer | None = None

    def open(self, body: bytes, content_type: str | None) -> Graph:
        self.last_signer = None
        if multipart.is_multipart(content_type):
            if not self.accept_legacy:
                raise UnsupportedMediaType("the Smart API 1.1 multipart scheme is switched off")
            graph, signer = legacy.open_message(
                body, content_type or "", self.trust, self.identity, self.max_statements
            )
        else:
            graph = parse(body, content_type, self.max_statements)
            signer = verify_graph(graph, self.trust)
            decrypt_parts(graph, self.identity, self.max_statements)
        if signer is None and self.require_signature:
            raise SignatureMissing("a signed message is required")
        if self.replay is not None:
            reader = Reader(graph)
            node = message_node(graph)
            message_id = reader.string(node, SMARTAPI.id)
            generated_at = reader.datetime(node, SMARTAPI.generatedAt)
            sender = reader.iri(node, SMARTAPI.generatedBy)
            assert message_id is not None and generated_at is not None
            self.replay.check(str(sender), message_id, generated_at)
        self.last_signer = signer
        return graph


@dataclass
class OutboundSecurity:
    """Signs every message we send with the secure profile; encrypts its entities for
    `encrypt_for` when set."""

    identity: Identity
    encrypt_for: Peer | None = None
    clock: Callable[[], datetime] = utcnow

    def seal(self, roots: list[Node]) -> list[Node]:
        if self.encrypt_for is not None:
            for iri in named_below(roots[0]):
                roots = encrypt_part(roots, iri, self.encrypt_for)
        return sign_tree(roots, self.identity, self.clock())

    def encode(self, roots: list[Node], fmt: Format = Format.TURTLE) -> bytes:
        return serialize(self.seal(roots), fmt)
