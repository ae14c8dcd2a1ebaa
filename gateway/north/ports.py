"""The two interfaces the northbound layer needs from its neighbours.

`MessageCodec` is what the pipeline needs from the Smart API layer (gateway/smartapi):
parse, verify the signature, validate against the shapes and decode into a typed message,
and serialize our answers and outbound messages. `gateway.north.codec.SmartApiCodec` is
the implementation on gateway/smartapi.

`ReserveHandler` is what it needs from the flexibility layer: the business checks of an
inbound Reserve Notification or Activation and applying it. The pipeline calls `check_*`
and then `apply_*` for one message at a time (never two concurrently), only after the
message passed parsing, signature, shapes and authorization. `check_*` refuses with
`gateway.errors.ReserveRefused(reason, detail)` (nothing applied); `apply_*` must be
idempotent by message id, because a message applied just before a crash is applied again
when the AMS repeats it. A layer
that decides in one step (check, hold and record together) may leave `check_*` empty and
raise `ReserveRefused` from `apply_*`, provided nothing is kept of a refused message.
Any other exception from `apply_*` is answered 500 `apply-failed`.
`gateway.flex.bridge.FlexReserveHandler` is the implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeVar

from gateway.north.config import Role
from gateway.north.wire import Channel
from gateway.smartapi.flexibility import (
    FlexibilityForecast,
    FlexMessage,
    ReserveActivation,
    ReserveNotification,
    ReserveVerification,
)
from gateway.smartapi.messages import ErrorMessage, Message, Response

InboundMessage = ReserveNotification | ReserveActivation
OutboundMessage = FlexibilityForecast | ReserveVerification
Reply = Response | ErrorMessage

P = TypeVar("P")


class MessageCodec(Protocol[P]):
    """Smart API as the pipeline needs it. Every method raises a `SmartApiError` subclass
    (gateway.errors) naming what is wrong; `P` is the codec's parsed form."""

    @property
    def accepted_types(self) -> frozenset[str]:
        """Media types `parse` reads."""
        ...

    def open(self, body: bytes, content_type: str) -> P:
        """Parse and check the signature by a key trusted for the sender, decrypt, check
        the replay window: MessageParseError, UnsupportedMediaType, SecurityError."""
        ...

    def message_id(self, opened: P) -> str | None:
        """The message's id if it can be read (names the message in an error reply)."""
        ...

    def decode(self, opened: P) -> Message:
        """Shapes and the typed message: ShapeViolation, MessageDecodeError."""
        ...

    def fingerprint(self, message: Message) -> str:
        """A digest of the message's content, the same however it was serialized or
        signed (tells a re-signed repeat from a different message under the same id)."""
        ...

    def encode(self, message: Message, content_type: str) -> bytes:
        """Serialize and sign `message` in `content_type` (one of `accepted_types`)."""
        ...

    def encode_v11(self, message: Message) -> tuple[bytes, str]:
        """`message` for a Smart API 1.1 peer: its forms, signed the 1.1 way; the body and
        its Content-Type."""
        ...


@dataclass(frozen=True)
class Expectation:
    """What an inbound channel carries and which peer role may send it."""

    type: type
    role: Role


class Applier(Protocol):
    """The business end of the inbound pipeline: which message each channel carries, and
    the checks and effect of one message. `check_and_apply` refuses with
    InboundRejected or ReserveRefused before changing anything."""

    def expects(self, channel: Channel) -> Expectation | None: ...

    async def check_and_apply(self, message: FlexMessage) -> None: ...


class ReserveHandler(Protocol):
    """The flexibility layer's side of an inbound Reserve Notification or Activation."""

    async def check_notification(self, notification: ReserveNotification) -> None: ...

    async def apply_notification(self, notification: ReserveNotification) -> None: ...

    async def check_activation(self, activation: ReserveActivation) -> None: ...

    async def apply_activation(self, activation: ReserveActivation) -> None: ...
