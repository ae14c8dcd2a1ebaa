"""The read plan: which Modbus requests read a set of points. Pure, no I/O.

Points of one unit id and table are sorted by address and packed greedily into requests:
a point joins the current request while the unused registers before it are at most
`max_gap` and the request stays within `max_registers` (`max_bits` for coils and discrete
inputs). Any sub-sequence of a feasible request is feasible, so the greedy packing uses the
fewest requests. With `coalesce: false` every point gets its own request (the naive plan).
A point larger than the request limit still gets one request of its own: a value is never
split across requests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby

from drivers.modbus.protocol import ModbusAddress, ModbusOptions, Table


@dataclass(frozen=True)
class ReadRequest:
    """One Modbus read: `count` registers (or bits) of `table` on `unit` from `address`,
    and the points (id, address) whose values it carries."""

    unit: int
    table: Table
    address: int
    count: int
    points: tuple[tuple[str, ModbusAddress], ...]

    @property
    def end(self) -> int:
        return self.address + self.count

    def offset(self, address: ModbusAddress) -> int:
        """Where a member point's first register (or bit) sits in the response."""
        return address.address - self.address


def _request(points: Sequence[tuple[str, ModbusAddress]]) -> ReadRequest:
    first = points[0][1]
    start = min(a.address for _, a in points)
    end = max(a.end for _, a in points)
    return ReadRequest(first.unit, first.table, start, end - start, tuple(points))


def _limit(table: Table, options: ModbusOptions) -> int:
    return options.max_bits if table.is_bit else options.max_registers


def plan_reads(
    points: Iterable[tuple[str, ModbusAddress]], options: ModbusOptions
) -> list[ReadRequest]:
    """The requests that read `points`, ordered by unit, table and address."""
    ordered = sorted(points, key=lambda p: (p[1].unit, p[1].table.value, p[1].address, p[1].end))
    if not options.coalesce:
        return [_request([p]) for p in ordered]
    requests: list[ReadRequest] = []
    for (_, table), group in groupby(ordered, key=lambda p: (p[1].unit, p[1].table)):
        limit = _limit(table, options)
        current: list[tuple[str, ModbusAddress]] = []
        start = end = 0
        for point in group:
            address = point[1]
            fits = (
                current
                and address.address - end <= options.max_gap
                and max(end, address.end) - start <= limit
            )
            if fits:
                current.append(point)
                end = max(end, address.end)
                continue
            if current:
                requests.append(_request(current))
            current, start, end = [point], address.address, address.end
        if current:
            requests.append(_request(current))
    return requests


def split(request: ReadRequest) -> list[ReadRequest]:
    """Two requests for the two halves of a request's points (to find the points a failed
    request's exception belongs to); a single-point request cannot be split."""
    if len(request.points) < 2:
        return [request]
    half = len(request.points) // 2
    return [_request(request.points[:half]), _request(request.points[half:])]
