"""Secure profile: canonical-graph signatures survive re-serialization; tampering fails."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from rdflib import Graph, Literal
from rdflib.namespace import RDF, XSD

from gateway.errors import DecryptionFailed, SignatureInvalid, TooManyStatements, UntrustedSigner
from gateway.smartapi import examples
from gateway.smartapi.codec import Format, decode, encode, parse, serialize, serialize_graph
from gateway.smartapi.decode import decode_graph
from gateway.smartapi.encode import microgrid_iri, to_tree
from gateway.smartapi.security.graphsig import decrypt_parts, encrypt_part, sign_tree, verify_graph
from gateway.smartapi.vocab import SEC

from .conftest import Keys

KINDS = ["ed25519", "p256", "rsa"]


def signed(keys: Keys, kind: str, msg: object = None, fmt: Format = Format.TURTLE) -> bytes:
    msg = msg or examples.forecast(8)
    return serialize(sign_tree(to_tree(msg), keys.mgms[kind], examples.T0), fmt)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fmt", list(Format))
def test_signature_verifies_in_every_serialization(keys: Keys, kind: str, fmt: Format) -> None:
    body = signed(keys, kind, fmt=fmt)
    graph = parse(body, fmt.value)
    peer = verify_graph(graph, keys.trust)
    assert peer is not None and peer.key_id == f"mgms-{kind}"
    assert decode_graph(graph) == examples.forecast(8)


@pytest.mark.parametrize("target", [Format.TURTLE, Format.JSONLD, Format.NTRIPLES])
def test_reserialization_by_rdflib_keeps_the_signature(keys: Keys, target: Format) -> None:
    graph = parse(signed(keys, "ed25519"), "text/turtle")
    again = parse(serialize_graph(graph, target), target.value)
    assert verify_graph(again, keys.trust) is not None


def test_one_changed_literal_breaks_it(keys: Keys) -> None:
    graph = parse(signed(keys, "p256"), "text/turtle")
    cell = next(iter(graph.subjects(RDF.first, None)))
    graph.set((cell, RDF.first, Literal("99.0", datatype=XSD.double)))
    with pytest.raises(SignatureInvalid):
        verify_graph(graph, keys.trust)


def test_changed_text_breaks_it(keys: Keys) -> None:
    body = signed(keys, "ed25519").decode()
    tampered = body.replace(
        'smartapi:id "5b0f6c3e-forecast-0001"', 'smartapi:id "5b0f6c3e-forecast-0002"'
    )
    assert tampered != body
    with pytest.raises(SignatureInvalid):
        verify_graph(parse(tampered.encode(), "text/turtle"), keys.trust)


def test_swapped_signature_fails(keys: Keys) -> None:
    one = parse(signed(keys, "ed25519", examples.forecast(8)), "text/turtle")
    other = parse(signed(keys, "ed25519", examples.forecast(9)), "text/turtle")
    sig = next(iter(other.objects(None, SEC.signatureValue)))
    proof = next(iter(one.subjects(SEC.signatureValue, None)))
    one.set((proof, SEC.signatureValue, sig))
    with pytest.raises(SignatureInvalid):
        verify_graph(one, keys.trust)


def test_wrong_key_under_a_trusted_key_id(keys: Keys) -> None:
    impostor = replace(keys.ams["ed25519"], key_id="mgms-ed25519")
    body = serialize(sign_tree(to_tree(examples.forecast(2)), impostor, examples.T0))
    with pytest.raises(SignatureInvalid):
        verify_graph(parse(body, "text/turtle"), keys.trust)


def test_unknown_key_and_foreign_sender(keys: Keys) -> None:
    stranger = replace(keys.mgms["ed25519"], key_id="nobody")
    body = serialize(sign_tree(to_tree(examples.forecast(2)), stranger, examples.T0))
    with pytest.raises(UntrustedSigner, match="not trusted"):
        verify_graph(parse(body, "text/turtle"), keys.trust)
    # the AMS's key signing a message that claims to come from the MGMS
    body = serialize(sign_tree(to_tree(examples.forecast(2)), keys.ams["ed25519"], examples.T0))
    with pytest.raises(UntrustedSigner, match="may not speak for"):
        verify_graph(parse(body, "text/turtle"), keys.trust)


def test_unsigned_graph_has_no_signer(keys: Keys) -> None:
    assert verify_graph(parse(encode(examples.forecast(2)), "text/turtle"), keys.trust) is None


@pytest.mark.parametrize("kind", ["rsa", "p256"])
def test_encrypted_entity_round_trip(keys: Keys, kind: str) -> None:
    msg = examples.reserve_activation()
    recipient = keys.trust.by_key_id(f"mgms-{kind}")
    assert recipient is not None
    roots = encrypt_part(to_tree(msg), microgrid_iri(msg.microgrid), recipient)
    body = serialize(sign_tree(roots, keys.ams["ed25519"], examples.T0), Format.JSONLD)
    assert b"dcterms:identifier" not in body and b"sec:ciphertext" in body
    graph = parse(body, Format.JSONLD.value)
    assert verify_graph(graph, keys.trust) is not None
    assert decrypt_parts(graph, keys.mgms[kind]) == 1
    assert decode_graph(graph) == msg


def test_the_statement_limit_covers_encrypted_parts(keys: Keys) -> None:
    msg = examples.reserve_activation()
    recipient = keys.trust.by_key_id("mgms-p256")
    assert recipient is not None
    roots = encrypt_part(to_tree(msg), microgrid_iri(msg.microgrid), recipient)
    body = serialize(roots)
    graph = parse(body, "text/turtle", 200)
    with pytest.raises(TooManyStatements):  # the stub fits, the decrypted part not
        decrypt_parts(graph, keys.mgms["p256"], max_statements=len(graph) + 1)
    graph = parse(body, "text/turtle", 200)
    assert decrypt_parts(graph, keys.mgms["p256"], max_statements=200) == 1


def test_encrypted_part_for_someone_else(keys: Keys) -> None:
    msg = examples.reserve_activation()
    recipient = keys.trust.by_key_id("mgms-rsa")
    assert recipient is not None
    graph = parse(
        serialize(encrypt_part(to_tree(msg), microgrid_iri(msg.microgrid), recipient)),
        "text/turtle",
    )
    with pytest.raises(DecryptionFailed, match="not for key"):
        decrypt_parts(graph, keys.mgms["p256"])
    with pytest.raises(DecryptionFailed, match="no key"):
        decrypt_parts(graph, None)


def test_tampered_ciphertext_fails_authentication(keys: Keys) -> None:
    msg = examples.reserve_activation()
    recipient = keys.trust.by_key_id("mgms-p256")
    assert recipient is not None
    roots = encrypt_part(to_tree(msg), microgrid_iri(msg.microgrid), recipient)
    graph = parse(serialize(roots), "text/turtle")
    stub, text = next(iter(graph.subject_objects(SEC.ciphertext)))
    flipped = ("A" if str(text)[5] != "A" else "B").join([str(text)[:5], str(text)[6:]])
    graph.set((stub, SEC.ciphertext, Literal(flipped)))
    with pytest.raises(DecryptionFailed, match="authentication"):
        decrypt_parts(graph, keys.mgms["p256"])


def test_ed25519_peer_cannot_receive_encrypted_parts(keys: Keys) -> None:
    peer = keys.trust.by_key_id("mgms-ed25519")
    assert peer is not None
    msg = examples.reserve_activation()
    with pytest.raises(ValueError, match="Ed25519"):
        encrypt_part(to_tree(msg), microgrid_iri(msg.microgrid), peer)


def test_jsonld_signed_document_is_json(keys: Keys) -> None:
    doc = json.loads(signed(keys, "rsa", fmt=Format.JSONLD))
    assert "sec" in doc["@context"]
    assert isinstance(decode(signed(keys, "rsa"), "text/turtle"), type(examples.forecast(8)))
    assert isinstance(Graph(), Graph)
