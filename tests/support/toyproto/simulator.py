"""The toy device for `mgms sim`: answers READ and WRITE lines for its mapped points from
the shared microgrid (fwsim.points.PointValues), like every front end."""

from __future__ import annotations

import asyncio
import contextlib

from drivers.base import to_raw
from fwsim.frontend import FrontEnd
from fwsim.points import PointFault
from gateway.mapping import Point


class ToyFrontEnd(FrontEnd):
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        self._points: dict[str, Point] = {
            str(self.device.address_of(p.id)): p for p in self.device.points
        }
        self._server = await asyncio.start_server(self._serve, self.host, self.port)

    async def refresh(self) -> None:
        """Nothing to copy: every READ answers the model's current value."""

    def _answer(self, line: str) -> str:
        verb, _, rest = line.partition(" ")
        name, _, value = rest.partition(" ")
        point = self._points.get(name)
        if point is None:
            return f"ERR no point {name!r}"
        try:
            if verb == "READ" and point.direction.readable:
                return f"OK {float(to_raw(point, self.values.value(point)))!r}"
            if verb == "WRITE" and point.direction.writable:
                # the engineering value of the raw number sent
                self.values.write(point, float(value) * point.scale + point.offset)
                return "OK"
        except PointFault as exc:
            return f"ERR {exc}"
        except ValueError:
            return f"ERR not a number: {value!r}"
        return f"ERR {verb} not allowed on {name!r}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(f"{self._answer(line.decode('ascii', 'replace').strip())}\n".encode())
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(OSError):
                await self._server.wait_closed()
            self._server = None
