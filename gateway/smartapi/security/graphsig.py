"""The secure profile: signatures over the canonical graph and AES-256-GCM encrypted parts.

Signature: the message node gets `sec:proof [ a sec:GraphSignature ; sec:algorithm ;
sec:keyId ; sec:created ; sec:signatureValue ]`. The signed bytes are the canonical
N-Triples (`gateway.smartapi.canonical`) of the whole graph without the one
`sec:signatureValue` triple, so any re-serialization (Turtle, JSON-LD, N-Triples) keeps the
signature valid, and any changed triple breaks it.

Encrypted part: a named node (an entity) is replaced by a stub `a
smartapi:EncryptedReference` carrying the AES-256-GCM ciphertext of the node's N-Triples
(nonce 12 bytes, associated data = message id + LF + node IRI) and the content key wrapped
for the recipient: RSA-OAEP-SHA-256, or ECDH-ES on P-256 + HKDF-SHA-256 + AES key wrap.
Parts are encrypted first and the graph then signed, so the receiver verifies before it
decrypts.
"""

from __future__ import annotations

import base64
import binascii
import os
from datetime import datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from rdflib import BNode, Graph, Literal, URIRef
from rdflib.namespace import RDF
from rdflib.term import Node as RdfNode

from gateway.errors import DecryptionFailed, MessageParseError, SignatureInvalid, UntrustedSigner
from gateway.smartapi import vocab as v
from gateway.smartapi.canonical import canonical_graph, canonical_tree
from gateway.smartapi.codec import Format, parse
from gateway.smartapi.decode import message_node
from gateway.smartapi.security.keys import (
    Identity,
    Peer,
    TrustStore,
    algorithm_of,
    sign,
    verify,
)
from gateway.smartapi.tree import (
    Node,
    date_time,
    find_named,
    message_id_of,
    replace_named,
    string,
    to_ntriples,
)
from gateway.smartapi.vocab import SEC, SMARTAPI

_TYPE = str(RDF.type)
A256GCM = "A256GCM"
RSA_OAEP_256 = "RSA-OAEP-256"
ECDH_ES_A256KW = "ECDH-ES+A256KW"
_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
_HKDF_INFO = b"mgms smartapi ECDH-ES+A256KW"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, what: str, error: type[Exception]) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise error(f"{what} is not base64") from exc


# -- signatures ------------------------------------------------------------------------------


def sign_tree(roots: list[Node], identity: Identity, created: datetime) -> list[Node]:
    """A copy of the tree with a proof on the message node (the first root)."""
    proof = Node().add(_TYPE, SEC.GraphSignature)
    proof.add(str(SEC.algorithm), string(algorithm_of(identity.key)))
    proof.add(str(SEC.keyId), string(identity.key_id))
    proof.add(str(SEC.created), date_time(created))
    message = Node(roots[0].iri, [*roots[0].props, (str(SEC.proof), proof)])
    signed = [message, *roots[1:]]
    signature = sign(identity.key, canonical_tree(signed))
    proof.add(str(SEC.signatureValue), string(b64(signature)))
    return signed


def _text(graph: Graph, node: RdfNode, predicate: URIRef) -> str:
    values = list(graph.objects(node, predicate))
    if len(values) != 1 or not isinstance(values[0], Literal):
        raise SignatureInvalid(f"proof needs exactly one {predicate.fragment}")
    return str(values[0])


def verify_graph(graph: Graph, trust: TrustStore) -> Peer | None:
    """The trusted peer that signed the graph, None if it carries no proof; raises on a bad,
    untrusted or misattributed signature."""
    proofs = list(graph.subject_objects(SEC.proof))
    if not proofs:
        return None
    if len(proofs) > 1:
        raise SignatureInvalid("more than one proof")
    message, proof = proofs[0]
    if message != message_node(graph):
        raise SignatureInvalid("the proof is not on the message")
    algorithm = _text(graph, proof, SEC.algorithm)
    key_id = _text(graph, proof, SEC.keyId)
    value = next(iter(graph.objects(proof, SEC.signatureValue)), None)
    if not isinstance(value, Literal):
        raise SignatureInvalid("proof without signatureValue")
    _text(graph, proof, SEC.signatureValue)
    peer = trust.by_key_id(key_id)
    if peer is None:
        raise UntrustedSigner(f"key {key_id!r} is not trusted")
    signature = unb64(str(value), "signatureValue", SignatureInvalid)
    data = canonical_graph(graph, exclude=[(proof, SEC.signatureValue, value)])
    if not verify(peer.key, algorithm, signature, data):
        raise SignatureInvalid(f"signature by key {key_id!r} does not match the message")
    sender = graph.value(message, SMARTAPI.generatedBy)
    if str(sender) != peer.sender:
        raise UntrustedSigner(f"key {key_id!r} may not speak for {sender}")
    return peer


# -- encrypted parts ---------------------------------------------------------------------------


def _wrap(cek: bytes, recipient: Peer) -> dict[str, str]:
    key = recipient.key
    if isinstance(key, rsa.RSAPublicKey):
        return {"keyAlgorithm": RSA_OAEP_256, "encryptedKey": b64(key.encrypt(cek, _OAEP))}
    if isinstance(key, ec.EllipticCurvePublicKey):
        ephemeral = ec.generate_private_key(ec.SECP256R1())
        kek = HKDF(hashes.SHA256(), 32, None, _HKDF_INFO).derive(ephemeral.exchange(ec.ECDH(), key))
        point = ephemeral.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "keyAlgorithm": ECDH_ES_A256KW,
            "encryptedKey": b64(aes_key_wrap(kek, cek)),
            "ephemeralKey": b64(point),
        }
    raise ValueError(f"peer {recipient.key_id}: an Ed25519 key cannot receive encrypted parts")


def _unwrap(graph: Graph, stub: URIRef, identity: Identity) -> bytes:
    def text(name: str) -> str:
        value = graph.value(stub, SEC[name])
        if not isinstance(value, Literal):
            raise DecryptionFailed(f"encrypted part <{stub}> has no sec:{name}")
        return str(value)

    if text("recipient") != identity.key_id:
        raise DecryptionFailed(f"encrypted part <{stub}> is not for key {identity.key_id!r}")
    wrapped = unb64(text("encryptedKey"), "encryptedKey", DecryptionFailed)
    key = identity.key
    algorithm = text("keyAlgorithm")
    try:
        if algorithm == RSA_OAEP_256 and isinstance(key, rsa.RSAPrivateKey):
            return key.decrypt(wrapped, _OAEP)
        if algorithm == ECDH_ES_A256KW and isinstance(key, ec.EllipticCurvePrivateKey):
            point = unb64(text("ephemeralKey"), "ephemeralKey", DecryptionFailed)
            ephemeral = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
            kek = HKDF(hashes.SHA256(), 32, None, _HKDF_INFO).derive(
                key.exchange(ec.ECDH(), ephemeral)
            )
            return aes_key_unwrap(kek, wrapped)
    except (ValueError, InvalidUnwrap) as exc:
        raise DecryptionFailed(f"content key of <{stub}> does not unwrap: {exc}") from exc
    raise DecryptionFailed(f"key algorithm {algorithm!r} does not fit our key")


def encrypt_part(roots: list[Node], iri: str, recipient: Peer) -> list[Node]:
    """A copy of the tree with the node `iri` replaced by an EncryptedReference stub."""
    node = find_named(roots, iri)
    if node is None:
        raise ValueError(f"no node <{iri}> to encrypt")
    cek = AESGCM.generate_key(256)
    nonce = os.urandom(12)
    aad = f"{message_id_of(roots[0])}\n{iri}".encode()
    ciphertext = AESGCM(cek).encrypt(nonce, to_ntriples([node]).encode(), aad)
    stub = Node(iri).add(_TYPE, v.ENCRYPTED_REFERENCE)
    stub.add(str(SEC.algorithm), string(A256GCM))
    stub.add(str(SEC.recipient), string(recipient.key_id))
    for name, value in _wrap(cek, recipient).items():
        stub.add(str(SEC[name]), string(value))
    stub.add(str(SEC.nonce), string(b64(nonce)))
    stub.add(str(SEC.ciphertext), string(b64(ciphertext)))
    return replace_named(roots, iri, stub)


def decrypt_parts(
    graph: Graph, identity: Identity | None, max_statements: int | None = None
) -> int:
    """Replace every AES-GCM EncryptedReference stub by its decrypted triples; the number of
    parts decrypted. The message with its parts may hold `max_statements`."""
    stubs = [s for s in graph.subjects(SEC.ciphertext, None)]
    if not stubs:
        return 0
    if identity is None:
        raise DecryptionFailed("message has encrypted parts and this gateway has no key")
    message_id = graph.value(message_node(graph), SMARTAPI.id)
    for stub in stubs:
        if not isinstance(stub, URIRef):
            raise DecryptionFailed("an encrypted part must be named by an IRI")
        cek = _unwrap(graph, stub, identity)
        nonce = unb64(str(graph.value(stub, SEC.nonce)), "nonce", DecryptionFailed)
        data = unb64(str(graph.value(stub, SEC.ciphertext)), "ciphertext", DecryptionFailed)
        try:
            plain = AESGCM(cek).decrypt(nonce, data, f"{message_id}\n{stub}".encode())
        except (InvalidTag, ValueError) as exc:
            raise DecryptionFailed(f"encrypted part <{stub}> fails authentication") from exc
        replace_stub(graph, stub, plain, Format.NTRIPLES, DecryptionFailed, max_statements)
    return len(stubs)


def replace_stub(
    graph: Graph,
    stub: URIRef,
    body: bytes,
    media: str,
    error: type[Exception],
    max_statements: int | None = None,
    referenced: bool = False,
) -> None:
    """Swap the stub's own triples for the part's, which must describe only the stub's node
    and blank nodes under it (`referenced`, the 1.1 scheme: also named nodes the stub's
    node refers to in the part, when the main graph says nothing of them); with the part
    the message may hold `max_statements`."""
    left = None if max_statements is None else max(max_statements - len(graph), 0)
    try:
        part = parse(body, media, left)
    except MessageParseError as exc:
        raise error(f"part <{stub}> does not parse: {exc.detail}") from exc
    foreign = {s for s in part.subjects() if s != stub and not isinstance(s, BNode)}
    if referenced:
        foreign = {s for s in foreign if (stub, None, s) not in part or (s, None, None) in graph}
    if foreign:
        raise error(f"part <{stub}> also describes {sorted(map(str, foreign))[:3]}")
    for triple in list(graph.triples((stub, None, None))):
        graph.remove(triple)
    for triple in part:
        graph.add(triple)
