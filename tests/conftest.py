"""Fixtures for every test: fail a test that leaks asyncio tasks or threads."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import pytest


@pytest.fixture(autouse=True)
async def _no_leaks() -> AsyncIterator[None]:
    threads_before = set(threading.enumerate())
    yield
    current = asyncio.current_task()
    pending: list[asyncio.Task[object]] = []
    for _ in range(50):  # let cancelled tasks finish unwinding
        pending = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if not pending:
            break
        await asyncio.sleep(0.01)
    assert not pending, f"test leaked tasks: {[t.get_coro() for t in pending]}"
    # the loop's executor threads (asyncio.to_thread) end with the loop, not the test
    await asyncio.get_running_loop().shutdown_default_executor()
    deadline = time.monotonic() + 3.0
    while True:
        leaked = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
        if not leaked or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert not leaked, f"test leaked threads: {[t.name for t in leaked]}"
