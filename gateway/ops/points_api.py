"""Reading and writing points through the operations listener (what `mgms point` calls).

    GET  /api/points?id=bess1.p&id=bess1.soc   latest readings (and last commands)
    POST /api/points/bess1.p_set               {"value": 15, "by": "alice"}

A write goes through the controller like every other write: checked against the mapping
(known point, writable, write limits) before anything is sent, audited in the store's
events with its origin (`ops:<by>`) and logged. Values are in the point's own unit (the
mapping's `unit:`). Writes need the operator's token: the listener must have
`ops.operator_token_file` (its middleware checks the token on every request), so a process
on the box that can reach loopback cannot write set points by that alone.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.errors import CommandError, LimitViolation, UnknownPoint
from gateway.model import Command, CommandMode, CommandStatus
from gateway.ops.status import plain, point_row

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger(__name__)

POINTS_PATH = "/api/points"
#: what `by` may hold: a short name, as it lands in the audit trail
_BY = re.compile(r"^[A-Za-z0-9_.@\-]{1,64}$")
#: HTTP status of a command the device did not confirm
_NOT_DONE = {
    CommandStatus.REJECTED: 502,
    CommandStatus.TIMEOUT: 504,
    CommandStatus.LINK_DOWN: 503,
}


def _refusal(status: int, error: str, **extra: Any) -> web.Response:
    return web.json_response({"error": error, **extra}, status=status)


def _value(raw: object) -> float | int | bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int | float) and math.isfinite(raw):
        return raw
    raise ValueError(f"value must be a finite number or true/false, got {raw!r}")


class PointsApi:
    def __init__(self, gw: Gateway, writes_allowed: bool) -> None:
        self.gw = gw
        self.writes_allowed = writes_allowed

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(POINTS_PATH, self.read)
        app.router.add_post(POINTS_PATH + "/{point}", self.write)

    async def read(self, request: web.Request) -> web.Response:
        ids = request.query.getall("id", [])
        if not ids:
            return _refusal(400, "name the points: /api/points?id=<point>&id=<point>")
        unknown = [i for i in ids if i not in self.gw.table]
        if unknown:
            return _refusal(404, f"unknown point(s): {', '.join(unknown)}", unknown=unknown)
        now = datetime.now(UTC)
        last = self.gw.controller.last if self.gw.controller is not None else {}
        rows = []
        for point_id in ids:
            mapped = self.gw.table.mapped(point_id)
            assert mapped is not None
            row = point_row(mapped, self.gw.table.latest(point_id), last.get(point_id), now)
            reading = self.gw.table.latest(point_id)
            out = plain(asdict(row))
            out["time"] = None if reading is None else reading.gateway_time.isoformat()
            rows.append(out)
        return web.json_response({"points": rows})

    async def write(self, request: web.Request) -> web.Response:
        point_id = request.match_info["point"]
        if not self.writes_allowed:
            return _refusal(
                403,
                "writes through the ops listener need the operator's token: set "
                "ops.operator_token_file in the gateway config",
            )
        controller = self.gw.controller
        if controller is None:
            return _refusal(503, "the gateway is not running its write path")
        try:
            body = json.loads(await request.read() or b"{}")
            if not isinstance(body, dict) or "value" not in body:
                raise ValueError('send a JSON object {"value": <number or true/false>}')
            value = _value(body["value"])
            by = str(body.get("by", "operator"))
            if not _BY.match(by):
                raise ValueError(f"by must be a short name (letters, digits, _.@-), got {by!r}")
        except (ValueError, UnicodeDecodeError) as exc:
            return _refusal(400, f"point {point_id}: {exc}")
        mapped = self.gw.table.mapped(point_id)
        sbo = mapped is not None and mapped.point.sbo
        command = Command(
            point_id,
            value,
            mode=CommandMode.SELECT_BEFORE_OPERATE if sbo else CommandMode.DIRECT,
            origin=f"ops:{by}",
        )
        try:
            result = await controller.write(command)
        except CommandError as exc:
            status = 404 if isinstance(exc, UnknownPoint) else 409  # e.g. NotWritable
            status = 422 if isinstance(exc, LimitViolation) else status
            log.warning(
                "operator write %s = %s by %s refused: %s",
                point_id,
                value,
                by,
                exc,
                extra={"point": point_id, "origin": command.origin},
            )
            return _refusal(status, str(exc), point=point_id)
        assert mapped is not None
        log.info(
            "operator write %s = %s %s by %s: %s %s",
            point_id,
            value,
            mapped.point.unit,
            by,
            result.status.value,
            result.detail,
            extra={"point": point_id, "origin": command.origin},
        )
        answer = {
            "point": point_id,
            "value": value,
            "unit": mapped.point.unit,
            "status": result.status.value,
            "confirmed": result.ok,
            "detail": result.detail,
            "time": result.completed_at.isoformat(),
        }
        return web.json_response(answer, status=200 if result.ok else _NOT_DONE[result.status])
