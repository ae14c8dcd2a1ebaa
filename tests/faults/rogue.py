"""Misbehaving field devices on loopback, on the test's event loop.

- `Rogue`: a device that accepts the connection and then never answers (SILENT) or
  answers every request with garbage (GARBAGE).
- `Proxy`: a link to a real simulator whose answers the test can delay, swallow or turn
  into garbage at any moment, so a device can misbehave in the middle of a session.

Both close every connection and task on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Self

from tests.support.procs import free_port

Garbage = Callable[[bytes], bytes]
"""What a misbehaving device sends instead of an answer to `chunk`."""


def noise(seed: int = 7) -> Garbage:
    """1 to 300 random bytes for every chunk."""
    rng = random.Random(seed)
    return lambda _chunk: rng.randbytes(rng.randint(1, 300))


class Answers(enum.Enum):
    PASS = "pass"
    #: answers are swallowed: the device looks alive (TCP up) but never answers
    SWALLOW = "swallow"
    #: every answer is replaced by garbage
    GARBAGE = "garbage"


class _Listener:
    def __init__(self) -> None:
        self.port = free_port()
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class Behaviour(enum.Enum):
    SILENT = "silent"
    GARBAGE = "garbage"


class Rogue(_Listener):
    """`async with Rogue(Behaviour.SILENT) as rogue:` a device on 127.0.0.1:`rogue.port`."""

    def __init__(self, behaviour: Behaviour, garbage: Garbage | None = None) -> None:
        super().__init__()
        self.behaviour = behaviour
        self.garbage = garbage or noise()
        self.received = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(65536):
            self.received += len(chunk)
            if self.behaviour is Behaviour.GARBAGE:
                writer.write(self.garbage(chunk))
                await writer.drain()


class Proxy(_Listener):
    """`async with Proxy(upstream_port) as proxy:` forwards 127.0.0.1:`proxy.port` to the
    simulator; answers arrive `proxy.delay` seconds late (in order) and are passed,
    swallowed or garbled as `proxy.answers` says when they arrive."""

    def __init__(self, upstream: int, garbage: Garbage | None = None) -> None:
        super().__init__()
        self.upstream = upstream
        self.garbage = garbage or noise()
        self.delay = 0.0
        self.answers = Answers.PASS
        self.delivered = 0

    def cut(self) -> None:
        """Close every connection passing through, both sides (the upstream went away: a
        client's kept-alive connection must not still reach it)."""
        for writer in list(self._writers):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        self._writers.add(up_writer)
        late: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def requests() -> None:
            while chunk := await reader.read(65536):
                up_writer.write(chunk)
                await up_writer.drain()

        async def answers() -> None:
            while chunk := await up_reader.read(65536):
                late.put_nowait((loop.time() + self.delay, chunk))

        async def deliver() -> None:
            while True:
                due, chunk = await late.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if self.answers is Answers.SWALLOW:
                    continue
                if self.answers is Answers.GARBAGE:
                    chunk = self.garbage(chunk)
                writer.write(chunk)
                await writer.drain()
                self.delivered += 1

        parts = [
            self._spawn(requests(), "proxy-requests"),
            self._spawn(answers(), "proxy-answers"),
            self._spawn(deliver(), "proxy-deliver"),
        ]
        try:
            await asyncio.wait(parts, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for part in parts:
                part.cancel()
            await asyncio.gather(*parts, return_exceptions=True)
            self._writers.discard(up_writer)
            up_writer.close()
