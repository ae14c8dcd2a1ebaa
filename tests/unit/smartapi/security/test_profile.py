"""Inbound/outbound policies and replay protection, also through the access endpoint."""

from __future__ import annotations

import tracemalloc
import uuid
from datetime import datetime, timedelta

import pytest

from gateway.config import LoadedConfig
from gateway.errors import ReplayRejected, SignatureMissing
from gateway.model import utcnow
from gateway.points import PointTable
from gateway.smartapi import examples
from gateway.smartapi.access import AccessService
from gateway.smartapi.codec import Format, decode, encode, parse
from gateway.smartapi.encode import der_iri, to_tree
from gateway.smartapi.messages import (
    Activity,
    Entity,
    ErrorMessage,
    Method,
    Request,
    Response,
    ValueObject,
)
from gateway.smartapi.security import legacy
from gateway.smartapi.security.graphsig import verify_graph
from gateway.smartapi.security.profile import InboundSecurity, OutboundSecurity
from gateway.smartapi.security.replay import ReplayGuard
from gateway.smartapi.vocab import QuantityKind

from ..controller import TableController
from .conftest import Keys


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_replay_guard() -> None:
    clock = Clock(examples.T0)
    guard = ReplayGuard(timedelta(minutes=5), clock)
    guard.check("urn:a", "m1", examples.T0)
    with pytest.raises(ReplayRejected, match="already"):
        guard.check("urn:a", "m1", examples.T0)
    guard.check("urn:b", "m1", examples.T0)  # ids are per sender
    with pytest.raises(ReplayRejected, match="stale"):
        guard.check("urn:a", "m2", examples.T0 - timedelta(minutes=6))
    with pytest.raises(ReplayRejected, match="future"):
        guard.check("urn:a", "m3", examples.T0 + timedelta(minutes=6))
    assert len(guard) == 2
    clock.now = examples.T0 + timedelta(minutes=10)
    guard.check("urn:a", "m4", clock.now)
    assert len(guard) == 1  # the m1 pairs are forgotten once they could only be stale
    guard.check("urn:a", "m1", clock.now)  # and a new message may reuse the id


def test_replay_guard_keeps_a_pair_small() -> None:
    """Memory is bounded by the traffic of one window: each remembered pair costs a digest
    and a number (the id and sender strings as parsed, a tuple and a datetime were twice
    that)."""
    clock = Clock(examples.T0)
    guard = ReplayGuard(timedelta(minutes=5), clock)
    pairs = 5000
    tracemalloc.start()
    try:
        for i in range(pairs):
            # fresh strings, as each parsed message brings its own
            sender, message_id = "".join(["urn:", "ams"]), "".join([str(uuid.UUID(int=i))])
            guard.check(sender, message_id, examples.T0 - timedelta(seconds=i % 60))
        per_pair = tracemalloc.get_traced_memory()[0] / pairs
    finally:
        tracemalloc.stop()
    assert len(guard) == pairs
    assert per_pair < 256, per_pair


def _request(now: datetime, msg_id: str = "req-1") -> Request:
    bess = der_iri(examples.MICROGRID, "bess1")
    return Request(
        id=msg_id,
        sender=examples.AMS_SENDER,
        generated_at=now,
        activities=(
            Activity(
                method=Method.READ,
                entities=(
                    Entity(
                        iri=bess, value_objects=(ValueObject(quantity=QuantityKind.ACTIVE_POWER),)
                    ),
                ),
            ),
        ),
    )


def test_inbound_requires_a_signature(keys: Keys) -> None:
    inbound = InboundSecurity(keys.trust)
    with pytest.raises(SignatureMissing):
        inbound.open(encode(_request(utcnow())), "text/turtle")


def test_inbound_accepts_both_profiles_once(keys: Keys) -> None:
    inbound = InboundSecurity(keys.trust, identity=keys.mgms["rsa"])
    out = OutboundSecurity(keys.ams["p256"], encrypt_for=keys.trust.by_key_id("mgms-rsa"))
    body = out.encode(to_tree(_request(utcnow())), Format.JSONLD)
    graph = inbound.open(body, Format.JSONLD.value)
    assert inbound.last_signer is not None and inbound.last_signer.key_id == "ams-p256"
    with pytest.raises(ReplayRejected):
        inbound.open(body, Format.JSONLD.value)
    legacy_body, ctype = legacy.seal(to_tree(_request(utcnow(), "req-2")), keys.ams["rsa"])
    inbound.open(legacy_body, ctype)
    assert inbound.last_signer is not None and inbound.last_signer.key_id == "ams-rsa"
    assert graph is not None


async def test_access_endpoint_with_security(
    demo_config: LoadedConfig, table: PointTable, keys: Keys
) -> None:
    svc = AccessService(
        config=demo_config,
        table=table,
        write=TableController(table).write,
        sender=examples.MGMS_SENDER,
        opener=InboundSecurity(keys.trust),
        sealer=OutboundSecurity(keys.mgms["ed25519"]),
    )
    ams = OutboundSecurity(keys.ams["ed25519"])
    reply = await svc.handle(ams.encode(to_tree(_request(utcnow()))), "text/turtle", "ams")
    assert reply.status == 200
    signer = verify_graph(parse(reply.body, reply.content_type), keys.trust)
    assert signer is not None and signer.key_id == "mgms-ed25519"
    assert isinstance(decode(reply.body, reply.content_type), Response)
    # unsigned: refused with a signed Smart API Error, nothing read
    reply = await svc.handle(encode(_request(utcnow(), "req-9")), "text/turtle", "ams")
    answer = decode(reply.body, reply.content_type)
    assert reply.status == 401 and isinstance(answer, ErrorMessage)
    assert "SignatureMissing" in answer.message
    # stale
    old = ams.encode(to_tree(_request(utcnow() - timedelta(hours=1), "req-10")))
    reply = await svc.handle(old, "text/turtle", "ams")
    assert reply.status == 409
