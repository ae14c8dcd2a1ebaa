"""The asyncio side of a worker process: start it, send requests, match answers, kill it.

Every request has a deadline. A worker that misses one is presumed hung (a blocking call in
the library that does not return) and is killed: the driver reports the link as lost and
its next connect starts a fresh worker. A worker that dies fails every pending request at
once. Nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from drivers.iec61850 import wire

log = logging.getLogger(__name__)

_ROOT = Path(__file__).resolve().parents[2]
_LINE_LIMIT = 16 * 1024 * 1024  # a data set answer is one line


class WorkerGone(Exception):
    """The worker died, was killed, or missed its deadline."""


class WorkerChannel:
    def __init__(self, name: str, on_spontaneous: Callable[[wire.Message], None]) -> None:
        self.name = name
        self._on_spontaneous = on_spontaneous
        self._proc: asyncio.subprocess.Process | None = None
        self._pending: dict[int, asyncio.Future[wire.Message]] = {}
        self._ids = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self._killed = False

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None and not self._killed

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    async def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH", "")) if p)
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "drivers.iec61850.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            limit=_LINE_LIMIT,
        )
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._tasks = [
            asyncio.create_task(self._read_answers(self._proc.stdout), name=f"{self.name}-out"),
            asyncio.create_task(self._read_stderr(self._proc.stderr), name=f"{self.name}-err"),
        ]

    async def request(self, message: wire.Message, within: float) -> wire.Message:
        """Send one request and wait for its answer; kill the worker if none comes in time."""
        proc = self._proc
        if proc is None or proc.returncode is not None or proc.stdin is None:
            raise WorkerGone(f"{self.name}: worker not running")
        request_id = next(self._ids)
        future: asyncio.Future[wire.Message] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            proc.stdin.write(wire.encode({"id": request_id, **message}))
            async with asyncio.timeout(within):
                await proc.stdin.drain()
                return await future
        except TimeoutError:
            self.kill()
            raise WorkerGone(
                f"{self.name}: no answer to {message.get('op')} within {within:.1f} s; "
                "worker killed"
            ) from None
        except (ConnectionError, BrokenPipeError) as exc:
            raise WorkerGone(f"{self.name}: worker pipe closed: {exc}") from None
        finally:
            self._pending.pop(request_id, None)

    def kill(self) -> None:
        if self.alive:
            assert self._proc is not None
            self._killed = True
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()

    async def close(self, grace: float) -> None:
        """Ask the worker to exit; kill it if it does not within `grace`. Never raises."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.returncode is None and proc.stdin is not None:
                with contextlib.suppress(ConnectionError, BrokenPipeError, RuntimeError):
                    proc.stdin.write(wire.encode({"op": wire.EXIT}))
                    proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        finally:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._tasks = []
            self._fail_pending("worker closed")

    def _fail_pending(self, why: str) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(WorkerGone(f"{self.name}: {why}"))
        self._pending.clear()

    async def _read_answers(self, stream: asyncio.StreamReader) -> None:
        try:
            while line := await stream.readline():
                try:
                    message = wire.decode(line)
                except ValueError:
                    log.warning("%s: unreadable worker line %r", self.name, line[:200])
                    continue
                request_id = message.pop("id", None)
                if request_id is None:
                    self._on_spontaneous(message)
                    continue
                future = self._pending.get(request_id) if isinstance(request_id, int) else None
                if future is not None and not future.done():
                    future.set_result(message)
        except (ValueError, asyncio.LimitOverrunError) as exc:
            log.error("%s: worker channel broken: %s", self.name, exc)
            self.kill()
        finally:
            self._fail_pending("worker exited")

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            log.warning("%s worker: %s", self.name, line.decode(errors="replace").rstrip())
