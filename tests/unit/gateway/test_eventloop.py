"""The event loop: uvloop's unless MGMS_EVENT_LOOP names Python's own; a wrong name is an
error that names the variable and the choices."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from gateway import eventloop
from gateway.errors import ServiceError


async def test_async_tests_run_on_the_gateways_loop() -> None:
    # tests/conftest.py: what runs in-process in the tests is what `mgms run` runs on
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)


async def _loop_type() -> type[asyncio.AbstractEventLoop]:
    return type(asyncio.get_running_loop())


def test_run_uses_uvloop_by_default() -> None:
    assert issubclass(eventloop.run(_loop_type(), environ={}), uvloop.Loop)


def test_run_on_pythons_own_loop_when_asked() -> None:
    kind = eventloop.run(_loop_type(), environ={eventloop.LOOP_ENV: "asyncio"})
    assert not issubclass(kind, uvloop.Loop)
    assert issubclass(kind, asyncio.BaseEventLoop)


def test_an_unknown_loop_is_an_error_naming_the_variable_and_the_choices() -> None:
    main = _loop_type()
    with pytest.raises(ServiceError) as err:
        eventloop.run(main, environ={eventloop.LOOP_ENV: "tokio"})
    assert (
        str(err.value) == "MGMS_EVENT_LOOP='tokio' is not an event loop: use one of uvloop, asyncio"
    )
    assert main.cr_frame is None  # closed: never run, no "never awaited" warning
