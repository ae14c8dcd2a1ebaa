"""The IEC 61850 MMS driver: reads MX/ST attributes with their quality and time, writes
SP/CF set points, operates APC/INC/SPC/DPC controls (direct or select-before-operate,
normal or enhanced security) and takes spontaneous data from report control blocks.

All library calls happen in a worker process per IED (see worker.py); this side only
plans requests, bounds every one of them in time, and translates answers (codec.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from drivers.base import ProtocolDriver, ReadingSink, invalid, to_raw
from drivers.iec61850 import codec, wire
from drivers.iec61850.channel import WorkerChannel, WorkerGone
from drivers.iec61850.protocol import DataType, Iec61850Address, Iec61850Options
from gateway.errors import LinkError
from gateway.mapping import Device, Point
from gateway.model import Command, CommandResult, CommandStatus, Reading

log = logging.getLogger(__name__)

DEFAULT_PORT = 102


class Iec61850Driver(ProtocolDriver[Iec61850Address, Iec61850Options]):
    def __init__(self, device: Device) -> None:
        super().__init__(device, Iec61850Address, Iec61850Options)
        self._addresses: dict[str, Iec61850Address] = {}
        for point in device.points:
            self._addresses[point.id] = self.address(point)
        self._channel: WorkerChannel | None = None
        self._sink: ReadingSink | None = None
        self._reporting = False
        self._plans: dict[tuple[str, ...], codec.ReadPlan] = {}
        self._warm: set[codec.ReadPlan] = set()  # plans the worker has read (types known)
        readable = [p for p in device.points if p.direction.readable]
        self._report_plan = (readable, self._plan(readable))

    @property
    def connected(self) -> bool:
        return self._channel is not None and self._channel.alive

    @property
    def worker_pid(self) -> int | None:
        """The worker process serving this IED (for supervision and tests)."""
        return None if self._channel is None else self._channel.pid

    def _plan(self, points: Sequence[Point]) -> codec.ReadPlan:
        key = tuple(p.id for p in points)
        plan = self._plans.get(key)
        if plan is None:
            addresses = [self._addresses[p.id] for p in points]
            plan = codec.plan_reads(addresses, self.options.data_sets)
            self._plans[key] = plan
        return plan

    # link

    async def connect(self) -> None:
        await self.close()
        conn = self.device.connection
        if conn.host is None:
            raise LinkError(self.device.id, "IEC 61850 needs connection.host (MMS over TCP)")
        port = conn.port or DEFAULT_PORT
        channel = WorkerChannel(f"iec61850 {self.device.id}", self._on_spontaneous)
        limit = self.options.connect_timeout
        try:
            async with asyncio.timeout(limit):
                await channel.start()
                answer = await channel.request(
                    {
                        "op": wire.CONNECT,
                        "host": conn.host,
                        "port": port,
                        "timeout_ms": int(self.device.timeout * 1000),
                    },
                    limit,
                )
        except BaseException as exc:  # cancelled too: never leave a worker behind
            channel.kill()
            await channel.close(self.options.worker_grace)
            if isinstance(exc, TimeoutError | WorkerGone | OSError):
                raise LinkError(
                    self.device.id, f"no MMS association with {conn.host}:{port} within {limit} s"
                ) from None
            raise
        if "error" in answer:
            await channel.close(self.options.worker_grace)
            raise LinkError(self.device.id, str(answer["error"].get("message")))
        self._channel = channel
        if self._sink is not None:
            await self._enable_reports()

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        self._reporting = False
        self._warm.clear()
        if channel is not None:
            await channel.close(self.options.worker_grace)

    async def _call(self, message: wire.Message, requests: int, extra: float = 0.0) -> wire.Message:
        """One worker request, bounded by the library's own timeouts plus a grace period."""
        channel = self._channel
        if channel is None or not channel.alive:
            raise LinkError(self.device.id, "not connected")
        bound = self.device.timeout * requests + extra + self.options.worker_grace
        try:
            answer = await channel.request(message, bound)
        except WorkerGone as exc:
            raise LinkError(self.device.id, str(exc)) from None
        error = answer.get("error")
        if isinstance(error, dict) and error.get("link"):
            raise LinkError(self.device.id, str(error.get("message")))
        return answer

    # reading

    async def read(self, points: Sequence[Point]) -> list[Reading]:
        if not points:
            return []
        plan = self._plan(points)
        requests = len(plan.units)
        if plan not in self._warm:  # the first read also asks the IED for types, directories
            members = {d.reference: len(d.members) for d in self.options.data_sets}
            requests += sum(1 + members.get(u.ref, 0) for u in plan.units)
        answer = await self._call(
            {"op": wire.READ, "units": [u.to_wire() for u in plan.units]}, requests
        )
        self._warm.add(plan)
        if "error" in answer:
            why = str(answer["error"].get("message"))
            return [invalid(p, why) for p in points]
        addresses = [self._addresses[p.id] for p in points]
        return codec.readings(points, addresses, plan, answer["results"])

    # spontaneous data

    async def subscribe(self, sink: ReadingSink) -> bool:
        if not any(d.report for d in self.options.data_sets):
            return False
        self._sink = sink
        if self.connected and not self._reporting:
            return await self._enable_reports()
        return True

    async def _enable_reports(self) -> bool:
        items = [
            {"rcb": d.report, "data_set": d.reference} for d in self.options.data_sets if d.report
        ]
        # what later requests need to know is asked before reports can arrive (worker doc)
        units = self._report_plan[1].units
        controls = [
            self._addresses[p.id].reference
            for p in self.device.points
            if self._addresses[p.id].is_control and p.direction.writable
        ]
        members = {d.reference: len(d.members) for d in self.options.data_sets}
        requests = sum(4 + len(d.members) for d in self.options.data_sets if d.report)
        requests += sum(1 + members.get(u.ref, 0) for u in units) + 2 * len(controls)
        prepare = {"units": [u.to_wire() for u in units], "controls": controls}
        answer = await self._call(
            {"op": wire.REPORTS, "items": items, "prepare": prepare}, requests
        )
        if "error" in answer:
            log.warning(
                "device %r: reports not enabled, data is polled only: %s",
                self.device.id,
                answer["error"].get("message"),
            )
            return False
        self._reporting = True
        return True

    def _on_spontaneous(self, message: wire.Message) -> None:
        report = message.get("report")
        sink = self._sink
        if not isinstance(report, dict) or sink is None:
            return
        members: list[str] = list(report.get("members", []))
        values: list[Any] = list(report.get("values", []))
        points, plan = self._report_plan
        for point, slot in zip(points, plan.slots, strict=True):
            if plan.units[slot.unit].ref != report.get("data_set") or slot.member not in members:
                continue
            value = values[members.index(slot.member)]
            if value is None:  # not included in this report
                continue
            try:
                sink(codec.reading(point, self._addresses[point.id], value, slot))
            except Exception:  # a consumer bug must not stop the channel
                log.exception("device %r: report sink failed", self.device.id)

    # writing

    async def write(self, point: Point, command: Command) -> CommandResult:
        address = self._addresses.get(point.id)
        if address is None:
            return CommandResult(command, CommandStatus.REJECTED, "not a point of this device")
        if not address.fc.writable:
            return CommandResult(
                command,
                CommandStatus.REJECTED,
                f"{address} cannot be written (map an SP/CF attribute or a CO control)",
            )
        value = _wire_value(address.data_type, to_raw(point, command.value))
        try:
            if address.is_control:
                return await self._operate(address, point, command, value)
            answer = await self._call(
                {
                    "op": wire.WRITE,
                    "ref": address.reference,
                    "fc": address.fc.value,
                    "type": address.data_type.value,
                    "value": value,
                },
                requests=1,
            )
            return codec.write_result(command, answer)
        except LinkError as exc:
            return CommandResult(command, CommandStatus.LINK_DOWN, str(exc))

    async def _operate(
        self, address: Iec61850Address, point: Point, command: Command, value: float | bool
    ) -> CommandResult:
        wait = self.options.termination_timeout
        if command.deadline is not None:
            left = (command.deadline - datetime.now(UTC)).total_seconds()
            wait = max(min(wait, left), 0.01)
        answer = await self._call(
            {
                "op": wire.CONTROL,
                "ref": address.reference,
                "type": address.data_type.value,
                "value": value,
                "sbo": point.sbo,
                "enhanced": self.options.enhanced_security,
                "originator": self.options.originator,
                "termination_timeout": wait,
            },
            requests=5,  # first use: type, control model; then select and operate
            extra=wait,
        )
        return codec.control_result(command, answer, wait)


def _wire_value(data_type: DataType, raw: float | bool) -> float | bool:
    if data_type in (DataType.BOOL, DataType.DBPOS):
        return bool(raw)
    if data_type is DataType.INT32:
        return round(raw)
    return float(raw)


__all__ = ["Iec61850Driver"]
