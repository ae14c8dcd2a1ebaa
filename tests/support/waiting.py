"""Waiting for a condition in async tests, bounded."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable


async def until(predicate: Callable[[], object], within: float = 20.0, step: float = 0.01) -> None:
    """Return once predicate() is truthy (a coroutine's result is awaited, e.g. a device
    read); TimeoutError after `within` seconds."""

    async def poll() -> None:
        while True:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await asyncio.sleep(step)

    await asyncio.wait_for(poll(), within)
