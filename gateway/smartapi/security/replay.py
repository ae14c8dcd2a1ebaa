"""Replay protection: a message is accepted once, and only while its generatedAt is fresh."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from datetime import datetime, timedelta

from gateway.errors import ReplayRejected
from gateway.model import utcnow


class ReplayGuard:
    """Remembers (sender, message id) until the message would be stale anyway, so memory is
    bounded by the traffic of one window."""

    def __init__(
        self, window: timedelta = timedelta(minutes=5), clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.window = window
        self.clock = clock
        self._seen: set[tuple[str, str]] = set()
        self._expiry: list[tuple[datetime, tuple[str, str]]] = []

    def check(self, sender: str, message_id: str, generated_at: datetime) -> None:
        now = self.clock()
        while self._expiry and self._expiry[0][0] < now:
            _, key = heapq.heappop(self._expiry)
            self._seen.discard(key)
        age = now - generated_at
        if age > self.window:
            raise ReplayRejected(f"message {message_id} is stale: generated {age} ago")
        if -age > self.window:
            raise ReplayRejected(f"message {message_id} is generated {-age} in the future")
        key = (sender, message_id)
        if key in self._seen:
            raise ReplayRejected(f"message {message_id} from {sender} was already received")
        self._seen.add(key)
        heapq.heappush(self._expiry, (generated_at + self.window, key))
