"""The Smart API 1.1 security scheme, for interoperability.

Signing: each signed object (by default every entity of the message) is written as Turtle
with CRLF line ends; `smartapi:hashCode` is the base64 SHA-512 of that text and
`smartapi:signature` the base64 RSA PKCS#1 v1.5 SHA-512 signature of it. In the main graph
the object is replaced by a stub `a smartapi:Reference, smartapi:MultipartReference`
carrying both, and the message travels as multipart/related (`start="Main"`), the object
in its own part with Content-ID = its IRI.

Encryption: the object's Turtle is encrypted with a fresh AES-128 key in CBC mode (PKCS#7
padding, random IV sent in front of the ciphertext, the part body base64); the key is
wrapped with the recipient's RSA key (OAEP, SHA-1, as the 1.1 libraries did) into
`smartapi:sessionKey`, and the stub is also typed `smartapi:EncryptedReference` with
`smartapi:encryptionKeyType smartapi:PublicKey`. Hash and signature cover the plaintext.

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
        text = to_turtle([node], newline="\r\n").encode()
        stub = Node(iri).add(_TYPE, v.REFERENCE).add(_TYPE, v.MULTIPART_REFERENCE)
        if identity is not None:
            key = _rsa(identity.key, identity.key_id)
            stub.add(str(SMARTAPI.hashCode), string(hash_code(text)))
            signature = key.sign(text, asym.PKCS1v15(), hashes.SHA512())
            stub.add(str(SMARTAPI.signature), string(b64(signature)))
        body, ctype = text, "text/turtle"
        headers: tuple[tuple[str, str], ...] = ()
        if encrypt_for is not None:
            if not isinstance(encrypt_for.key, rsa.RSAPublicKey):
                raise ValueError(f"{encrypt_for.key_id}: the 1.1 scheme needs an RSA key")
            session = os.urandom(16)
            iv = os.urandom(16)
            padder = padding.PKCS7(128).padder()
            padded = padder.update(text) + padder.finalize()
            encryptor = Cipher(algorithms.AES(session), modes.CBC(iv)).encryptor()
            cipher = iv + encryptor.update(padded) + encryptor.finalize()
            body = base64.b64encode(cipher)
            ctype = "application/octet-stream"
            headers = (("Content-Transfer-Encoding", "base64"),)
            stub.add(_TYPE, v.ENCRYPTED_REFERENCE)
            stub.add(str(SMARTAPI.encryptionKeyType), v.PUBLIC_KEY_TYPE)
            stub.add(
                str(SMARTAPI.sessionKey),
                string(b64(encrypt_for.key.encrypt(session, _OAEP_SHA1))),
            )
        main = replace_named(main, iri, stub)
        parts.append(multipart.Part(iri, ctype, body, headers))
    main_part = multipart.Part(START, "text/turtle", to_turtle(main, newline="\r\n").encode())
    return multipart.build([main_part, *parts], START)


def _decrypt(graph: Graph, stub: URIRef, body: bytes, identity: Identity | None) -> bytes:
    if identity is None or not isinstance(identity.key, rsa.RSAPrivateKey):
        raise DecryptionFailed(f"part <{stub}> is encrypted and we have no RSA key")
    wrapped = graph.value(stub, SMARTAPI.sessionKey)
    if not isinstance(wrapped, Literal):
        raise DecryptionFailed(f"encrypted part <{stub}> has no smartapi:sessionKey")
    try:
        session = identity.key.decrypt(
            unb64(str(wrapped), "sessionKey", DecryptionFailed), _OAEP_SHA1
        )
        data = unb64(body.decode("ascii").strip(), "part body", DecryptionFailed)
        iv, cipher = data[:16], data[16:]
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
) -> tuple[Graph, Peer | None]:
    """The main graph with every referenced part verified, decrypted and merged in, and the
    peer whose RSA key signed them (None when no part is signed); all of it may hold
    `max_statements`."""
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
        text = part.body
        if (stub, RDF.type, v.ENCRYPTED_REFERENCE) in graph:
            text = _decrypt(graph, stub, text, identity)
        hash_value = graph.value(stub, SMARTAPI.hashCode)
        signature = graph.value(stub, SMARTAPI.signature)
        if hash_value is not None and not hmac.compare_digest(str(hash_value), hash_code(text)):
            raise SignatureInvalid(f"hashCode of <{stub}> does not match its part")
        if signature is None:
            unsigned += 1
        else:
            signer = _verify_part(stub, text, str(signature), candidates, sender)
        replace_stub(graph, stub, text, Format.TURTLE, SignatureInvalid, max_statements)
    if unsigned and signer is not None:
        raise SignatureInvalid("some objects are signed and others not")
    return graph, signer


def _verify_part(
    stub: URIRef, text: bytes, signature: str, candidates: list[Peer], sender: str
) -> Peer:
    if not candidates:
        raise UntrustedSigner(f"no trusted RSA key for sender {sender}")
    raw = unb64(signature, "signature", SignatureInvalid)
    for peer in candidates:
        try:
            peer.key.verify(raw, text, asym.PKCS1v15(), hashes.SHA512())  # type: ignore[union-attr,call-arg,arg-type]
        except InvalidSignature:
            continue
        return peer
    raise SignatureInvalid(f"signature of <{stub}> does not verify with {sender}'s key")
