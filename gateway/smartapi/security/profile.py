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

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from rdflib import Graph

from gateway.errors import KeyFileError, SignatureMissing, UnsupportedMediaType
from gateway.model import utcnow
from gateway.smartapi.codec import Format, parse, serialize
from gateway.smartapi.decode import Reader, message_node
from gateway.smartapi.interop import read_envelope
from gateway.smartapi.peers import Profiles
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
    #: which senders speak Smart API 1.1 (their envelope is read before the replay check)
    profiles: Profiles = field(default_factory=Profiles)
    #: whether the last message opened had an encrypted part (a 1.1 peer is answered so)
    last_encrypted: bool = False

    def open(self, body: bytes, content_type: str | None) -> Graph:
        self.last_signer = None
        self.last_encrypted = False
        if multipart.is_multipart(content_type):
            if not self.accept_legacy:
                raise UnsupportedMediaType("the Smart API 1.1 multipart scheme is switched off")
            encrypted: list[str] = []
            graph, signer = legacy.open_message(
                body, content_type or "", self.trust, self.identity, self.max_statements, encrypted
            )
            self.last_encrypted = bool(encrypted)
        else:
            graph = parse(body, content_type, self.max_statements)
            signer = verify_graph(graph, self.trust)
            decrypt_parts(graph, self.identity, self.max_statements)
        if signer is None and self.require_signature:
            raise SignatureMissing("a signed message is required")
        read_envelope(graph, body, self.profiles)
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
    #: peers' keys, to encrypt 1.1 answers for them
    trust: TrustStore = field(default_factory=TrustStore)

    def seal(self, roots: list[Node]) -> list[Node]:
        if self.encrypt_for is not None:
            for iri in named_below(roots[0]):
                roots = encrypt_part(roots, iri, self.encrypt_for)
        return sign_tree(roots, self.identity, self.clock())

    def seal_v11(self, roots: list[Node], recipient: str, encrypt: bool) -> tuple[bytes, str]:
        """A message for a Smart API 1.1 peer (the tree already in its forms,
        `interop.to_v11`): each activity signed the 1.1 way in its own part, and encrypted
        for `recipient`'s RSA key when `encrypt`; multipart body and its Content-Type. A
        message without activities goes as plain Turtle (the scheme signs objects only)."""
        activities = [
            o.iri
            for p, o in roots[0].props
            if p == str(SMARTAPI.activity) and isinstance(o, Node) and o.iri is not None
        ]
        if not activities:
            return serialize(roots, Format.TURTLE), Format.TURTLE.value
        peer = None
        if encrypt:
            peer = self._rsa_key_of(recipient)
            if peer is None:
                raise KeyFileError(f"no trusted RSA key of {recipient} to encrypt for")
        return legacy.seal(roots, self.identity, activities, encrypt_for=peer)

    def can_encrypt_for(self, recipient: str) -> bool:
        return self._rsa_key_of(recipient) is not None

    def _rsa_key_of(self, recipient: str) -> Peer | None:
        keys = [p for p in self.trust.by_sender(recipient) if isinstance(p.key, RSAPublicKey)]
        return keys[0] if keys else None

    def encode(self, roots: list[Node], fmt: Format = Format.TURTLE) -> bytes:
        return serialize(self.seal(roots), fmt)
