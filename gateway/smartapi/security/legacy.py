"""The Smart API 1.1 security scheme, for interoperability.

Signing: each signed object (by default every entity of the message) is written as Turtle
with CRLF line ends; `smartapi:hashCode` is the base64 SHA-512 of that text and
`smartapi:signature` the base64 RSA PKCS#1 v1.5 SHA-512 signature of it. In the main graph
the object is replaced by a stub `a smartapi:Reference, smartapi:MultipartReference`
carrying both, and the message travels as multipart/related (`start="Main"`), the object
in its own part with Content-ID = its IRI.

Encryption, as the published 1.1 library does it: the object's Turtle is encrypted with a
fresh AES-128 key in CBC mode (PKCS#7 padding); the part body is the key wrapped with the
recipient's RSA key (OAEP, SHA-1), base64, on its own first line, then base64(IV) and
base64(ciphertext) run together. Hash and signature cover that text. The stub is also
typed `smartapi:EncryptedReference` with `smartapi:encryptionKeyType smartapi:PublicKey`.
Inbound, the gateway's earlier form (key in `smartapi:sessionKey`, body base64(IV +
ciphertext), hash over the plaintext) is still read.

The library's transfer encoding: it writes every part with each LF of the signed text
turned into CRLF, so a CRLF text travels with `\r\r\n` line ends and an encrypted part's
key line ends in CRLF. The hash decides: a part whose received bytes do not match its
hashCode is checked once more in that decoding (CRLF -> LF), and hash and signature are
then verified over the text that matched. No other rewriting is tried.

The library's signed Activity part also describes the Device it acts on: a part may
describe, besides its own object, the named nodes its object refers to, as long as the
main graph says nothing of them (the signature covers what the part says of them).

Only the objects are signed in this scheme, not the main graph (message id, sender, time):
that is its known weakness, and the reason for the product's secure profile.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import padding as asym
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from rdflib import Graph, Literal, URIRef
from rdflib.namespace import RDF

from gateway.errors import DecryptionFailed, SignatureInvalid, UntrustedSigner
from gateway.smartapi import vocab as v
from gateway.smartapi.codec import Format
from gateway.smartapi.codec import parse as parse_body
from gateway.smartapi.decode import message_node
from gateway.smartapi.security import multipart
from gateway.smartapi.security.graphsig import b64, replace_stub, unb64
from gateway.smartapi.security.keys import Identity, Peer, TrustStore
from gateway.smartapi.tree import Node, find_named, named_below, replace_named, string, to_turtle
from gateway.smartapi.vocab import SMARTAPI

_TYPE = str(RDF.type)
_OAEP_SHA1 = asym.OAEP(mgf=asym.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
START = "Main"


def hash_code(text: bytes) -> str:
    return base64.b64encode(hashlib.sha512(text).digest()).decode("ascii")


def _rsa(key: object, who: str) -> rsa.RSAPrivateKey:
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{who}: the Smart API 1.1 scheme needs an RSA key")
    return key


def seal(
    roots: list[Node],
    identity: Identity | None,
    objects: Iterable[str] | None = None,
    encrypt_for: Peer | None = None,
) -> tuple[bytes, str]:
    """Sign (with `identity`) and/or encrypt (for `encrypt_for`) the objects; returns the
    multipart body and its Content-Type."""
    targets = list(objects) if objects is not None else named_below(roots[0])
    parts: list[multipart.Part] = []
    main = roots
    for iri in targets:
        node = find_named(main, iri)
        if node is None:
            raise ValueError(f"no object <{iri}> in the message")
        # the object in its part carries the reference types too, as the library writes
        # it (and its reader removes them again, failing where they are missing)
        marked = Node(node.iri, [(_TYPE, v.REFERENCE), *node.props])
        if encrypt_for is not None:
            marked.props.insert(1, (_TYPE, v.ENCRYPTED_REFERENCE))
        text = to_turtle([marked], newline="\r\n").encode()
        stub = Node(iri).add(_TYPE, v.REFERENCE).add(_TYPE, v.MULTIPART_REFERENCE)
        if encrypt_for is not None:
            text = _encrypt(text, encrypt_for)
            stub.add(_TYPE, v.ENCRYPTED_REFERENCE)
            stub.add(str(SMARTAPI.encryptionKeyType), v.PUBLIC_KEY_TYPE)
        if identity is not None:
            key = _rsa(identity.key, identity.key_id)
            stub.add(str(SMARTAPI.hashCode), string(hash_code(text)))
            signature = key.sign(text, asym.PKCS1v15(), hashes.SHA512())
            stub.add(str(SMARTAPI.signature), string(b64(signature)))
        main = replace_named(main, iri, stub)
        parts.append(multipart.Part(iri, "text/turtle", text))
    main_part = multipart.Part(START, "text/turtle", to_turtle(main, newline="\r\n").encode())
    return multipart.build([main_part, *parts], START)


def _encrypt(text: bytes, recipient: Peer) -> bytes:
    """The 1.1 library's encrypted part: wrapped key line, then base64 IV + ciphertext."""
    if not isinstance(recipient.key, rsa.RSAPublicKey):
        raise ValueError(f"{recipient.key_id}: the 1.1 scheme needs an RSA key")
    session = os.urandom(16)
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(text) + padder.finalize()
    encryptor = Cipher(algorithms.AES(session), modes.CBC(iv)).encryptor()
    cipher = encryptor.update(padded) + encryptor.finalize()
    wrapped = recipient.key.encrypt(session, _OAEP_SHA1)
    return base64.b64encode(wrapped) + b"\n" + base64.b64encode(iv) + base64.b64encode(cipher)


def _decrypt(graph: Graph, stub: URIRef, body: bytes, identity: Identity | None) -> bytes:
    """Either form: the 1.1 library's (key line first) or, with smartapi:sessionKey in the
    stub, the gateway's earlier one (body base64(IV + ciphertext))."""
    if identity is None or not isinstance(identity.key, rsa.RSAPrivateKey):
        raise DecryptionFailed(f"part <{stub}> is encrypted and we have no RSA key")
    wrapped = graph.value(stub, SMARTAPI.sessionKey)
    try:
        if isinstance(wrapped, Literal):
            key_text = str(wrapped)
            data = unb64(body.decode("ascii").strip(), "part body", DecryptionFailed)
            iv, cipher = data[:16], data[16:]
        else:
            key_line, newline, rest = body.decode("ascii").partition("\n")
            if not newline:
                raise DecryptionFailed(f"encrypted part <{stub}> has no key line")
            key_text = key_line.strip()
            # base64 of the 16-byte IV is 24 characters
            iv = unb64(rest[:24], "IV", DecryptionFailed)
            cipher = unb64(rest[24:].strip(), "ciphertext", DecryptionFailed)
        session = identity.key.decrypt(unb64(key_text, "session key", DecryptionFailed), _OAEP_SHA1)
        decryptor = Cipher(algorithms.AES(session), modes.CBC(iv)).decryptor()
        padded = decryptor.update(cipher) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        return unpadder.update(padded) + unpadder.finalize()
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecryptionFailed(f"part <{stub}> does not decrypt: {exc}") from exc


def open_message(
    body: bytes,
    content_type: str,
    trust: TrustStore,
    identity: Identity | None = None,
    max_statements: int | None = None,
    encrypted: list[str] | None = None,
) -> tuple[Graph, Peer | None]:
    """The main graph with every referenced part verified, decrypted and merged in, and the
    peer whose RSA key signed them (None when no part is signed); all of it may hold
    `max_statements`. The IRIs of encrypted objects are appended to `encrypted`."""
    start, parts = multipart.parse(body, content_type)
    graph = parse_body(start.body, start.content_type, max_statements)
    sender = str(graph.value(message_node(graph), SMARTAPI.generatedBy))
    candidates = [p for p in trust.by_sender(sender) if isinstance(p.key, rsa.RSAPublicKey)]
    signer: Peer | None = None
    unsigned = 0
    stubs = set(graph.subjects(RDF.type, v.MULTIPART_REFERENCE)) | set(
        graph.subjects(RDF.type, v.ENCRYPTED_REFERENCE)
    )
    for stub in stubs:
        if not isinstance(stub, URIRef):
            raise SignatureInvalid("a referenced object must be named by an IRI")
        part = parts.get(str(stub))
        if part is None:
            raise SignatureInvalid(f"no part with Content-ID {stub}")
        is_encrypted = (stub, RDF.type, v.ENCRYPTED_REFERENCE) in graph
        if is_encrypted and encrypted is not None:
            encrypted.append(str(stub))
        # the gateway's earlier form hashes the plaintext, the library's the part text
        plaintext_hashed = is_encrypted and (stub, SMARTAPI.sessionKey, None) in graph
        text = part.body
        if plaintext_hashed:
            text = _decrypt(graph, stub, text, identity)
        hash_value = graph.value(stub, SMARTAPI.hashCode)
        signature = graph.value(stub, SMARTAPI.signature)
        if hash_value is not None:
            text = _hashed_text(stub, text, str(hash_value))
        if signature is None:
            unsigned += 1
        else:
            signer = _verify_part(stub, text, str(signature), candidates, sender)
        if is_encrypted and not plaintext_hashed:
            text = _decrypt(graph, stub, text, identity)
        replace_stub(
            graph, stub, text, Format.TURTLE, SignatureInvalid, max_statements, referenced=True
        )
        for marker in (v.REFERENCE, v.MULTIPART_REFERENCE, v.ENCRYPTED_REFERENCE):
            graph.remove((stub, RDF.type, marker))
    if unsigned and signer is not None:
        raise SignatureInvalid("some objects are signed and others not")
    return graph, signer


def _hashed_text(stub: URIRef, received: bytes, expected: str) -> bytes:
    """The part text its hashCode covers: the bytes as received, or in the library's
    transfer decoding (each CRLF back to the LF it was written as)."""
    if hmac.compare_digest(expected, hash_code(received)):
        return received
    decoded = received.replace(b"\r\n", b"\n")
    if decoded != received and hmac.compare_digest(expected, hash_code(decoded)):
        return decoded
    raise SignatureInvalid(f"hashCode of <{stub}> does not match its part")


def _verify_part(
    stub: URIRef, text: bytes, signature: str, candidates: list[Peer], sender: str
) -> Peer:
    if not candidates:
        raise UntrustedSigner(f"no trusted RSA key for sender {sender}")
    raw = unb64(signature, "signature", SignatureInvalid)
    for peer in candidates:
        try:
            peer.key.verify(raw, text, asym.PKCS1v15(), hashes.SHA512())  # type: ignore[call-arg,arg-type]
        except InvalidSignature:
            continue
        return peer
    raise SignatureInvalid(f"signature of <{stub}> does not verify with {sender}'s key")
