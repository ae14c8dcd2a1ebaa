"""Waiting for a condition in async tests, bounded."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(predicate: Callable[[], object], within: float = 20.0, step: float = 0.01) -> None:
    """Return once predicate() is truthy; TimeoutError after `within` seconds."""

    async def poll() -> None:
        while not predicate():  # noqa: ASYNC110 - the state has no event to wait on
            await asyncio.sleep(step)

    await asyncio.wait_for(poll(), within)
