"""Hostile inbound messages for the gateway's northbound endpoints, reproducible from a seed.

`HostileGenerator(material, seed).cases(n)` yields `Case`s: a body, its media type, the
channel (HTTP path / MQTT topic) it goes to, the class it belongs to and the answers that
class allows (`Expect`: statuses and Smart API Error reasons). Messages that must get past
the signature check to reach a deeper check (wrong literal types, NaN, unknown ids, stale
timestamps, limits) are built from valid Smart API messages with the product's own encoder
and signed with the product's own signer, then edited at the tree level before signing;
the others are mutations of signed bodies (bit flips, truncation, poison, padding).

What is random comes from `random.Random(seed)`, message ids included, so a seed gives the
same classes, mutations and ids in the same order; timestamps are the wall clock's (the
gateway refuses stale messages) and signatures follow from both.

Every class is meant to be refused; `replay-of-accepted` is the one exception by design:
an exact repeat of an accepted message gets its first answer again (200) and changes
nothing (docs/northbound.md, idempotency).

Used by tests/faults/test_hostile_inbound.py and bench/soak.py (the `hostile` part).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import random
import re
import ssl
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from cryptography.hazmat.primitives.asymmetric import ed25519
from rdflib.namespace import DCTERMS, RDF, XSD

from fwsim.process import ROOT, child_env
from gateway.errors import DeliveryError, InboundRejected, RefusalReason
from gateway.north.certs import SIGNERS
from gateway.north.config import MqttConfig, TlsFiles
from gateway.north.mqtt import AMS_SIDE, MqttEndpoint, Topics
from gateway.north.tls import client_context
from gateway.north.wire import ACCESS_PATH, JSON_LD, SMARTAPI_BASE, TURTLE, Answer, Channel
from gateway.smartapi.codec import Format, decode, serialize
from gateway.smartapi.encode import to_tree
from gateway.smartapi.flexibility import (
    ReserveActivation,
    ReservedInterval,
    ReserveNotification,
)
from gateway.smartapi.security.graphsig import sign_tree
from gateway.smartapi.security.keys import Identity, load_private_key
from gateway.smartapi.tree import Coll, Lit, Node
from gateway.smartapi.vocab import SEC, SMARTAPI

AMS_SENDER = SIGNERS["ams"][1]
OPERATOR_SENDER = SIGNERS["operator"][1]

#: reasons of a message that breaks the profile (docs/northbound.md)
DECODE = frozenset(
    {"missing-term", "wrong-unit", "wrong-datatype", "non-finite-value", "invalid-term"}
    | {"shape-violation"}
)
#: refusals of the flexibility layer (gateway.flex.bridge.REFUSAL)
FLEX_REFUSALS = frozenset(RefusalReason)
_POISON = b'"<<<\n'  # breaks Turtle inside a string, an IRI or between terms


@dataclass(frozen=True)
class Expect:
    """The answers a class allows: HTTP-like statuses and Smart API Error reasons
    (`repeat`: the first answer to this message again)."""

    statuses: frozenset[int]
    reasons: frozenset[str]

    def allows(self, status: int, reason: str) -> bool:
        return status in self.statuses and reason in self.reasons


def expect(statuses: set[int], reasons: set[str] | frozenset[str]) -> Expect:
    return Expect(frozenset(statuses), frozenset(reasons))


MALFORMED = expect({400}, {"malformed"})
#: rdflib reads `"`, `<` and line ends inside an IRI reference as part of it: poison there
#: yields another IRI (a prefix, a subject, the key id), which the signature check then
#: refuses
#: ... or lands inside a typed literal, whose text is then no XSD form (checked as parsed,
#: before the signature)
SYNTAX = expect(
    {400, 401, 403, 422},
    {
        "malformed",
        "signature-missing",
        "signature-invalid",
        "untrusted-signer",
        "missing-term",
        "wrong-datatype",
    },
)
#: a body whose signature cannot hold: it changed after signing, or has none
NON_FINITE = expect({422}, {"non-finite-value"})
OVERFLOW = expect({401, 422}, {"non-finite-value", "wrong-datatype", "signature-invalid"})
BROKEN = expect(
    {400, 401, 403, 422},
    {"malformed", "signature-invalid", "signature-missing", "untrusted-signer"} | DECODE,
)


@dataclass(frozen=True)
class Case:
    """One hostile message: its class (`kind`), what it is and where it goes, and the
    answers its class allows."""

    kind: str
    body: bytes
    content_type: str
    expect: Expect
    #: where it goes: the channel's path / topic, or `path` for a wrong endpoint (HTTPS)
    channel: Channel = Channel.ACTIVATION
    path: str | None = None
    method: str = "POST"
    #: False where MQTT has no such thing (an HTTP path or method)
    mqtt: bool = True

    @property
    def http_path(self) -> str:
        return self.path or self.channel.path


@dataclass(frozen=True)
class Material:
    """What the generator builds on: the target microgrid, the signing keys of a
    `mgms certs init` directory and, optionally, a notification the gateway accepted
    (replays and id conflicts of it) with the exact body it accepted."""

    microgrid: str
    pki_dir: Path
    max_body_bytes: int
    accepted: ReserveNotification | None = None
    accepted_body: bytes | None = None

    def identity(self, party: str) -> Identity:
        key_id, sender, _ = SIGNERS[party]
        return Identity(key_id, sender, load_private_key(self.pki_dir / f"{party}-signing.key"))


def answer_reason(status: int, body: bytes) -> str:
    """The reason code of a Smart API Error answer (`<reason>: <detail>`), `accepted` for a
    2xx, else `http-<status>` (an answer that is not a Smart API Error, e.g. aiohttp's 404)."""
    match = re.search(rb'errorMessage\W{1,8}"([A-Za-z][A-Za-z0-9-]*): ', body)
    if match:
        return match.group(1).decode()
    if 200 <= status < 300:
        return "accepted"
    return f"http-{status}"


@dataclass
class _Signers:
    ams: Identity
    operator: Identity
    gateway: Identity
    #: a key nobody trusts, under a key id nobody knows
    stranger: Identity
    #: a fresh key under the AMS's key id: the signature cannot verify
    impostor: Identity


@dataclass
class HostileGenerator:
    material: Material
    seed: int = 0
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        m = self.material
        key = ed25519.Ed25519PrivateKey.from_private_bytes(self.rng.randbytes(32))
        other = ed25519.Ed25519PrivateKey.from_private_bytes(self.rng.randbytes(32))
        self.keys = _Signers(
            ams=m.identity("ams"),
            operator=m.identity("operator"),
            gateway=m.identity("gateway"),
            stranger=Identity("stranger-1", AMS_SENDER, key),
            impostor=Identity(SIGNERS["ams"][0], AMS_SENDER, other),
        )
        #: ids of every message built, to look them up in the gateway's stores afterwards
        self.ids: list[str] = []
        #: signed refusals already produced, to be replayed (exactly or signed again)
        self._sent: list[tuple[Case, ReserveActivation]] = []
        self._classes = [
            (name, weight, getattr(self, "_" + name.replace("-", "_")))
            for name, weight in CLASSES.items()
            if name not in ("replay-of-accepted", "id-conflict") or m.accepted is not None
        ]

    # -- the stream -------------------------------------------------------------------------

    def cases(self, count: int) -> Iterator[Case]:
        """`count` cases, classes drawn by weight (every class at least once early on)."""
        names = list(self._classes)
        for i in range(count):
            if i < len(names):
                _, _, make = names[i]
            else:
                make = self.rng.choices([c[2] for c in names], weights=[c[1] for c in names], k=1)[
                    0
                ]
            yield make()

    # -- building blocks --------------------------------------------------------------------

    def _id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _activation(self, **changes: object) -> ReserveActivation:
        """A well-formed activation drawing on a notification nobody sent."""
        now = datetime.now(UTC)
        base = ReserveActivation(
            id=self._id(),
            sender=AMS_SENDER,
            generated_at=now,
            microgrid=self.material.microgrid,
            notification=self._id(),
            p_kw=round(self.rng.uniform(-60, 60), 3),
            q_kvar=round(self.rng.uniform(-20, 20), 3),
            start=now,
            end=now + timedelta(minutes=self.rng.choice((1, 5, 15))),
        )
        self.ids.append(base.id)
        return replace(base, **changes)  # type: ignore[arg-type]

    def _notification(
        self, bands: tuple[ReservedInterval, ...], **changes: object
    ) -> ReserveNotification:
        now = datetime.now(UTC)
        step = timedelta(minutes=15)
        start = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0) + step
        base = ReserveNotification(
            id=self._id(),
            sender=AMS_SENDER,
            generated_at=now,
            microgrid=self.material.microgrid,
            start=start,
            step=step,
            purchase=f"purchase-{self.rng.getrandbits(32):08x}",
            intervals=bands,
        )
        self.ids.append(base.id)
        return replace(base, **changes)  # type: ignore[arg-type]

    def _sign(
        self,
        roots: list[Node],
        signer: Identity | None = None,
        fmt: Format = Format.TURTLE,
    ) -> bytes:
        if signer is None:
            return serialize(roots, fmt)
        return serialize(sign_tree(roots, signer, datetime.now(UTC)), fmt)

    def _signed(
        self, message: ReserveActivation | ReserveNotification, fmt: Format = Format.TURTLE
    ) -> bytes:
        return self._sign(to_tree(message), self.keys.ams, fmt)

    # -- classes ----------------------------------------------------------------------------

    def _turtle_syntax(self) -> Case:
        body = self._signed(self._activation())
        cut = self.rng.randrange(len(body))
        how = self.rng.randrange(4)
        if how == 0:
            bad = body[:cut] + _POISON + body[cut:]
        elif how == 1:
            bad = body[:cut] + _POISON
        elif how == 2:  # bytes that are not UTF-8
            bad = body[:cut] + bytes([0xC3, 0x28, 0xFF]) + body[cut:]
        else:  # random printable noise with Turtle punctuation
            noise = "".join(self.rng.choice('<>"[](){};.,:@^_ \\\n') for _ in range(40))
            bad = body[:cut] + b'"' + noise.encode() + b"\n" + body[cut:]
        return Case("turtle-syntax", bad, TURTLE, SYNTAX)

    def _jsonld_syntax(self) -> Case:
        body = self._signed(self._activation(), Format.JSONLD)
        how = self.rng.randrange(6)
        cut = self.rng.randrange(1, len(body))
        if how == 0:
            bad = body[:cut]  # truncated JSON
        elif how == 1:
            bad = body[:cut] + b"}{,]" + body[cut:]
        elif how == 2:  # JSON, but not a JSON-LD document
            bad = self.rng.choice([b"1", b'"x"', b"null", b"true", b"[1, 2]", b'{"@id": 5}'])
        elif how == 3:  # a context by reference would be fetched: refused
            bad = b'{"@context": "http://127.0.0.1:9/ctx.jsonld", "@id": "urn:x"}'
        elif how == 4:  # an integer beyond Python's conversion limit
            bad = b'{"http://a.example/p": ' + b"9" * self.rng.randrange(4400, 6000) + b"}"
        else:
            bad = body.replace(b'"@context"', b'"@context" "', 1)
        return Case("jsonld-syntax", bad, JSON_LD, SYNTAX)

    def _huge_body(self) -> Case:
        limit = self.material.max_body_bytes
        a = self._activation()
        body = self._signed(a)
        how = self.rng.randrange(3)
        if how == 0:  # over the limit, by less than the MQTT headroom (a bigger packet
            # is kept from the gateway by the broker: tests/faults/test_mqtt_topics.py)
            size = self.rng.randrange(limit + 1, limit + 32 * 1024)
            bad = body + b"#" * (size - len(body))
            return Case("huge-body", bad, TURTLE, expect({413}, {"too-large"}))
        if how == 1:  # just under it: a comment, so still the signed message, refused on
            pad = limit - len(body) - self.rng.randrange(1, 64)  # its business
            bad = b"#" + b"x" * (pad - 2) + b"\n" + body
            return Case("huge-body", bad, TURTLE, expect({422}, {"unknown-notification"}))
        # just under it: thousands of extra triples that the signature does not cover (more
        # than the gateway's statement limit when the body limit is large)
        extra = b'<urn:x:s> <urn:x:p> "%d" .\n'
        lines = (limit - len(body) - 64) // len(extra % 99999)
        bad = body + b"".join(extra % (i % 99999) for i in range(lines))
        return Case(
            "huge-body",
            bad[:limit],
            TURTLE,
            expect({400, 401, 413}, {"signature-invalid", "malformed", "too-many-statements"}),
        )

    def _deep_nesting(self) -> Case:
        limit = self.material.max_body_bytes
        depth = self.rng.choice((200, 1_000, 5_000, 20_000, limit // 4))
        how = self.rng.randrange(5)
        if how == 0:
            inner = b"(" * depth + b")" * depth
            bad = b"<urn:x:s> <urn:x:p> " + inner + b" ."
            return Case(
                "deep-nesting",
                bad[:limit],
                TURTLE,
                expect({400, 401}, {"malformed", "signature-missing"}),
            )
        if how == 1:
            bad = b"<urn:x:s> <urn:x:p> " + b"[ <urn:x:p> " * depth + b"]" * depth + b" ."
            return Case(
                "deep-nesting",
                bad[:limit],
                TURTLE,
                expect({400, 401}, {"malformed", "signature-missing"}),
            )
        if how == 2:
            bad = b"[" * depth + b"]" * depth
            return Case(
                "deep-nesting",
                bad[:limit],
                JSON_LD,
                expect({400, 401}, {"malformed", "signature-missing"}),
            )
        if how == 3:
            bad = b'{"http://a.example/p": ' * depth + b"1" + b"}" * depth
            return Case(
                "deep-nesting",
                bad[:limit],
                JSON_LD,
                expect({400, 401}, {"malformed", "signature-missing"}),
            )
        # signed by the trusted key: a deep chain of blank nodes and lists under the message
        roots = to_tree(self._activation())
        chain: Node | Coll = Node().add("urn:x:leaf", Lit("1"))
        for i in range(self.rng.choice((30, 100, 150))):  # our signer recurses too
            chain = Node().add("urn:x:p", chain) if i % 2 else Coll((chain,))  # type: ignore[arg-type]
        roots[0].add("urn:x:deep", chain)
        body = self._sign(roots, self.keys.ams)
        reasons = DECODE | {"unknown-notification", "malformed"}
        return Case("deep-nesting", body, TURTLE, expect({400, 422}, reasons))

    def _wrong_literal_type(self) -> Case:
        roots = to_tree(self._activation())
        xsd = str(XSD)
        targets = {
            str(RDF.value): [
                Lit("fifty", None),
                Lit("50", xsd + "dateTime"),
                Lit("true", xsd + "boolean"),
                Lit("12.5kW", xsd + "double"),
                Lit("0x10", xsd + "integer"),
            ],
            str(SMARTAPI.generatedAt): [
                Lit("yesterday", xsd + "dateTime"),
                Lit("5", xsd + "integer"),
            ],
            str(SMARTAPI.start): [Lit("2026-13-45T99:00:00Z", xsd + "dateTime"), Lit("now")],
            str(SMARTAPI.end): [Lit("P1D", xsd + "duration"), Lit("1.5E0", xsd + "double")],
            str(SMARTAPI.id): [Lit("42", xsd + "integer"), Lit("", None), Lit("a b\tc", None)],
        }
        predicate = self.rng.choice(sorted(targets))
        _replace_literal(roots, predicate, self.rng.choice(targets[predicate]), self.rng)
        body = self._sign(roots, self.keys.ams)
        return Case("wrong-literal-type", body, TURTLE, expect({400, 422}, DECODE | {"malformed"}))

    def _non_finite_number(self) -> Case:
        roots = to_tree(self._activation())
        dt = str(XSD.double)
        # canonical lexical forms of NaN and infinities: signed as they are, so the decoder
        # is what refuses them; an overflowing form (1E309 reads as INF) changes under
        # canonicalization, so its signature cannot verify
        lexical, allowed = self.rng.choice(
            [
                (Lit("NaN", dt), NON_FINITE),
                (Lit("INF", dt), NON_FINITE),
                (Lit("-INF", dt), NON_FINITE),
                (Lit("1.0E309", dt), OVERFLOW),
                (Lit("-1E400", dt), OVERFLOW),
                (Lit("NaN", str(XSD.float)), OVERFLOW),
            ]
        )
        _replace_literal(roots, str(RDF.value), lexical, self.rng)
        body = self._sign(roots, self.keys.ams)
        return Case("non-finite-number", body, TURTLE, allowed)

    def _huge_number(self) -> Case:
        """Finite but absurd set points (and -0): well-formed, so the business checks refuse
        them (the notification they draw on does not exist)."""
        value = self.rng.choice([1e308, -1e308, -0.0, 5e-324, 1e15, -1e15, 2.0**63])
        a = (
            self._activation(p_kw=value)
            if self.rng.random() < 0.5
            else self._activation(q_kvar=value)
        )
        body = self._signed(a)
        self._sent.append((Case("", body, TURTLE, MALFORMED), a))
        return Case("huge-number", body, TURTLE, expect({422}, {"unknown-notification"}))

    def _unknown_id(self) -> Case:
        how = self.rng.randrange(3)
        if how == 0:
            a = self._activation()
            body = self._signed(a)
            self._sent.append((Case("", body, TURTLE, MALFORMED), a))
            return Case("unknown-id", body, TURTLE, expect({422}, {"unknown-notification"}))
        if how == 1:
            mg = self.rng.choice(["elsewhere", "demo-microgrid-2", "x" * 64])
            a = self._activation(microgrid=mg)
            return Case("unknown-id", self._signed(a), TURTLE, expect({422}, {"wrong-microgrid"}))
        # the microgrid entity replaced by an unknown DER
        roots = to_tree(self._activation())
        ghost = f"ghost{self.rng.randrange(99)}"
        _replace_iri(roots, f"urn:mgms:der:{self.material.microgrid}:{ghost}")
        _replace_literal(roots, str(DCTERMS.identifier), Lit(ghost), self.rng)
        body = self._sign(roots, self.keys.ams)
        return Case("unknown-id", body, TURTLE, expect({422}, DECODE | {"wrong-microgrid"}))

    def _replay(self) -> Case:
        """A refused message again: byte for byte, or the same content signed again. Both get
        the first answer (the ledger's), nothing is applied."""
        if not self._sent:
            return self._unknown_id()
        original, message = self.rng.choice(self._sent)
        body = original.body if self.rng.random() < 0.5 else self._signed(message)
        return Case("replay", body, TURTLE, expect({422}, {"unknown-notification"}))

    def _stale(self) -> Case:
        offset = self.rng.choice([-1, 1]) * timedelta(
            seconds=self.rng.choice((400, 3600, 86400 * 30))
        )
        a = self._activation(generated_at=datetime.now(UTC) + offset)
        return Case("stale", self._signed(a), TURTLE, expect({409}, {"stale"}))

    def _replay_of_accepted(self) -> Case:
        assert self.material.accepted_body is not None
        return Case(
            "replay-of-accepted",
            self.material.accepted_body,
            TURTLE,
            expect({200}, {"accepted"}),
            channel=Channel.NOTIFICATION,
        )

    def _id_conflict(self) -> Case:
        accepted = self.material.accepted
        assert accepted is not None
        bands = tuple(replace(b, p_raise_kw=b.p_raise_kw + 1.0) for b in accepted.intervals)
        n = replace(accepted, intervals=bands, generated_at=datetime.now(UTC))
        return Case(
            "id-conflict",
            self._signed(n),
            TURTLE,
            expect({409}, {"id-conflict"}),
            channel=Channel.NOTIFICATION,
        )

    def _bit_flip(self) -> Case:
        body = bytearray(
            self._signed(self._activation(), self.rng.choice([Format.TURTLE, Format.JSONLD]))
        )
        ctype = JSON_LD if body.startswith(b"{") or body.startswith(b"[") else TURTLE
        for _ in range(self.rng.choice((1, 1, 2, 3, 8))):
            i = self.rng.randrange(len(body))
            body[i] ^= 1 << self.rng.randrange(8)
        allowed = BROKEN.reasons | {"unknown-notification", "wrong-microgrid", "stale"}
        return Case("bit-flip", bytes(body), ctype, expect({400, 401, 403, 409, 415, 422}, allowed))

    def _missing_signature(self) -> Case:
        a = self._activation()
        if self.rng.random() < 0.5:
            body = self._sign(to_tree(a), None, self.rng.choice([Format.TURTLE, Format.JSONLD]))
        else:  # signed, then the proof cut out
            roots = sign_tree(to_tree(a), self.keys.ams, datetime.now(UTC))
            roots[0].props = [(p, o) for p, o in roots[0].props if p != str(SEC.proof)]
            body = serialize(roots, Format.TURTLE)
        ctype = JSON_LD if body.lstrip().startswith((b"{", b"[")) else TURTLE
        return Case("missing-signature", body, ctype, expect({401}, {"signature-missing"}))

    def _untrusted_key(self) -> Case:
        how = self.rng.randrange(3)
        roots = to_tree(self._activation())
        if how == 0:
            body = self._sign(roots, self.keys.stranger)
            return Case("untrusted-key", body, TURTLE, expect({403}, {"untrusted-signer"}))
        if how == 1:
            body = self._sign(roots, self.keys.impostor)
            return Case("untrusted-key", body, TURTLE, expect({401}, {"signature-invalid"}))
        gw = replace(self._activation(), sender=self.keys.gateway.sender)
        body = self._sign(to_tree(gw), self.keys.gateway)  # our own key is not trusted inbound
        return Case("untrusted-key", body, TURTLE, expect({403}, {"untrusted-signer"}))

    def _other_sender(self) -> Case:
        if self.rng.random() < 0.5:  # the AMS key signs a message naming the operator
            a = self._activation(sender=OPERATOR_SENDER)
            body = self._sign(to_tree(a), self.keys.ams)
            return Case("other-sender", body, TURTLE, expect({403}, {"untrusted-signer"}))
        # the operator's trusted key, over the AMS's connection: the peer may not speak for it
        a = self._activation(sender=OPERATOR_SENDER)
        body = self._sign(to_tree(a), self.keys.operator)
        return Case("other-sender", body, TURTLE, expect({403}, {"sender-not-allowed"}))

    def _beyond_limits(self) -> Case:
        accepted = self.material.accepted
        how = self.rng.randrange(4 if accepted is not None else 3)
        if how == 3 and accepted is not None:
            # a set point far beyond the band of the accepted reservation: not bought
            p = self.rng.choice((-1e4, -500.0, 500.0, 1e6))
            start = max(datetime.now(UTC), accepted.start)
            a = self._activation(
                notification=accepted.id,
                p_kw=p,
                start=start,
                end=start + accepted.step,
            )
            # once the reservation has run out (late in a long stream; the test's intervals
            # are seconds long) the window refuses it, and after that it is no longer held
            refusals = {"outside-band", "outside-window", "unknown-notification"}
            return Case("beyond-limits", self._signed(a), TURTLE, expect({422}, refusals))
        if how == 0:  # a reserve far beyond every DER rating and the coupling-point limits
            big = self.rng.choice((1e4, 1e6, 1e12))
            bands = tuple(ReservedInterval(p_raise_kw=big, p_lower_kw=big) for _ in range(2))
            n = self._notification(bands)
            body = self._signed(n)
            return Case(
                "beyond-limits",
                body,
                TURTLE,
                expect({409, 422}, FLEX_REFUSALS),
                channel=Channel.NOTIFICATION,
            )
        if how == 1:  # negative bands: not a band at all
            roots = to_tree(self._notification((ReservedInterval(1.0, 1.0),)))
            _replace_literal(roots, str(SMARTAPI.list), Lit("-50.0E0", str(XSD.double)), self.rng)
            body = self._sign(roots, self.keys.ams)
            return Case(
                "beyond-limits", body, TURTLE, expect({422}, DECODE), channel=Channel.NOTIFICATION
            )
        # a set point beyond the ratings, on a notification that was never accepted
        p = self.rng.choice((-1e4, 500.0, 1e6))
        a = self._activation(p_kw=p)
        return Case(
            "beyond-limits", self._signed(a), TURTLE, expect({422}, {"unknown-notification"})
        )

    def _wrong_media_type(self) -> Case:
        body = self._signed(self._activation())
        ctype = self.rng.choice(
            [
                "application/xml",
                "application/json",
                "text/html",
                "image/png",
                "text/plain",
                "application/n-triples",
                "text/turtle-ish",
                "multipart/form-data; boundary=x",
            ]
        )
        return Case(
            "wrong-media-type",
            body,
            ctype,
            expect({400, 415}, {"unsupported-media-type", "malformed"}),
        )

    def _wrong_endpoint(self) -> Case:
        how = self.rng.randrange(5)
        a = self._activation()
        body = self._signed(a)
        if how == 0:  # an activation to the notification endpoint (MQTT: its topic)
            return Case(
                "wrong-endpoint",
                body,
                TURTLE,
                expect({422}, {"wrong-channel"}),
                channel=Channel.NOTIFICATION,
            )
        if how == 1:
            n = self._notification((ReservedInterval(1.0, 1.0),))
            return Case("wrong-endpoint", self._signed(n), TURTLE, expect({422}, {"wrong-channel"}))
        if how == 2:  # paths the gateway does not serve
            path = self.rng.choice(
                [
                    Channel.FORECAST.path,
                    Channel.VERIFICATION.path,
                    "/",
                    f"{SMARTAPI_BASE}/x/",
                    "/smartapi/v1.0e1.0/activation",
                    "/../etc/passwd",
                    "/%00",
                ]
            )
            return Case(
                "wrong-endpoint", body, TURTLE, expect({404}, {"http-404"}), path=path, mqtt=False
            )
        if how == 3:
            method = self.rng.choice(["GET", "PUT", "DELETE", "PATCH"])
            return Case(
                "wrong-endpoint",
                body,
                TURTLE,
                expect({405}, {"method-not-allowed"}),
                method=method,
                mqtt=False,
            )
        # a CRP message to the access endpoint (which names errors by their class): a Write
        # on the microgrid entity, which has no writable point there (404 without an access
        # endpoint mounted)
        access = {"NotFound", "Forbidden", "InvalidTerm", "MissingTerm", "http-404"}
        return Case(
            "wrong-endpoint",
            body,
            TURTLE,
            expect({403, 404, 422}, access),
            path=ACCESS_PATH,
            mqtt=False,
        )


#: class name -> relative weight in the stream
CLASSES: dict[str, float] = {
    "turtle-syntax": 10,
    "jsonld-syntax": 6,
    "huge-body": 0.4,
    "deep-nesting": 1,
    "wrong-literal-type": 8,
    "non-finite-number": 8,
    "huge-number": 6,
    "unknown-id": 8,
    "replay": 6,
    "stale": 5,
    "replay-of-accepted": 2,
    "id-conflict": 3,
    "bit-flip": 14,
    "missing-signature": 5,
    "untrusted-key": 6,
    "other-sender": 5,
    "beyond-limits": 1.5,
    "wrong-media-type": 5,
    "wrong-endpoint": 6,
}


def _walk(roots: list[Node]) -> Iterator[Node]:
    stack: list[object] = list(roots)
    while stack:
        item = stack.pop()
        if isinstance(item, Node):
            yield item
            stack.extend(o for _, o in item.props)
        elif isinstance(item, Coll):
            stack.extend(item.items)


def _replace_literal(roots: list[Node], predicate: str, value: Lit, rng: random.Random) -> None:
    """Replace one (randomly chosen) literal object of `predicate`, or one literal in a
    collection that is its object, by `value`."""
    spots = [
        (node, i)
        for node in _walk(roots)
        for i, (p, o) in enumerate(node.props)
        if p == predicate and isinstance(o, Lit | Coll)
    ]
    if not spots:
        raise ValueError(f"no literal of {predicate} to replace")
    node, i = rng.choice(spots)
    old = node.props[i][1]
    if isinstance(old, Coll):
        items = list(old.items)
        items[rng.randrange(len(items))] = value
        node.props[i] = (predicate, Coll(tuple(items)))
    else:
        node.props[i] = (predicate, value)


def _replace_iri(roots: list[Node], iri: str) -> None:
    """Rename the first named node below the message (the microgrid entity)."""
    for node in _walk(roots):
        for i, (p, o) in enumerate(node.props):
            if isinstance(o, Node) and o.iri is not None:
                node.props[i] = (p, Node(iri, o.props))
                return
    raise ValueError("no named node below the message")


# -- firing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    case: Case
    status: int
    reason: str
    #: from sending to the answer
    seconds: float = 0.0

    @property
    def as_expected(self) -> bool:
        return self.case.expect.allows(self.status, self.reason)


async def fire_https(session: aiohttp.ClientSession, base_url: str, case: Case) -> Outcome:
    """Send one case over HTTPS; `status` 0 with the error as reason when no answer came.
    A request that found its keep-alive connection closed is sent once more on a new one,
    as an AMS does (the gateway answers a repeat with its first answer)."""
    headers = {"Content-Type": case.content_type} if case.content_type else {}
    for attempt in (1, 2):
        started = time.perf_counter()
        try:
            async with session.request(
                case.method, base_url + case.http_path, data=case.body, headers=headers
            ) as resp:
                body = await resp.read()
                took = time.perf_counter() - started
                return Outcome(case, resp.status, answer_reason(resp.status, body), took)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            if attempt == 2:
                return Outcome(case, 0, f"no-answer: {type(exc).__name__}: {exc}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Outcome(case, 0, f"no-answer: {type(exc).__name__}: {exc}")
    raise AssertionError("unreachable")


async def fire_mqtt(endpoint: MqttEndpoint, case: Case, key: str) -> Outcome:
    """Publish one case on its channel's topic as the AMS and wait for the answer."""
    started = time.perf_counter()
    try:
        answer = await endpoint.request(case.channel, key, case.content_type, case.body)
    except DeliveryError as exc:
        return Outcome(case, 0, f"no-answer: {exc}")
    took = time.perf_counter() - started
    return Outcome(case, answer.status, answer_reason(answer.status, answer.body), took)


@dataclass
class Report:
    """What a barrage found, per transport: answers by class and `status reason`, mean
    answer time per class, and the answers a class does not allow."""

    tally: dict[str, dict[str, Counter[str]]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    latency: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    unexpected: list[dict[str, object]] = field(default_factory=list)
    #: answers a class does not allow, all of them (`unexpected` keeps the first 50)
    bad: int = 0

    def add(self, transport: str, outcome: Outcome) -> None:
        kind = outcome.case.kind
        by_kind = self.tally.setdefault(transport, {})
        by_kind.setdefault(kind, Counter())[f"{outcome.status} {outcome.reason}"] += 1
        self.latency.setdefault(transport, {}).setdefault(kind, []).append(outcome.seconds)
        if outcome.as_expected:
            return
        self.bad += 1
        if len(self.unexpected) < 50:
            self.unexpected.append(
                {
                    "transport": transport,
                    "kind": kind,
                    "status": outcome.status,
                    "reason": outcome.reason[:300],
                    "body": outcome.case.body[:300].decode("utf-8", "replace"),
                }
            )

    def count(self, transport: str) -> int:
        return sum(sum(c.values()) for c in self.tally.get(transport, {}).values())

    def as_json(self) -> dict[str, object]:
        return {
            "bad": self.bad,
            "counts": {t: self.count(t) for t in self.tally},
            "seconds": self.seconds,
            "tally": {t: {k: dict(c) for k, c in sorted(v.items())} for t, v in self.tally.items()},
            "latency_ms": {
                t: {k: round(1000 * sum(v) / len(v), 1) for k, v in sorted(kinds.items())}
                for t, kinds in self.latency.items()
            },
            "unexpected": self.unexpected,
        }


async def barrage(
    cases: Iterator[Case],
    send: Callable[[Case, int], Awaitable[Outcome]],
    *,
    in_flight: int,
    deadline: float | None = None,
    rate: float = 0.0,
) -> list[Outcome]:
    """Send every case with `in_flight` at a time (until `deadline`, loop time), at most
    `rate` a second when given."""
    loop = asyncio.get_running_loop()
    outcomes: list[Outcome] = []
    numbers = itertools.count()
    start = loop.time()

    async def worker() -> None:
        for case in cases:  # one shared iterator: each case is taken once
            n = next(numbers)
            if rate > 0:
                await asyncio.sleep(max(0.0, start + n / rate - loop.time()))
            if deadline is not None and loop.time() >= deadline:
                return
            outcomes.append(await send(case, n))

    async with asyncio.TaskGroup() as tg:
        for _ in range(in_flight):
            tg.create_task(worker())
    return outcomes


# -- the firing process: `python -m tests.support.hostile ...` ---------------------------------
#
# The gateway under test answers in its own event loop; generating, signing and sending
# from another process keeps that loop (and its measurements) the gateway's alone.


def _tls(pki_dir: Path) -> ssl.SSLContext:
    return client_context(
        TlsFiles(ca=(pki_dir / "ca.pem",), cert=pki_dir / "ams.pem", key=pki_dir / "ams.key")
    )


async def _fire(args: argparse.Namespace) -> Report:
    accepted_body = args.accepted.read_bytes() if args.accepted else None
    accepted = decode(accepted_body, TURTLE) if accepted_body else None
    if accepted is not None and not isinstance(accepted, ReserveNotification):
        raise SystemExit(f"{args.accepted}: not a Reserve Notification")
    material = Material(args.microgrid, args.pki, args.max_body, accepted, accepted_body)
    report = Report()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.duration if args.duration else None
    ctx = _tls(args.pki)
    if args.https and args.https_count:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ctx, limit=args.in_flight),
            timeout=aiohttp.ClientTimeout(total=30),
        ) as session:

            async def post(case: Case, _: int) -> Outcome:
                return await fire_https(session, args.https, case)

            started = loop.time()
            generator = HostileGenerator(material, args.seed)
            cases = generator.cases(args.https_count)
            fired = await barrage(
                cases, post, in_flight=args.in_flight, deadline=deadline, rate=args.rate
            )
            for o in fired:
                report.add("https", o)
            report.seconds["https"] = round(loop.time() - started, 2)
            if args.ids:
                args.ids.write_text("\n".join(generator.ids))
    if args.mqtt and args.mqtt_count:
        host, _, port = args.mqtt.rpartition(":")
        endpoint = MqttEndpoint(
            MqttConfig(host=host, port=int(port), connect_timeout_s=10),
            ctx,
            client_id=f"ams-hostile-{args.seed}",
            topics=Topics("smartapi", args.microgrid),
            side=AMS_SIDE,
            inbound=(),
            handle=_no_inbound,
            refuse=_no_refusals,
            answer_timeout_s=30,
        )
        session_task = asyncio.create_task(endpoint.run())
        try:
            await asyncio.wait_for(endpoint.connected.wait(), 10)

            async def publish(case: Case, n: int) -> Outcome:
                return await fire_mqtt(endpoint, case, f"hostile-{args.seed}-{n}")

            started = loop.time()
            stream = HostileGenerator(material, args.seed + 1).cases(args.mqtt_count * 2)
            cases = itertools.islice((c for c in stream if c.mqtt), args.mqtt_count)
            for o in await barrage(cases, publish, in_flight=args.in_flight * 2, deadline=deadline):
                report.add("mqtt", o)
            report.seconds["mqtt"] = round(loop.time() - started, 2)
        finally:
            session_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await session_task
    return report


async def _no_inbound(channel: Channel, body: bytes, content_type: str) -> Answer:
    raise AssertionError(f"the firing side serves no {channel}")


def _no_refusals(refusal: InboundRejected, content_type: str) -> Answer:
    raise AssertionError(f"the firing side serves nothing to refuse: {refusal}")


async def fire_from_process(
    args: list[str], within_s: float, prefix: Sequence[str] = ()
) -> dict[str, object]:
    """Run the firing side (`python -m tests.support.hostile ARGS`) in its own process, so
    the gateway's event loop is measured alone (under the wrapper `prefix`, if any); its
    report. Killed after `within_s`."""
    proc = await asyncio.create_subprocess_exec(
        *prefix,
        sys.executable,
        "-m",
        "tests.support.hostile",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=child_env(),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), within_s)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"hostile firing failed: {err.decode()[-3000:]}")
    report: dict[str, object] = json.loads(out.decode().strip().splitlines()[-1])
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description="fire hostile messages at a gateway")
    parser.add_argument("--pki", type=Path, required=True, help="`mgms certs init` directory")
    parser.add_argument("--microgrid", required=True)
    parser.add_argument("--max-body", type=int, required=True, help="the server's limit")
    parser.add_argument("--accepted", type=Path, help="body of a notification it accepted")
    parser.add_argument("--https", help="base URL, https://127.0.0.1:PORT")
    parser.add_argument("--https-count", type=int, default=0)
    parser.add_argument("--mqtt", help="broker HOST:PORT")
    parser.add_argument("--mqtt-count", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--duration", type=float, default=0.0, help="stop after s (0: never)")
    parser.add_argument("--rate", type=float, default=0.0, help="HTTPS messages/s (0: no cap)")
    parser.add_argument("--ids", type=Path, help="write the ids of the HTTPS messages here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    report = asyncio.run(_fire(args))
    print(json.dumps(report.as_json()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
