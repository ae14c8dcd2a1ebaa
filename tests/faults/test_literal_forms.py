"""Finding 4 of the attack run: signed access Writes with `"1_0"^^xsd:double`,
`"\\u0665"^^xsd:double` (an Arabic-Indic digit) and `"1_1"^^xsd:decimal` were answered 200
and set the battery to 10.0, 5.0 and 11.0 kW: Python's float() and Decimal() read forms XSD
does not. The same Writes, signed by the operator and posted over mutual TLS to the
gateway's access endpoint, must now be refused (422 WrongDatatype naming the literal) on
every parser path (the fast Turtle reader, rdflib's Turtle, N-Triples, JSON-LD) and write
nothing; the well-formed Write still goes through."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.loader import load_config
from gateway.model import Command, CommandResult, CommandStatus
from gateway.north.certs import OPERATOR_IDENTITY, SIGNERS
from gateway.north.codec import access_security
from gateway.north.config import TlsFiles
from gateway.north.tls import client_context
from gateway.points import PointTable
from gateway.smartapi import codec
from gateway.smartapi.access import ACCESS_PATH, AccessService
from gateway.smartapi.canonical import canonical_lexical
from gateway.smartapi.codec import Format
from gateway.smartapi.encode import der_iri, to_tree
from gateway.smartapi.messages import (
    Activity,
    Entity,
    ErrorMessage,
    Method,
    Request,
    Response,
    ValueObject,
    new_message_id,
)
from gateway.smartapi.security.keys import Identity
from gateway.smartapi.security.profile import OutboundSecurity
from gateway.smartapi.tree import Lit, Node
from gateway.smartapi.vocab import QuantityKind
from tests.support import north as support
from tests.support.pki import PkiFiles, make_test_pki
from tests.support.procs import DEMO_CONFIG, free_port

pytestmark = pytest.mark.integration

XSD = "http://www.w3.org/2001/XMLSchema#"
RDF_VALUE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#value"
#: the attack run's literals, and the forms Python reads but XSD does not
NON_XSD = [
    ("1_0", XSD + "double"),
    ("\u0665", XSD + "double"),
    ("1_1", XSD + "decimal"),
    (" 7", XSD + "double"),
    ("7\u2003", XSD + "decimal"),
    ("0x10", XSD + "integer"),
    ("\uff17", XSD + "integer"),  # a fullwidth digit
]
#: how the body travels: (content type, text rewrite that selects the parser path)
PATHS = {
    "turtle-fast": (Format.TURTLE, lambda text: text),
    # a base directive is outside the fast reader's subset: rdflib parses it
    "turtle-rdflib": (Format.TURTLE, lambda text: "@base <http://example.org/> .\n" + text),
    "n-triples": (Format.NTRIPLES, lambda text: text),
    "json-ld": (Format.JSONLD, lambda text: text),
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@dataclass
class Endpoint:
    url: str
    writes: list[Command]
    session: aiohttp.ClientSession


@pytest.fixture
async def endpoint(pki: PkiFiles, tmp_path: Path) -> AsyncIterator[Endpoint]:
    config = load_config(DEMO_CONFIG)
    writes: list[Command] = []

    async def record(command: Command) -> CommandResult:
        writes.append(command)
        return CommandResult(command, CommandStatus.CONFIRMED)

    north_config = support.gateway_config(pki, ams_port=free_port())
    opener, sealer = access_security(north_config.signing, north_config.identity)
    access = AccessService(
        config=config,
        table=PointTable(config),
        write=record,
        sender=north_config.identity,
        opener=opener,
        sealer=sealer,
    )
    cert, key = pki.pair("operator")
    ctx = client_context(TlsFiles(ca=(pki.ca,), cert=cert, key=key))
    async with (
        support.running_gateway(north_config, tmp_path / "gw", access=access) as north,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session,
    ):
        assert north.server is not None
        yield Endpoint(f"https://127.0.0.1:{north.server.port}{ACCESS_PATH}", writes, session)


def signed_write(pki: PkiFiles, lexical: str, datatype: str, fmt: Format, rewrite: object) -> bytes:
    """An operator's Write of the battery's active power whose value literal is written as
    `lexical`, signed as it stands (the signature is over the graph, so it verifies)."""
    write = Request(
        id=new_message_id(),
        sender=OPERATOR_IDENTITY,
        generated_at=datetime.now(UTC),
        activities=(
            Activity(
                method=Method.WRITE,
                entities=(
                    Entity(
                        iri=der_iri(support.MICROGRID, "bess1"),
                        value_objects=(
                            ValueObject(
                                quantity=QuantityKind.ACTIVE_POWER, unit="KiloW", value=3.0
                            ),
                        ),
                    ),
                ),
            ),
        ),
    )
    # signed as the gateway before the fix read it (Python's conversion, canonical form),
    # then written on the wire in the attacker's form: the signature still verifies there
    read_as = canonical_lexical(lexical, datatype)
    roots = to_tree(write)
    replaced = 0
    stack: list[object] = list(roots)
    while stack:
        node = stack.pop()
        if isinstance(node, Node):
            for n, (p, o) in enumerate(node.props):
                if p == RDF_VALUE and isinstance(o, Lit):
                    node.props[n] = (p, Lit(read_as, datatype))
                    replaced += 1
            stack.extend(o for _, o in node.props)
    assert replaced == 1
    key_id, sender, _ = SIGNERS["operator"]
    sealer = OutboundSecurity(Identity.from_file(key_id, sender, pki.dev["operator-signing"]))
    text = codec.serialize(sealer.seal(roots), fmt).decode()
    if fmt is Format.JSONLD:
        text = json.dumps(_with_value(json.loads(text), {"@value": lexical, "@type": datatype}))
    elif f"rdf:value {read_as}\n" in text:  # our Turtle writer leaves numbers unquoted
        quoted = f'rdf:value "{lexical}"^^<{datatype}>\n'
        text = text.replace(f"rdf:value {read_as}\n", quoted)
    else:
        assert text.count(f'"{read_as}"') == 1, text
        text = text.replace(f'"{read_as}"', f'"{lexical}"')
    assert callable(rewrite)
    return str(rewrite(text)).encode()


def _with_value(data: Any, value: dict[str, str]) -> Any:
    """The JSON-LD document with its one `rdf:value` replaced by `value`."""
    if isinstance(data, dict):
        return {k: value if k == "rdf:value" else _with_value(v, value) for k, v in data.items()}
    if isinstance(data, list):
        return [_with_value(v, value) for v in data]
    return data


async def post(endpoint: Endpoint, body: bytes, fmt: Format) -> tuple[int, object]:
    headers = {"Content-Type": fmt.value, "Accept": "text/turtle"}
    async with endpoint.session.post(endpoint.url, data=body, headers=headers) as r:
        return r.status, codec.decode(await r.read(), r.headers["Content-Type"])


@pytest.mark.parametrize("path", list(PATHS))
async def test_non_xsd_literal_forms_are_refused_and_nothing_is_written(
    pki: PkiFiles, endpoint: Endpoint, path: str
) -> None:
    fmt, rewrite = PATHS[path]
    for lexical, datatype in NON_XSD:
        body = signed_write(pki, lexical, datatype, fmt, rewrite)
        status, answer = await post(endpoint, body, fmt)
        assert isinstance(answer, ErrorMessage), (lexical, answer)
        assert (status, answer.message.split(":", 1)[0]) == (422, "WrongDatatype"), (
            lexical,
            answer.message,
        )
        assert repr(lexical) in answer.message, answer.message  # names the literal
        assert endpoint.writes == [], (lexical, endpoint.writes)

    # the same Write in XSD forms goes through, on the same path
    for lexical, datatype, kw in [("1.0E1", XSD + "double", 10.0), ("+11.", XSD + "decimal", 11.0)]:
        status, answer = await post(
            endpoint, signed_write(pki, lexical, datatype, fmt, rewrite), fmt
        )
        assert status == 200 and isinstance(answer, Response), answer
        assert endpoint.writes[-1].value == kw
