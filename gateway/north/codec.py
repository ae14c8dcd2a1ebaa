"""The pipeline's MessageCodec on the Smart API layer (gateway.smartapi).

Inbound security (signature by a key trusted for the sender, decryption, replay window) is
the Smart API layer's `Opener`; outbound signing its `Sealer` (gateway.smartapi.access
defines both interfaces, gateway.smartapi.security implements them). `secured(signing,
identity)` builds both from the config's `signing:` section.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import cast

from cryptography.hazmat.primitives.asymmetric import rsa
from rdflib import Graph, Literal

from gateway.errors import KeyFileError, MessageDecodeError, SmartApiError
from gateway.north.config import SigningKeys
from gateway.north.wire import JSON_LD, MULTIPART, TURTLE
from gateway.smartapi import codec
from gateway.smartapi.access import Opener, Sealer
from gateway.smartapi.canonical import canonical_tree
from gateway.smartapi.decode import decode_graph, message_node
from gateway.smartapi.encode import AnyMessage, to_tree
from gateway.smartapi.interop import to_v11
from gateway.smartapi.messages import ErrorMessage, Message, check_id
from gateway.smartapi.peers import Profiles
from gateway.smartapi.security.keys import Identity, TrustStore
from gateway.smartapi.security.profile import InboundSecurity, OutboundSecurity
from gateway.smartapi.security.replay import ReplayGuard
from gateway.smartapi.vocab import SMARTAPI


class SmartApiCodec:
    """Turtle and JSON-LD bodies (and Smart API 1.1 multipart, with an opener that reads
    it) to typed messages and back. Without an opener nothing is verified and without a
    sealer nothing is signed: use `secured()` outside codec tests."""

    def __init__(self, opener: Opener | None = None, sealer: Sealer | None = None) -> None:
        self._opener = opener
        self._sealer = sealer
        legacy = isinstance(opener, InboundSecurity) and opener.accept_legacy
        self.accepted_types = frozenset({TURTLE, JSON_LD} | ({MULTIPART} if legacy else set()))

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
        if not isinstance(value, Literal):
            return None
        try:  # an answer names the id only when it is one (a hostile id is not echoed)
            check_id("message id", str(value))
        except ValueError:
            return None
        return str(value)

    def decode(self, opened: Graph) -> AnyMessage:
        return decode_graph(codec.prepare(opened))

    def fingerprint(self, message: Message) -> str:
        return hashlib.sha256(canonical_tree(to_tree(cast(AnyMessage, message)))).hexdigest()

    def encode(self, message: Message, content_type: str) -> bytes:
        roots = to_tree(cast(AnyMessage, message))
        if self._sealer is not None:
            roots = self._sealer.seal(roots)
        return codec.serialize(roots, codec.media_format(content_type))

    def encode_v11(self, message: Message) -> tuple[bytes, str]:
        roots = to_v11(to_tree(cast(AnyMessage, message)))
        if self._sealer is not None:
            return self._sealer.seal_v11(roots, "", encrypt=False)
        return codec.serialize(roots), TURTLE


def _identity(signing: SigningKeys, identity: str, profiles: Profiles) -> Identity:
    me = Identity.from_file(signing.key_id, identity, signing.key)
    if any(p.legacy for p in profiles.by_sender.values()) and not isinstance(
        me.key, rsa.RSAPrivateKey
    ):
        raise KeyFileError(
            f"{signing.key}: a peer of profile smartapi-1.1 needs an RSA signing key "
            "(the 1.1 scheme signs with RSA PKCS#1 v1.5)"
        )
    return me


def secured(
    signing: SigningKeys,
    identity: str,
    max_statements: int | None = None,
    profiles: Profiles | None = None,
) -> SmartApiCodec:
    """The codec that signs what we send with our key and opens what we receive with the
    trusted peers of `signing.trust`, up to `max_statements` RDF statements a message
    (KeyFileError names a file it cannot read)."""
    profiles = profiles or Profiles()
    me = _identity(signing, identity, profiles)
    inbound = InboundSecurity(
        trust=TrustStore.from_file(signing.trust),
        identity=me,
        require_signature=signing.require_signature,
        # replay protection is the pipeline's ledger (persistent, and it answers a repeat
        # with the first answer instead of refusing it)
        replay=None,
        accept_legacy=signing.accept_legacy,
        max_statements=max_statements,
        profiles=profiles,
    )
    return SmartApiCodec(inbound, OutboundSecurity(me, trust=inbound.trust))


def access_security(
    signing: SigningKeys,
    identity: str,
    max_statements: int | None = None,
    profiles: Profiles | None = None,
) -> tuple[InboundSecurity, OutboundSecurity]:
    """Opener and sealer for the Smart API access endpoint (gateway.smartapi.access): the
    same keys and trusted peers as the CRP channels, with the in-memory replay guard (the
    access endpoint has no ledger)."""
    profiles = profiles or Profiles()
    me = _identity(signing, identity, profiles)
    inbound = InboundSecurity(
        trust=TrustStore.from_file(signing.trust),
        identity=me,
        require_signature=signing.require_signature,
        replay=ReplayGuard(window=timedelta(seconds=signing.replay_window_s)),
        accept_legacy=signing.accept_legacy,
        max_statements=max_statements,
        profiles=profiles,
    )
    return inbound, OutboundSecurity(me, trust=inbound.trust)


def answer_text(body: bytes, content_type: str, limit: int = 300) -> str:
    """What a refusal says, for logs and the outbox's last_error: the Smart API Error's
    message when the body is one (or, as the 1.1 library answers, a Response carrying a
    `smartapi:error`), else the start of the body."""
    try:
        message = codec.decode(body, content_type)
    except SmartApiError:
        message = None
    if isinstance(message, ErrorMessage):
        return message.message[:limit]
    try:
        graph = codec.parse(body, content_type)
    except SmartApiError:
        graph = None
    if graph is not None:
        for node, text in graph.subject_objects(SMARTAPI.errorMessage):
            code = graph.value(node, SMARTAPI.errorCode)
            return (f"{code}: {text}" if code is not None else str(text))[:limit]
    return body[:limit].decode("utf-8", "replace")
