"""The CEMS driver (REST form): points as JSON values of HTTPS resources.

A poll GETs every path of the requested points once and takes each point's value by its
JSON pointer. A resource the CEMS answers badly (an HTTP error, a redirect, HTML, broken
JSON, a body over the limit, no answer in time) makes only its own points invalid, with the
reason; only when no resource answered at all is the link down (`LinkError`, and the
session reconnects with its capped backoff).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from jsonpointer import JsonPointerException

from drivers.base import Driver, invalid, to_engineering, to_raw
from drivers.cems.http import Answer, CemsHttp
from drivers.cems.protocol import CemsOptions, RestAddress
from gateway.errors import LinkError, RequestTimeout
from gateway.mapping import Device, Point
from gateway.model import Command, CommandResult, CommandStatus, QualityFlag, Reading


class CemsDriver(Driver):
    def __init__(self, device: Device) -> None:
        super().__init__(device)
        options = device.typed_options
        assert isinstance(options, CemsOptions)
        self.options = options
        self._http = CemsHttp(device, options)
        #: HTTP requests sent since the driver was built (reads and writes)
        self.requests_sent = 0

    def address(self, point: Point) -> RestAddress:
        address = self.device.address_of(point.id)
        assert isinstance(address, RestAddress)
        return address

    @property
    def connected(self) -> bool:
        return self._http.open

    async def connect(self) -> None:
        """Open the session and prove the link with one GET of the first mapped path (any
        HTTP answer proves it; TLS or socket failures do not)."""
        await self.close()
        await self._http.start()
        paths = [self.address(p).path for p in self.device.points]
        try:
            self.requests_sent += 1
            await self._http.request("GET", paths[0] if paths else "/")
        except LinkError:
            await self.close()
            raise

    async def close(self) -> None:
        await self._http.close()

    def read_budget(self, points: Sequence[Point]) -> float:
        """One request per path, each bounded by the device timeout."""
        paths = {self.address(p).path for p in points}
        return self.device.timeout * max(len(paths), 1) + 1

    async def read(self, points: Sequence[Point]) -> list[Reading]:
        by_path: dict[str, list[Point]] = {}
        for point in points:
            by_path.setdefault(self.address(point).path, []).append(point)
        readings: dict[str, Reading] = {}
        silent: RequestTimeout | None = None
        answered = False
        for path, group in by_path.items():
            self.requests_sent += 1
            try:
                answer = await self._http.request("GET", path)
            except RequestTimeout as exc:
                silent = exc
                for point in group:
                    readings[point.id] = invalid(point, str(exc), QualityFlag.COMM_FAILURE)
                continue
            answered = True
            now = datetime.now(UTC)
            for point in group:
                readings[point.id] = self._reading(point, answer, now)
        if silent is not None and not answered:
            raise silent
        return [readings[p.id] for p in points]

    def _reading(self, point: Point, answer: Answer, now: datetime) -> Reading:
        if answer.problem is not None:
            return invalid(point, answer.problem)
        address = self.address(point)
        try:
            raw = address.json_pointer.resolve(answer.document)
        except JsonPointerException:
            return invalid(point, f"{address}: no such member in the answer")
        if isinstance(raw, bool):
            return Reading(point.id, raw, point.unit, source_time=now)
        if not isinstance(raw, int | float) or not math.isfinite(raw):
            kind = type(raw).__name__ if raw is not None else "null"
            return invalid(point, f"{address}: value is {kind}, not a number")
        return Reading(point.id, to_engineering(point, raw), point.unit, source_time=now)

    async def write(self, point: Point, command: Command) -> CommandResult:
        address = self.address(point)
        template = self.options.template(address.path)
        body: dict[str, Any] = copy.deepcopy(template.body)
        if command.deadline is not None and command.deadline <= datetime.now(UTC):
            return CommandResult(command, CommandStatus.TIMEOUT, "not sent: deadline passed")
        raw = to_raw(point, command.value)
        try:
            address.put(body, raw)
        except (ValueError, IndexError) as exc:
            return CommandResult(
                command, CommandStatus.REJECTED, f"{address}: body template has no place: {exc}"
            )
        self.requests_sent += 1
        try:
            answer = await self._http.request(template.method.value, address.path, body)
        except RequestTimeout as exc:
            return CommandResult(command, CommandStatus.TIMEOUT, str(exc))
        except LinkError as exc:
            return CommandResult(command, CommandStatus.LINK_DOWN, str(exc))
        if answer.problem is not None:
            return CommandResult(command, CommandStatus.REJECTED, answer.problem)
        return CommandResult(command, CommandStatus.CONFIRMED)
