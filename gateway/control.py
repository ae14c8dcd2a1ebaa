"""The write path: a Command checked against the mapping, then sent by the right driver.

Checks happen before anything is sent (unknown point, read-only point, write limits), so a
refused command leaves the device untouched. Every outcome goes to the audit log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime

from gateway.acquisition import DeviceSession
from gateway.errors import CommandError, LimitViolation, NotWritable, UnknownPoint
from gateway.model import Command, CommandResult, CommandStatus
from gateway.points import PointTable
from gateway.store import Store

log = logging.getLogger(__name__)

DEFAULT_WRITE_TIMEOUT_S = 5.0


class Controller:
    def __init__(
        self, table: PointTable, sessions: Mapping[str, DeviceSession], store: Store
    ) -> None:
        self._table = table
        self._sessions = sessions
        self._store = store
        self.sent: dict[str, int] = {}
        self.confirmed: dict[str, int] = {}
        #: the last command sent to each point and how it ended (the status page shows it:
        #: a write-only point has no other value)
        self.last: dict[str, CommandResult] = {}

    def check(self, command: Command) -> None:
        """Raise CommandError if the command may not be sent."""
        mapped = self._table.mapped(command.point)
        if mapped is None:
            raise UnknownPoint(command.point, "no such point in the mapping files")
        point = mapped.point
        if not point.direction.writable:
            raise NotWritable(command.point, f"direction is {point.direction.value}")
        if point.limits is not None and not isinstance(command.value, bool):
            problem = point.limits.violation(float(command.value))
            if problem:
                raise LimitViolation(command.point, problem)

    async def write(self, command: Command) -> CommandResult:
        """Check, send and report one command. Raises CommandError when refused up front."""
        try:
            self.check(command)
        except CommandError as exc:
            await self._store.event(
                "write_refused",
                point=command.point,
                value=command.value,
                reason=str(exc),
                origin=command.origin,
            )
            raise
        mapped = self._table.mapped(command.point)
        assert mapped is not None
        device = mapped.device
        session = self._sessions[device.id]
        protocol = device.protocol
        self.sent[protocol] = self.sent.get(protocol, 0) + 1
        result = await self._send(session, command)
        self.last[command.point] = result
        if result.ok:
            self.confirmed[protocol] = self.confirmed.get(protocol, 0) + 1
        else:
            log.warning(
                "write %s=%s on %r: %s %s",
                command.point,
                command.value,
                device.id,
                result.status.value,
                result.detail,
            )
        # not awaited: the answer need not wait for the audit's commit (see event_soon)
        self._store.event_soon(
            "write",
            device=device.id,
            point=command.point,
            value=command.value,
            status=result.status.value,
            detail=result.detail,
            origin=command.origin,
            mode=command.mode.value,
        )
        return result

    async def _send(self, session: DeviceSession, command: Command) -> CommandResult:
        if not session.up:
            return CommandResult(command, CommandStatus.LINK_DOWN, "device link is down")
        timeout = DEFAULT_WRITE_TIMEOUT_S
        if command.deadline is not None:
            timeout = (command.deadline - datetime.now(UTC)).total_seconds()
            if timeout <= 0:
                return CommandResult(command, CommandStatus.TIMEOUT, "deadline already passed")
        mapped = self._table.mapped(command.point)
        assert mapped is not None
        try:
            async with asyncio.timeout(timeout):
                async with session.lock:
                    return await session.driver.write(mapped.point, command)
        except TimeoutError:
            return CommandResult(
                command, CommandStatus.TIMEOUT, f"no answer within {timeout:.3f} s"
            )
