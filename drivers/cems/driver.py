"""The CEMS driver: points as JSON values of HTTPS resources (REST form) or as value
objects of Smart API entities (Smart API form), on one keep-alive HTTPS session.

A poll GETs every path of the requested REST points once and takes each point's value by
its JSON pointer, and sends one Smart API Read per entity of the Smart API points. A
resource (or entity) the CEMS answers badly (an HTTP error, a redirect, HTML, broken
JSON, a body over the limit, no answer in time) makes only its own points invalid, with the
reason; only when no resource answered at all is the link down (`LinkError`, and the
session reconnects with its capped backoff).
"""

from __future__ import annotations

import asyncio
import copy
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from jsonpointer import JsonPointerException

from drivers.base import Driver, ReadingSink, invalid, to_engineering, to_raw
from drivers.cems import smartapi_form
from drivers.cems.http import CemsHttp, JsonAnswer, json_of
from drivers.cems.protocol import CemsOptions, RestAddress, SmartApiAddress
from drivers.cems.push import PushReceiver
from drivers.cems.security import gateway_link
from drivers.cems.smartapi_form import SmartApiPoint
from gateway.errors import LinkError, RequestTimeout, SecurityError, SmartApiError
from gateway.mapping import Device, Point
from gateway.model import Command, CommandResult, CommandStatus, QualityFlag, Reading
from gateway.smartapi.encode import AnyMessage
from gateway.smartapi.messages import Request
from gateway.smartapi.security.replay import ReplayGuard


class CemsDriver(Driver):
    def __init__(self, device: Device) -> None:
        super().__init__(device)
        options = device.typed_options
        assert isinstance(options, CemsOptions)
        self.options = options
        self._http = CemsHttp(device, options)
        self._link = gateway_link(options)
        self._push: PushReceiver | None = None
        #: HTTP requests sent since the driver was built (reads and writes)
        self.requests_sent = 0

    def address(self, point: Point) -> RestAddress | SmartApiAddress:
        address = self.device.address_of(point.id)
        assert isinstance(address, RestAddress | SmartApiAddress)
        return address

    def _groups(self, points: Sequence[Point]) -> dict[tuple[str, str], list[Point]]:
        """Points by the request that reads them: ("GET", path) or ("Read", entity)."""
        groups: dict[tuple[str, str], list[Point]] = {}
        for point in points:
            address = self.address(point)
            if isinstance(address, RestAddress):
                key = ("GET", address.path)
            else:
                key = ("Read", address.entity)
            groups.setdefault(key, []).append(point)
        return groups

    @property
    def connected(self) -> bool:
        return self._http.open

    async def connect(self) -> None:
        """Open the session and prove the link with one request: a GET of the first REST
        path, else of the Smart API path (any HTTP answer proves it; TLS or socket
        failures do not)."""
        await self.close()
        await self._http.start()
        paths = [
            a.path for p in self.device.points if isinstance(a := self.address(p), RestAddress)
        ]
        try:
            self.requests_sent += 1
            await self._http.request("GET", paths[0] if paths else self.options.smartapi_path)
        except LinkError:
            await self.close()
            raise

    async def close(self) -> None:
        receiver, self._push = self._push, None
        if receiver is not None:
            await receiver.stop()
        await self._http.close()

    async def subscribe(self, sink: ReadingSink) -> bool:
        """With `options.push`, listen for the CEMS's Notifications (see push.py)."""
        push = self.options.push
        if push is None:
            return False
        points = [
            self._smartapi(p)
            for p in self.device.points
            if p.direction.readable and isinstance(self.address(p), SmartApiAddress)
        ]
        # notifications get a replay guard of their own (an answer is matched to its request)
        link = gateway_link(self.options, ReplayGuard())
        receiver = PushReceiver(self.device, self.options, push, points, sink, link)
        await receiver.start()
        self._push = receiver
        return True

    @property
    def push_delivered(self) -> int:
        """Readings the push endpoint delivered since it started (0 without push)."""
        return self._push.delivered if self._push is not None else 0

    def read_budget(self, points: Sequence[Point]) -> float:
        """One request per path or entity, each bounded by the device timeout."""
        return self.device.timeout * max(len(self._groups(points)), 1) + 1

    async def read(self, points: Sequence[Point]) -> list[Reading]:
        readings: dict[str, Reading] = {}
        silent: RequestTimeout | None = None
        answered = False
        for (kind, key), group in self._groups(points).items():
            self.requests_sent += 1
            try:
                if kind == "GET":
                    got = await self._read_path(key, group)
                else:
                    got = await self._read_entity(key, group)
            except RequestTimeout as exc:
                silent = exc
                for point in group:
                    readings[point.id] = invalid(point, str(exc), QualityFlag.COMM_FAILURE)
                continue
            answered = True
            readings.update((r.point, r) for r in got)
        if silent is not None and not answered:
            raise silent
        return [readings[p.id] for p in points]

    async def _read_path(self, path: str, group: list[Point]) -> list[Reading]:
        document = json_of(await self._http.request("GET", path))
        return [self._reading(point, document) for point in group]

    async def _read_entity(self, entity: str, group: list[Point]) -> list[Reading]:
        targets = [self._smartapi(p) for p in group]
        request = smartapi_form.read_request(entity, targets, self.options.smartapi_sender)
        message = await self._exchange(request)
        if isinstance(message, str):
            return [invalid(p, message) for p in group]
        return smartapi_form.readings(message, request, targets)

    def _smartapi(self, point: Point) -> SmartApiPoint:
        address = self.address(point)
        assert isinstance(address, SmartApiAddress)
        return SmartApiPoint(point, address)

    async def _exchange(self, request: Request) -> AnyMessage | str:
        """POST a Smart API request in the CEMS's profile (signed when the options say so);
        the decoded and verified answer, or why there is none."""
        body, content_type = self._link.encode(request)
        answer = await self._http.request(
            "POST", self.options.smartapi_path, data=body, content_type=content_type
        )
        if answer.problem is not None and not answer.body:
            return answer.problem
        try:
            return self._link.decode(answer.body, answer.content_header)
        except SecurityError as exc:
            return answer.problem or f"{answer.what}: answer refused: {exc}"
        except (SmartApiError, ValueError) as exc:
            return answer.problem or f"{answer.what}: answer is not a Smart API message ({exc})"

    def _reading(self, point: Point, answer: JsonAnswer) -> Reading:
        """A REST value carries no time of its own: the reading has the gateway's only."""
        if answer.problem is not None:
            return invalid(point, answer.problem)
        address = self.address(point)
        assert isinstance(address, RestAddress)
        try:
            raw = address.json_pointer.resolve(answer.document)
        except JsonPointerException:
            return invalid(point, f"{address}: no such member in the answer")
        if isinstance(raw, bool):
            return Reading(point.id, raw, point.unit)
        if not isinstance(raw, int | float) or not math.isfinite(raw):
            kind = type(raw).__name__ if raw is not None else "null"
            return invalid(point, f"{address}: value is {kind}, not a number")
        return Reading(point.id, to_engineering(point, raw), point.unit)

    async def write(self, point: Point, command: Command) -> CommandResult:
        left: float | None = None
        if command.deadline is not None:
            left = (command.deadline - datetime.now(UTC)).total_seconds()
            if left <= 0:
                return CommandResult(command, CommandStatus.TIMEOUT, "not sent: deadline passed")
        try:
            async with asyncio.timeout(left):  # the device timeout bounds each request too
                if isinstance(self.address(point), SmartApiAddress):
                    return await self._write_smartapi(point, command)
                return await self._write_rest(point, command)
        except TimeoutError:
            if left is None:  # not ours: only the deadline's timeout ends here
                raise
            detail = f"no answer before the command's deadline ({left:.3g} s)"
            return CommandResult(command, CommandStatus.TIMEOUT, detail)
        except RequestTimeout as exc:
            return CommandResult(command, CommandStatus.TIMEOUT, str(exc))
        except LinkError as exc:
            return CommandResult(command, CommandStatus.LINK_DOWN, str(exc))

    async def _write_smartapi(self, point: Point, command: Command) -> CommandResult:
        target = self._smartapi(point)
        value = to_raw(point, command.value)
        request = smartapi_form.write_request(target, value, self.options.smartapi_sender)
        self.requests_sent += 1
        message = await self._exchange(request)
        why = message if isinstance(message, str) else smartapi_form.refusal(message, request)
        if why is not None:
            return CommandResult(command, CommandStatus.REJECTED, why)
        return CommandResult(command, CommandStatus.CONFIRMED)

    async def _write_rest(self, point: Point, command: Command) -> CommandResult:
        address = self.address(point)
        assert isinstance(address, RestAddress)
        template = self.options.template(address.path)
        body: dict[str, Any] = copy.deepcopy(template.body)
        raw = to_raw(point, command.value)
        try:
            address.put(body, raw)
        except (ValueError, IndexError) as exc:
            return CommandResult(
                command, CommandStatus.REJECTED, f"{address}: body template has no place: {exc}"
            )
        self.requests_sent += 1
        answer = await self._http.request(template.method.value, address.path, body)
        if answer.problem is not None:
            return CommandResult(command, CommandStatus.REJECTED, answer.problem)
        return CommandResult(command, CommandStatus.CONFIRMED)
