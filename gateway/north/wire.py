"""What the transports (HTTPS, MQTT) and the inbound pipeline agree on, free of either."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from gateway.errors import InboundRejected
from gateway.north.tls import Peer

TURTLE = "text/turtle"
JSON_LD = "application/ld+json"
#: Smart API 1.1 signed/encrypted messages: multipart/related; type="text/turtle"; start=Main
MULTIPART = "multipart/related"

#: the Smart API access path (DESIGN.md §5); the flexibility channels live beside it
SMARTAPI_BASE = "/smartapi/v1.0e1.0"
ACCESS_PATH = f"{SMARTAPI_BASE}/access/"


class Channel(enum.StrEnum):
    """The four CRP message flows; the value names the HTTP path segment and MQTT topic."""

    FORECAST = "forecast"  # MGMS -> AMS
    NOTIFICATION = "notification"  # AMS -> MGMS
    ACTIVATION = "activation"  # AMS -> MGMS
    VERIFICATION = "verification"  # MGMS -> AMS

    @property
    def inbound(self) -> bool:
        return self in (Channel.NOTIFICATION, Channel.ACTIVATION)

    @property
    def path(self) -> str:
        return f"{SMARTAPI_BASE}/{self.value}/"


INBOUND = (Channel.NOTIFICATION, Channel.ACTIVATION)
OUTBOUND = (Channel.FORECAST, Channel.VERIFICATION)


@dataclass(frozen=True)
class Answer:
    """The reply to an inbound message: an HTTP-like status and a Smart API Response or
    Error in `content_type`."""

    status: int
    content_type: str
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def media_type(content_type: str | None) -> str:
    """`text/turtle; charset=utf-8` -> `text/turtle`."""
    return (content_type or "").split(";", 1)[0].strip().lower()


class Inbound(Protocol):
    """The inbound pipeline as the transports see it."""

    @property
    def accepted_types(self) -> frozenset[str]:
        """Media types accepted as request bodies."""
        ...

    async def handle(
        self, channel: Channel, body: bytes, content_type: str, peer: Peer
    ) -> Answer: ...

    def refuse(self, rejection: InboundRejected, content_type: str | None = None) -> Answer:
        """The Smart API Error for a refusal found before the pipeline ran (size, type,
        allow-list)."""
        ...
