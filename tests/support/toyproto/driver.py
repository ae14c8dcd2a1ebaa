"""The toy driver: one request line, one answer line, over one TCP connection."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Sequence

from drivers.base import Driver, invalid, to_engineering, to_raw
from gateway.errors import LinkError, RequestTimeout
from gateway.mapping import Point
from gateway.model import Command, CommandResult, CommandStatus, Reading


class ToyDriver(Driver):
    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        conn = self.device.connection
        try:
            async with asyncio.timeout(self.device.timeout):
                self._reader, self._writer = await asyncio.open_connection(conn.host, conn.port)
        except (OSError, TimeoutError) as exc:
            raise LinkError(self.device.id, f"connect {conn.host}:{conn.port}: {exc}") from None

    async def _ask(self, line: str) -> str:
        if self._reader is None or self._writer is None:
            raise LinkError(self.device.id, "not connected")
        try:
            async with asyncio.timeout(self.device.timeout):
                self._writer.write(f"{line}\n".encode("ascii"))
                await self._writer.drain()
                answer = await self._reader.readline()
        except TimeoutError:
            raise RequestTimeout(self.device.id, f"no answer to {line!r}") from None
        except OSError as exc:
            raise LinkError(self.device.id, f"{line!r}: {exc}") from None
        if not answer:
            raise LinkError(self.device.id, "the device closed the connection")
        return answer.decode("ascii", "replace").strip()

    async def read(self, points: Sequence[Point]) -> list[Reading]:
        out: list[Reading] = []
        for point in points:
            answer = await self._ask(f"READ {self.device.address_of(point.id)}")
            status, _, rest = answer.partition(" ")
            try:
                raw = float(rest) if status == "OK" else math.nan
            except ValueError:
                raw = math.nan
            if not math.isfinite(raw):
                out.append(invalid(point, f"device answered {answer!r}"))
            else:
                out.append(Reading(point.id, to_engineering(point, raw), point.unit))
        return out

    async def write(self, point: Point, command: Command) -> CommandResult:
        raw = float(to_raw(point, command.value))
        try:
            answer = await self._ask(f"WRITE {self.device.address_of(point.id)} {raw!r}")
        except RequestTimeout as exc:
            return CommandResult(command, CommandStatus.TIMEOUT, str(exc))
        except LinkError as exc:
            return CommandResult(command, CommandStatus.LINK_DOWN, str(exc))
        if answer != "OK":
            return CommandResult(command, CommandStatus.REJECTED, answer)
        return CommandResult(command, CommandStatus.CONFIRMED)

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()
