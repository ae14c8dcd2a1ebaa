"""Which Smart API profile each peer speaks (`modern` or the published 1.1 library's), as
the allow-list and a CEMS device's options declare it. Plain data without rdflib, so the
config models that carry it load without the RDF stack (gateway.smartapi.interop applies
the profile to messages).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class Dialect(enum.StrEnum):
    MODERN = "modern"
    SMARTAPI_11 = "smartapi-1.1"


@dataclass(frozen=True)
class PeerProfile:
    dialect: Dialect = Dialect.MODERN
    #: the zone a 1.1 peer's naive times are in (IANA name)
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {self.timezone!r}") from exc

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def legacy(self) -> bool:
        return self.dialect is Dialect.SMARTAPI_11


MODERN = PeerProfile()


@dataclass(frozen=True)
class Profiles:
    """The profile of each Smart API sender (`generatedBy`); modern for any other."""

    by_sender: Mapping[str, PeerProfile] = field(default_factory=dict)

    def of(self, sender: str | None) -> PeerProfile:
        return self.by_sender.get(sender or "", MODERN)
