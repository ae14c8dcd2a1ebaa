"""The inbound pipeline, the same for HTTPS and MQTT:

    parse + verify signature -> validate shapes (typed message) -> authorize -> business
    checks -> apply -> record the answer

Each step that fails answers with a Smart API Error whose message starts with a stable
reason code (docs/northbound.md lists them) and an HTTP-like status; nothing of a refused
message is applied.

Inbound messages are idempotent by message id: the ledger (SQLite, kept a week) holds the
first answer to every authenticated message. A repeat gets that answer again and nothing
is applied twice: byte for byte the same body is recognized before parsing; the same
message signed again (new signature, same content) after its signature is verified. The
stored answer is given only on the channel the message came in on; a repeat on another
is refused as `wrong-channel` (422), as the message itself would be. A
different message under a known id is refused as `id-conflict` (409). The ledger is also
the replay protection: together with the freshness window on `generatedAt` (`stale`,
409) no message is applied twice, across restarts too.

Where the work runs: a body up to `INLINE_PARSE_BYTES` (every activation) is parsed and
verified on the event loop, which is quicker than a thread hand-over at that size; a
larger one (forecast-sized notifications, and the padded or statement-heavy bodies of an
attack) in a worker thread, one at a time, so a burst of big bodies never stalls the
event loop the control path runs on.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from gateway.errors import InboundRejected, Reason, RefusalReason, ReserveRefused, SmartApiError
from gateway.north.config import Role
from gateway.north.ledger import Entry, Ledger, Record
from gateway.north.ports import Applier, Expectation, MessageCodec, ReserveHandler
from gateway.north.tls import Peer
from gateway.north.wire import TURTLE, Answer, Channel, media_type
from gateway.smartapi.flexibility import FlexMessage, ReserveActivation, ReserveNotification
from gateway.smartapi.messages import ErrorMessage, Response, new_message_id

log = logging.getLogger(__name__)


class ReserveApplier:
    """The gateway's applier: Reserve Notifications and Activations from the AMS role,
    checked and applied by the flexibility layer's ReserveHandler."""

    def __init__(self, handler: ReserveHandler) -> None:
        self._handler = handler

    def expects(self, channel: Channel) -> Expectation | None:
        if channel is Channel.NOTIFICATION:
            return Expectation(ReserveNotification, Role.AMS)
        if channel is Channel.ACTIVATION:
            return Expectation(ReserveActivation, Role.AMS)
        return None

    async def check_and_apply(self, message: FlexMessage) -> None:
        if isinstance(message, ReserveNotification):
            await self._handler.check_notification(message)
            await self._handler.apply_notification(message)
        elif isinstance(message, ReserveActivation):
            await self._handler.check_activation(message)
            await self._handler.apply_activation(message)
        else:  # expects() admits nothing else
            raise TypeError(f"unexpected {type(message).__name__}")


#: bodies up to this size are parsed on the event loop, larger ones in a worker thread
INLINE_PARSE_BYTES = 16 * 1024

#: HTTP status of a flexibility refusal (ReserveRefused.reason); 422 for any other reason
REFUSAL_STATUS: dict[str, int] = {
    RefusalReason.CONFLICTS_WITH_RESERVE: 409,  # another reserved service holds the capacity
    RefusalReason.CONTROL_FAILED: 502,  # a set point could not be written to a device
}


def rejection(exc: SmartApiError, message_id: str | None) -> InboundRejected:
    return InboundRejected(exc.status, exc.reason, exc.detail, message_id=message_id)


class InboundPipeline:
    """Runs inbound messages through every check to the applier (the gateway: Reserve
    Notifications and Activations to the reserve handler; the AMS simulator: forecasts and
    verifications to its record). `identity` is our Smart API sender, `microgrid` the id of
    the microgrid every message must name."""

    def __init__(
        self,
        codec: MessageCodec[Any],
        ledger: Ledger,
        applier: Applier,
        *,
        identity: str,
        microgrid: str,
        max_age: timedelta = timedelta(minutes=5),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._codec = codec
        self._ledger = ledger
        self._applier = applier
        self._identity = identity
        self._microgrid = microgrid
        self._clock = clock
        self._max_age = max_age
        #: one business decision at a time per channel: activations (the control path)
        #: never wait for a notification's decision, which solves plans
        self._apply_locks = {channel: asyncio.Lock() for channel in Channel}
        self._id_locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self._big_bodies = asyncio.Semaphore(1)
        #: answers given, by reason (`accepted`, `repeat` or a refusal reason)
        self.counts: Counter[str] = Counter()

    @property
    def accepted_types(self) -> frozenset[str]:
        return self._codec.accepted_types

    def use_codec(self, codec: MessageCodec[Any], max_age: timedelta) -> None:
        """A reload re-read the keys and trusted peers: later messages are opened with them."""
        self._codec = codec
        self._max_age = max_age

    # -- answers ----------------------------------------------------------------------------

    def _answer_type(self, content_type: str | None) -> str:
        ctype = media_type(content_type)
        return ctype if ctype in self._codec.accepted_types and ctype != "" else TURTLE

    def _reply(
        self, status: int, reply: Response | ErrorMessage, content_type: str | None
    ) -> Answer:
        ctype = self._answer_type(content_type)
        if ctype.startswith("multipart/"):
            ctype = TURTLE  # answers are plain Turtle even to a legacy multipart request
        return Answer(status, ctype, self._codec.encode(reply, ctype))

    def refuse(self, rejection: InboundRejected, content_type: str | None = None) -> Answer:
        self.counts[rejection.reason] += 1
        error = ErrorMessage(
            id=new_message_id(),
            sender=self._identity,
            generated_at=self._clock(),
            code=rejection.status,
            message=f"{rejection.reason}: {rejection.detail}",
            in_reply_to=rejection.message_id,
        )
        return self._reply(rejection.status, error, content_type)

    def _accept(self, message_id: str, content_type: str) -> Answer:
        self.counts["accepted"] += 1
        ok = Response(
            id=new_message_id(),
            sender=self._identity,
            generated_at=self._clock(),
            in_reply_to=message_id,
        )
        return self._reply(200, ok, content_type)

    # -- the pipeline -----------------------------------------------------------------------

    async def handle(self, channel: Channel, body: bytes, content_type: str, peer: Peer) -> Answer:
        digest = hashlib.sha256(body).hexdigest()
        # identical bodies one at a time, so a repeat racing the original gets its answer
        async with self._serialized(f"body:{digest}"):
            prior = await self._ledger.by_digest(digest)
            if prior is not None:
                return self._repeat(channel, peer, prior, content_type)
            try:
                if len(body) <= INLINE_PARSE_BYTES:
                    message = self._authenticate(channel, body, content_type, peer)
                else:
                    async with self._big_bodies:
                        message = await asyncio.to_thread(
                            self._authenticate, channel, body, content_type, peer
                        )
            except InboundRejected as exc:
                return self._refused(channel, peer, exc, content_type)
            fingerprint = self._codec.fingerprint(message)
            async with self._serialized(f"id:{message.id}"):
                prior = await self._ledger.get(message.id)
                if prior is not None and prior.fingerprint == fingerprint:
                    # the same message, re-signed
                    return self._repeat(channel, peer, prior, content_type)
                if prior is not None:
                    answer = self._refused(channel, peer, self._conflict(message), content_type)
                    return answer  # not recorded: the first answer stays the one for this id
                answer = await self._checked(channel, message, peer, content_type)
                record = Record(message.id, digest, fingerprint, channel, message.sender)
                await self._ledger.record(record, answer)
                return answer

    def _repeat(self, channel: Channel, peer: Peer, prior: Entry, content_type: str) -> Answer:
        if prior.channel != channel:
            # the stored answer belongs to the channel the message came in on; elsewhere the
            # message is as wrong as it would have been the first time
            wrong = InboundRejected(
                422,
                "wrong-channel",
                f"message {prior.message_id} came in on the {prior.channel} endpoint, "
                f"not {channel.value}",
                message_id=prior.message_id,
            )
            return self._refused(channel, peer, wrong, content_type)
        self.counts["repeat"] += 1
        log.info("%s %s repeated by %s: first answer again", channel, prior.message_id, peer)
        return prior.answer

    @staticmethod
    def _conflict(message: FlexMessage) -> InboundRejected:
        return InboundRejected(
            409,
            Reason.ID_CONFLICT,
            "a different message with this id was received before",
            message_id=message.id,
        )

    async def _checked(
        self, channel: Channel, message: FlexMessage, peer: Peer, content_type: str
    ) -> Answer:
        """Freshness, then the business checks and apply."""
        age = self._clock() - message.generated_at
        if abs(age) > self._max_age:
            when = "old" if age > timedelta(0) else "in the future"
            stale = InboundRejected(
                409,
                Reason.STALE,
                f"generated {abs(age).total_seconds():.0f} s {when}; the window is "
                f"{self._max_age.total_seconds():.0f} s",
                message_id=message.id,
            )
            return self._refused(channel, peer, stale, content_type)
        return await self._business(channel, message, peer, content_type)

    def _authenticate(
        self, channel: Channel, body: bytes, content_type: str, peer: Peer
    ) -> FlexMessage:
        """Parse, signature, shapes, and the peer's right to send this message."""
        try:
            opened = self._codec.open(body, content_type)
        except SmartApiError as exc:
            raise rejection(exc, None) from exc
        message_id = self._codec.message_id(opened)
        try:
            message = self._codec.decode(opened)
        except SmartApiError as exc:
            raise rejection(exc, message_id) from exc
        expected = self._applier.expects(channel)
        if expected is None or not isinstance(message, expected.type):
            raise InboundRejected(
                422,
                Reason.WRONG_CHANNEL,
                f"a {type(message).__name__} cannot be sent to the {channel.value} endpoint",
                message_id=message_id,
            )
        if peer.role is not expected.role:
            raise InboundRejected(
                403,
                Reason.ROLE_NOT_ALLOWED,
                f"{peer} may not send {channel.value}s",
                message_id=message_id,
            )
        if not peer.may_send_as(message.sender):
            raise InboundRejected(
                403,
                Reason.SENDER_NOT_ALLOWED,
                f"{peer} may not send as {message.sender}",
                message_id=message_id,
            )
        return cast(FlexMessage, message)

    async def _business(
        self, channel: Channel, message: FlexMessage, peer: Peer, content_type: str
    ) -> Answer:
        try:
            if message.microgrid != self._microgrid:
                raise InboundRejected(
                    422,
                    Reason.WRONG_MICROGRID,
                    f"message is for microgrid {message.microgrid!r}, this is {self._microgrid!r}",
                )
            async with self._apply_locks[channel]:
                await self._applier.check_and_apply(message)
        except InboundRejected as exc:
            exc.message_id = message.id
            return self._refused(channel, peer, exc, content_type)
        except ReserveRefused as exc:
            status = REFUSAL_STATUS.get(exc.reason, 422)
            refusal = InboundRejected(status, exc.reason, exc.detail, message_id=message.id)
            return self._refused(channel, peer, refusal, content_type)
        except Exception as exc:
            # the handler failed while applying; recorded like any answer, so the AMS
            # retries with a new message rather than a repeat
            log.exception("%s %s: applying failed", channel, message.id)
            failed = InboundRejected(
                500, Reason.APPLY_FAILED, f"{type(exc).__name__}: {exc}", message_id=message.id
            )
            return self._refused(channel, peer, failed, content_type)
        log.info("%s %s from %s accepted", channel, message.id, peer)
        return self._accept(message.id, content_type)

    def _refused(
        self, channel: Channel, peer: Peer, exc: InboundRejected, content_type: str
    ) -> Answer:
        # the text, not the exception: its chain holds the refused body's parse state, which
        # a handler that keeps records (a buffer, a test's capture) would keep alive
        log.warning("%s from %s refused: %s", channel, peer, str(exc))
        return self.refuse(exc, content_type)

    @asynccontextmanager
    async def _serialized(self, message_id: str) -> AsyncIterator[None]:
        """One message id at a time: a concurrent repeat waits for the first answer."""
        lock, users = self._id_locks.setdefault(message_id, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._id_locks[message_id]
