"""The event loop the gateway runs on: uvloop's (libuv) unless the environment asks for
Python's own.

The loop's own work (the selector, the transports' reads and writes, timers and
callbacks) is most of the CPU the gateway spends per point acquired: pymodbus's answer
arrives through it once per device and poll. uvloop does that work in C; in
bench/scale.py the gateway's event loop thread spends 13-17 % less CPU per point with it.
`MGMS_EVENT_LOOP=asyncio` runs on Python's own loop instead, to rule the loop out when a
problem is diagnosed (docs/deployment.md)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

import uvloop

from gateway.errors import ServiceError

#: the environment variable that chooses the loop
LOOP_ENV = "MGMS_EVENT_LOOP"

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

LOOPS: dict[str, LoopFactory] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}

T = TypeVar("T")


def loop_factory(
    environ: Mapping[str, str] = os.environ,
) -> Callable[[], asyncio.AbstractEventLoop]:
    """The factory of the loop `environ` asks for (uvloop when it names none)."""
    name = environ.get(LOOP_ENV, "uvloop")
    try:
        return LOOPS[name]
    except KeyError:
        raise ServiceError(
            f"{LOOP_ENV}={name!r} is not an event loop: use one of {', '.join(LOOPS)}"
        ) from None


def run(main: Coroutine[Any, Any, T], environ: Mapping[str, str] = os.environ) -> T:
    """`asyncio.run(main)` on the loop `environ` asks for."""
    try:
        factory = loop_factory(environ)
    except ServiceError:
        main.close()  # never awaited: no warning on top of the error
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
