"""Smart API 1.1 multipart signing and encryption: produced, verified, and tampered."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from gateway.errors import DecryptionFailed, SignatureInvalid, TooManyStatements, UntrustedSigner
from gateway.smartapi import examples
from gateway.smartapi.codec import parse as parse_body
from gateway.smartapi.decode import decode_graph
from gateway.smartapi.encode import microgrid_iri, to_tree
from gateway.smartapi.security import legacy, multipart
from gateway.smartapi.security.keys import TrustStore

from .conftest import Keys


def sealed(keys: Keys, encrypt: bool = False) -> tuple[bytes, str]:
    peer = keys.trust.by_key_id("mgms-rsa") if encrypt else None
    return legacy.seal(to_tree(examples.reserve_activation()), keys.ams["rsa"], encrypt_for=peer)


def test_envelope_shape(keys: Keys) -> None:
    body, ctype = sealed(keys)
    assert ctype.startswith("multipart/related;") and 'type="text/turtle"' in ctype
    assert 'start="Main"' in ctype
    start, parts = multipart.parse(body, ctype)
    assert start.content_id == "Main"
    iri = microgrid_iri(examples.MICROGRID)
    part = parts[iri]
    assert b"\r\n" in part.body and b"\n" not in part.body.replace(b"\r\n", b"")
    assert b"smartapi:MultipartReference" in start.body and b"smartapi:hashCode" in start.body
    assert f'"{legacy.hash_code(part.body)}"'.encode() in start.body


def test_sign_and_verify(keys: Keys) -> None:
    graph, signer = legacy.open_message(*sealed(keys), keys.trust)
    assert signer is not None and signer.key_id == "ams-rsa"
    assert decode_graph(graph) == examples.reserve_activation()


def test_encrypt_and_decrypt(keys: Keys) -> None:
    body, ctype = sealed(keys, encrypt=True)
    assert b"dcterms:identifier" not in body
    graph, signer = legacy.open_message(body, ctype, keys.trust, keys.mgms["rsa"])
    assert signer is not None
    assert decode_graph(graph) == examples.reserve_activation()
    with pytest.raises(DecryptionFailed):
        legacy.open_message(body, ctype, keys.trust, keys.ams["rsa"])  # not the recipient
    with pytest.raises(DecryptionFailed, match="no RSA key"):
        legacy.open_message(body, ctype, keys.trust, None)


def test_changed_part_fails_the_hash(keys: Keys) -> None:
    body, ctype = sealed(keys)
    tampered = body.replace(b"10.0E0", b"90.0E0", 1)
    assert tampered != body
    with pytest.raises(SignatureInvalid, match="hashCode"):
        legacy.open_message(tampered, ctype, keys.trust)


def test_swapped_signature_fails(keys: Keys) -> None:
    body, ctype = sealed(keys)
    start, _parts = multipart.parse(body, ctype)
    other = legacy.seal(to_tree(examples.reserve_notification()), keys.ams["rsa"])
    other_start, _ = multipart.parse(*other)
    sig = _signature_of(start.body)
    swapped = body.replace(sig, _signature_of(other_start.body))
    with pytest.raises(SignatureInvalid, match="does not verify"):
        legacy.open_message(swapped, ctype, keys.trust)


def _signature_of(main: bytes) -> bytes:
    text = main.decode()
    at = text.index("smartapi:signature")
    first = text.index('"', at) + 1
    return text[first : text.index('"', first)].encode()


def test_wrong_key(keys: Keys) -> None:
    body, ctype = legacy.seal(to_tree(examples.reserve_activation()), keys.mgms["rsa"])
    with pytest.raises(SignatureInvalid):  # the AMS sender's trusted key does not verify it
        legacy.open_message(body, ctype, keys.trust)


def test_unknown_sender(keys: Keys) -> None:
    body, ctype = sealed(keys)
    with pytest.raises(UntrustedSigner):
        legacy.open_message(body, ctype, TrustStore())


def test_missing_part(keys: Keys) -> None:
    body, ctype = sealed(keys)
    start, _ = multipart.parse(body, ctype)
    only_main, only_type = multipart.build([start])
    with pytest.raises(SignatureInvalid, match="no part"):
        legacy.open_message(only_main, only_type, keys.trust)


def test_ed25519_cannot_sign_the_legacy_way(keys: Keys) -> None:
    with pytest.raises(ValueError, match="RSA"):
        legacy.seal(to_tree(examples.reserve_activation()), keys.ams["ed25519"])


HAND_WRITTEN_ENTITY = (
    "@prefix smartapi: <http://smart-api.io/ontology/1.0/smartapi#> .\r\n"
    "@prefix qudt: <http://data.nasa.gov/qudt/owl/qudt#> .\r\n"
    "@prefix unit: <http://data.nasa.gov/qudt/owl/unit#> .\r\n"
    "@prefix dcterms: <http://purl.org/dc/terms/> .\r\n"
    "@prefix rdf: <http://www.w3.org/1999/02/22-rdf-syntax-ns#> .\r\n"
    '<urn:mgms:microgrid:demo-microgrid> dcterms:identifier "demo-microgrid" ;\r\n'
    "  smartapi:valueObject [ qudt:quantityKind smartapi:ActivePower ;\r\n"
    "    qudt:unit unit:Kilowatt ; rdf:value 10.0 ] ,\r\n"
    "  [ qudt:quantityKind smartapi:ReactivePower ; qudt:unit unit:KilovoltAmpereReactive ;\r\n"
    "    rdf:value 5.0 ] .\r\n"
)

HAND_WRITTEN_MAIN = (
    "@prefix smartapi: <http://smart-api.io/ontology/1.0/smartapi#> .\r\n"
    "@prefix mgms: <urn:mgms:profile:1.0#> .\r\n"
    "@prefix xsd: <http://www.w3.org/2001/XMLSchema#> .\r\n"
    "<urn:ams:1> a smartapi:Request , mgms:ReserveActivation ;\r\n"
    '  smartapi:id "c7e19b22-activation-0001" ;\r\n'
    "  smartapi:generatedBy <https://ams.example.net/smartapi> ;\r\n"
    '  smartapi:generatedAt "2025-06-02T10:01:00Z"^^xsd:dateTime ;\r\n'
    '  mgms:notificationId "9d2a41f0-reserve-0001" ;\r\n'
    "  smartapi:activity [ a smartapi:Activity ; smartapi:method smartapi:Write ;\r\n"
    '    smartapi:temporalContext [ smartapi:start "2025-06-02T10:01:00Z"^^xsd:dateTime ;\r\n'
    '      smartapi:end "2025-06-02T10:30:00Z"^^xsd:dateTime ] ;\r\n'
    "    smartapi:entity <urn:mgms:microgrid:demo-microgrid> ] .\r\n"
    "<urn:mgms:microgrid:demo-microgrid> a smartapi:Reference , smartapi:MultipartReference ;\r\n"
    '  smartapi:hashCode "{hash}" ;\r\n'
    '  smartapi:signature "{sig}" .\r\n'
)


def test_hand_written_legacy_message(keys: Keys) -> None:
    """A 1.1-style signed multipart message built by hand (NASA units, no product code)."""
    entity = HAND_WRITTEN_ENTITY.encode()
    key = keys.ams["rsa"].key
    assert isinstance(key, rsa.RSAPrivateKey)
    digest = base64.b64encode(hashlib.sha512(entity).digest()).decode()
    sig = base64.b64encode(key.sign(entity, padding.PKCS1v15(), hashes.SHA512())).decode()
    main = HAND_WRITTEN_MAIN.replace("{hash}", digest).replace("{sig}", sig).encode()
    body = (
        b"--XyZ\r\nContent-Type: text/turtle\r\nContent-ID: <Main>\r\n\r\n" + main + b"\r\n"
        b"--XyZ\r\nContent-Type: text/turtle\r\n"
        b"Content-ID: <urn:mgms:microgrid:demo-microgrid>\r\n\r\n" + entity + b"\r\n--XyZ--\r\n"
    )
    ctype = 'multipart/related; boundary=XyZ; type="text/turtle"; start="<Main>"'
    graph, signer = legacy.open_message(body, ctype, keys.trust)
    assert signer is not None
    from gateway.smartapi.codec import prepare

    assert decode_graph(prepare(graph)) == examples.reserve_activation()


def test_the_statement_limit_covers_the_parts(keys: Keys) -> None:
    body, ctype = sealed(keys)
    graph, _ = legacy.open_message(body, ctype, keys.trust)
    start, _ = multipart.parse(body, ctype)
    main_only = len(parse_body(start.body, start.content_type))
    assert main_only < len(graph)
    with pytest.raises(TooManyStatements):  # the main part fits, the referenced one not
        legacy.open_message(body, ctype, keys.trust, max_statements=main_only + 1)
