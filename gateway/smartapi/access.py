"""The Smart API access endpoint: `POST /smartapi/v1.0e1.0/access/`.

`AccessService.handle(body, content_type, peer_role, accept)` is the transport-free core
(the northbound HTTPS server and the MQTT bridge call it with the peer's role from its TLS
certificate); `add_routes` mounts it on an aiohttp application.

- Read requests are answered from the point table: an entity alone gives all its points, a
  value object with `mgms:point` gives that point, one with a quantity kind gives the
  entity's points of that kind.
- Write requests go through the controller (`write(Command) -> CommandResult`). Every
  value object is resolved and checked (known point, writable, unit, limits) before the
  first command is sent, so a bad request changes nothing.
- TimeSeries writes (an entity carrying a time series, e.g. a PV or load forecast from the
  AMS or a forecast service) go to `forecasts`, the external forecasts the flexibility
  functions blend into the DER's baseline; every series is checked before any is taken.
- Reserve Notifications and Activations are not taken here (404): they go to the
  northbound notification and activation endpoints, through the inbound pipeline.
- Anything refused is answered with a Smart API Error naming the reason; its errorCode is
  the HTTP status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol, TypeVar

from aiohttp import web
from rdflib import Graph

from gateway import units
from gateway.config import LoadedConfig
from gateway.errors import (
    CommandError,
    Forbidden,
    LimitViolation,
    NotFound,
    NotWritable,
    SmartApiError,
    UnsupportedMediaType,
    WriteFailed,
    WrongUnit,
)
from gateway.mapping import Quantity
from gateway.model import Command, CommandMode, CommandResult, utcnow
from gateway.points import MappedPoint, PointTable
from gateway.smartapi.codec import Format, negotiate, parse, prepare, serialize
from gateway.smartapi.decode import decode_graph
from gateway.smartapi.encode import AnyMessage, der_iri, to_tree
from gateway.smartapi.fielddata import (
    SETPOINT_ROLES,
    entities,
    owner_of,
    quantity_kind,
    value_object,
)
from gateway.smartapi.flexibility import ReserveActivation, ReserveNotification
from gateway.smartapi.interop import read_envelope, to_v11
from gateway.smartapi.messages import (
    Activity,
    Entity,
    ErrorMessage,
    Method,
    Request,
    Response,
    TimeSeries,
    ValueObject,
    new_message_id,
)
from gateway.smartapi.peers import MODERN, PeerProfile, Profiles
from gateway.smartapi.tree import Node

log = logging.getLogger(__name__)

ACCESS_PATH = "/smartapi/v1.0e1.0/access/"
#: where the HTTPS server puts the authenticated peer's role on the aiohttp request
PEER_ROLE_KEY = web.RequestKey("mgms_peer_role", str)

Writer = Callable[[Command], Awaitable[CommandResult]]
_T = TypeVar("_T")


class Opener(Protocol):
    """Inbound security: verifies, decrypts and replay-checks, returning the graph;
    `last_encrypted` says whether the message it opened last had an encrypted part."""

    last_encrypted: bool

    def open(self, body: bytes, content_type: str | None) -> Graph: ...


class Sealer(Protocol):
    """Outbound security: signs (and may encrypt) the answer's tree; `seal_v11` the 1.1
    way, for a Smart API 1.1 peer (multipart body and its Content-Type)."""

    def seal(self, roots: list[Node]) -> list[Node]: ...

    def seal_v11(self, roots: list[Node], recipient: str, encrypt: bool) -> tuple[bytes, str]: ...

    def can_encrypt_for(self, recipient: str) -> bool: ...


class ForecastSink(Protocol):
    """External forecasts per DER (gateway.flex.messages.ExternalForecasts)."""

    def check(self, der: str, series: TimeSeries) -> None:
        """ValueError naming what is wrong with `series` as a forecast of `der`."""
        ...

    def update(self, der: str, series: TimeSeries) -> None: ...


class AccessReply(NamedTuple):
    """What to send back: unpacks as (status, body, content_type)."""

    status: int
    body: bytes
    content_type: str


@dataclass(frozen=True)
class AccessPolicy:
    #: roles (from the peer's certificate) that may send Write requests and instructions
    writers: frozenset[str] = frozenset({"ams", "operator"})
    #: roles that may read; None: any authenticated peer
    readers: frozenset[str] | None = None
    #: answer reads from peers without a role (plain HTTP in development only)
    allow_anonymous_read: bool = False
    command_timeout: timedelta = timedelta(seconds=5)


@dataclass(frozen=True)
class _Recipient:
    """Who an answer goes to, once the request was read: its sender, profile, and
    whether it came encrypted."""

    sender: str | None = None
    profile: PeerProfile = MODERN
    encrypted: bool = False


@dataclass
class _Planned:
    entity_iri: str
    mapped: MappedPoint
    value: float | int | bool
    wanted: ValueObject


@dataclass
class AccessService:
    config: LoadedConfig
    table: PointTable
    write: Writer
    sender: str
    policy: AccessPolicy = field(default_factory=AccessPolicy)
    opener: Opener | None = None
    sealer: Sealer | None = None
    clock: Callable[[], datetime] = utcnow
    #: where TimeSeries writes go (None: refused as not taken here)
    forecasts: ForecastSink | None = None
    #: which senders speak Smart API 1.1: their envelope is read the 1.1 way and they are
    #: answered in their forms (gateway.smartapi.interop)
    profiles: Profiles = field(default_factory=Profiles)

    _cpu: asyncio.Semaphore | None = field(default=None, init=False, repr=False)
    #: the entities (without values) and each entity's points, for the config they were
    #: worked out from: a read costs the points it asks for, not every point of the site
    _index: tuple[LoadedConfig, dict[str, Entity], dict[str, list[MappedPoint]]] | None = field(
        default=None, init=False, repr=False
    )

    async def handle(
        self,
        body: bytes,
        content_type: str | None,
        peer_role: str | None,
        accept: str | None = None,
    ) -> AccessReply:
        try:
            fmt = negotiate(accept)
        except UnsupportedMediaType as exc:
            return await self._off_loop(self._error_reply, exc, Format.TURTLE, None)
        request_id: str | None = None
        to = _Recipient()
        try:
            msg, encrypted = await self._off_loop(self._open, body, content_type)
            request_id = msg.id
            to = _Recipient(msg.sender, self.profiles.of(msg.sender), encrypted)
            if not self._answerable(to):
                # refused unencrypted: the refusal says nothing of the request's content
                to = replace(to, encrypted=False)
                raise Forbidden(
                    f"the request came encrypted and there is no trusted RSA key of "
                    f"{to.sender} to encrypt the answer for; nothing was applied"
                )
            answer = await self._dispatch(msg, peer_role)
        except SmartApiError as exc:
            log.info("smartapi request %s refused: %s", request_id or "?", exc)
            return await self._off_loop(self._error_reply, exc, fmt, request_id, to)
        return await self._off_loop(self._reply, 200, answer, fmt, to)

    async def _off_loop(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Parsing, signature checks and signing cost milliseconds of CPU per request: they
        run in a worker thread, one request at a time, so that the event loop (control,
        activations, acquisition) gets its turn between them instead of waiting behind a
        queue of reads. One at a time also keeps the opener's replay guard single-threaded."""
        if self._cpu is None:
            self._cpu = asyncio.Semaphore(1)
        async with self._cpu:
            return await asyncio.to_thread(fn, *args)

    def _open(self, body: bytes, content_type: str | None) -> tuple[AnyMessage, bool]:
        """The message, and whether it came encrypted (a 1.1 peer is answered so)."""
        graph = (
            self.opener.open(body, content_type)
            if self.opener is not None
            else parse(body, content_type)
        )
        read_envelope(graph, body, self.profiles)  # done already by an opener: idempotent
        encrypted = self.opener is not None and self.opener.last_encrypted
        return decode_graph(prepare(graph)), encrypted

    def _answerable(self, to: _Recipient) -> bool:
        """A 1.1 peer's encrypted request is answered encrypted, so it is refused before
        anything is applied when we hold no key of the peer to encrypt for."""
        if not (to.encrypted and to.profile.legacy and to.sender and self.sealer):
            return True
        return self.sealer.can_encrypt_for(to.sender)

    # -- dispatch ---------------------------------------------------------------------------

    async def _dispatch(self, msg: AnyMessage, role: str | None) -> Response:
        if isinstance(msg, ReserveNotification | ReserveActivation):
            self._require_writer(role)
            # the CRP channels have their own endpoints (the inbound pipeline)
            raise NotFound(f"{type(msg).__name__} is not accepted by this gateway")
        if not isinstance(msg, Request):
            raise SmartApiError(f"a {type(msg).__name__} is not a request this endpoint answers")
        activities: list[Activity] = []
        writes = [a for a in msg.activities if a.method is Method.WRITE]
        if writes:
            self._require_writer(role)
        else:
            self._require_reader(role)
        series = [self._plan_series(a) for a in writes]  # all checked before any is taken
        plans = [self._plan_writes(a) for a in writes]  # all checked before any is sent
        for activity in msg.activities:
            if activity.method is Method.READ:
                activities.append(self._read(activity))
        for planned in series:
            activities.extend(self._take_series(planned))
        for plan in plans:
            if plan:
                activities.append(await self._execute(plan, origin=msg.sender))
        return self._response(msg.id, tuple(activities))

    def _plan_series(self, activity: Activity) -> list[tuple[Entity, str]]:
        """The entities of a write that carry time series, with their DER."""
        planned: list[tuple[Entity, str]] = []
        for entity in (e for e in activity.entities if e.time_series):
            if self.forecasts is None:
                raise NotFound("this gateway takes no external forecasts")
            mg = self.config.gateway.microgrid.id
            der = next(
                (d.id for d in self.config.gateway.ders if der_iri(mg, d.id) == entity.iri), None
            )
            if der is None:
                raise NotFound(f"a forecast is for a DER; <{entity.iri}> is none of ours")
            for ts in entity.time_series:
                try:
                    self.forecasts.check(der, ts)
                except ValueError as exc:
                    refusal = SmartApiError(str(exc))
                    refusal.code = refusal.status = 422
                    raise refusal from None
            planned.append((entity, der))
        return planned

    def _take_series(self, planned: list[tuple[Entity, str]]) -> list[Activity]:
        taken: list[Activity] = []
        for entity, der in planned:
            assert self.forecasts is not None  # _plan_series refused otherwise
            for ts in entity.time_series:
                self.forecasts.update(der, ts)
            log.info("external forecast for DER %s taken (%d series)", der, len(entity.time_series))
            echo = Entity(iri=entity.iri, time_series=entity.time_series)
            taken.append(Activity(method=Method.WRITE, entities=(echo,)))
        return taken

    def _require_writer(self, role: str | None) -> None:
        if role not in self.policy.writers:
            raise Forbidden(f"peer role {role!r} may not write")

    def _require_reader(self, role: str | None) -> None:
        if role is None:
            if not self.policy.allow_anonymous_read:
                raise Forbidden("reading needs an authenticated peer")
            return
        if self.policy.readers is not None and role not in self.policy.readers:
            raise Forbidden(f"peer role {role!r} may not read")

    def _response(self, in_reply_to: str, activities: tuple[Activity, ...]) -> Response:
        return Response(
            id=new_message_id(),
            sender=self.sender,
            generated_at=self.clock(),
            in_reply_to=in_reply_to,
            activities=activities,
        )

    # -- reads ------------------------------------------------------------------------------

    def _indexed(self) -> tuple[dict[str, Entity], dict[str, list[MappedPoint]]]:
        if self._index is None or self._index[0] is not self.config:  # a reload replaces it
            known = {e.iri: e for e in entities(self.config, self.table, snapshot={})}
            points: dict[str, list[MappedPoint]] = {}
            for m in self.table:
                points.setdefault(owner_of(self.config, m).iri, []).append(m)
            self._index = (self.config, known, points)
        return self._index[1], self._index[2]

    def _points_of(self, iri: str) -> list[MappedPoint]:
        return self._indexed()[1].get(iri, [])

    def _known_entities(self) -> dict[str, Entity]:
        return self._indexed()[0]

    def _read(self, activity: Activity) -> Activity:
        known = self._known_entities()
        answered: list[Entity] = []
        for wanted in activity.entities:
            if wanted.iri not in known:
                raise NotFound(f"unknown entity <{wanted.iri}>")
            points = [m for m in self._points_of(wanted.iri) if m.point.direction.readable]
            chosen: list[MappedPoint] = []
            if not wanted.value_objects:
                chosen = points
            for vo in wanted.value_objects:
                match = [m for m in points if _matches(m, vo)]
                if not match:
                    raise NotFound(f"entity <{wanted.iri}> has no readable point for {_what(vo)}")
                chosen.extend(m for m in match if m not in chosen)
            base = known[wanted.iri]
            answered.append(
                Entity(
                    iri=base.iri,
                    kinds=base.kinds,
                    identifier=base.identifier,
                    name=base.name,
                    parts=base.parts if not wanted.value_objects else (),
                    value_objects=tuple(
                        value_object(m.point, self.table.latest(m.point.id)) for m in chosen
                    ),
                )
            )
        return Activity(method=Method.READ, entities=tuple(answered))

    # -- writes -----------------------------------------------------------------------------

    def _plan_writes(self, activity: Activity) -> list[_Planned]:
        known = self._known_entities()
        plan: list[_Planned] = []
        for wanted in activity.entities:
            if wanted.iri not in known:
                raise NotFound(f"unknown entity <{wanted.iri}>")
            if not wanted.value_objects:
                if wanted.time_series:
                    continue  # a forecast: _plan_series
                raise SmartApiError(f"write to <{wanted.iri}> carries no value object")
            points = self._points_of(wanted.iri)
            for vo in wanted.value_objects:
                plan.append(self._plan_one(wanted.iri, points, vo))
        return plan

    def _plan_one(self, iri: str, points: list[MappedPoint], vo: ValueObject) -> _Planned:
        if vo.value is None or vo.unit is None:
            raise SmartApiError(f"write of {_what(vo)} to <{iri}> has no value")
        if vo.point is not None:
            match = [m for m in points if m.point.id == vo.point]
        else:
            role = _role(vo)
            match = [m for m in points if role is not None and m.point.quantity is role]
        if not match:
            raise NotFound(f"entity <{iri}> has no point to write {_what(vo)}")
        mapped = match[0]
        point = mapped.point
        if not point.direction.writable:
            raise _command_refusal(NotWritable(point.id, "point is read-only"))
        value = _convert(vo.value, vo.unit, point.unit, iri, point.id)
        if point.limits is not None and not isinstance(value, bool):
            problem = point.limits.violation(float(value))
            if problem is not None:
                raise _command_refusal(LimitViolation(point.id, problem))
        return _Planned(iri, mapped, value, vo)

    async def _execute(self, plan: list[_Planned], origin: str) -> Activity:
        done: dict[str, list[ValueObject]] = {}
        timeout = self.policy.command_timeout.total_seconds()
        for step in plan:
            point = step.mapped.point
            command = Command(
                point=point.id,
                value=step.value,
                mode=CommandMode.SELECT_BEFORE_OPERATE if point.sbo else CommandMode.DIRECT,
                origin=f"smartapi:{origin}",
                deadline=self.clock() + self.policy.command_timeout,
            )
            try:
                async with asyncio.timeout(timeout):
                    result = await self.write(command)
            except TimeoutError:
                raise WriteFailed(
                    _partial(f"point {point.id!r}: no answer in {timeout} s", done)
                ) from None
            except CommandError as exc:
                raise _command_refusal(exc, _partial("", done)) from exc
            if not result.ok:
                reason = f"point {point.id!r}: {result.status.value} {result.detail}".strip()
                raise WriteFailed(_partial(reason, done))
            done.setdefault(step.entity_iri, []).append(
                ValueObject(
                    quantity=step.wanted.quantity,
                    unit=point.unit,
                    value=step.value,
                    point=point.id,
                    role=point.quantity.value,
                    time=result.completed_at,
                )
            )
        return Activity(
            method=Method.WRITE,
            entities=tuple(Entity(iri=i, value_objects=tuple(v)) for i, v in done.items()),
        )

    # -- replies ----------------------------------------------------------------------------

    def _reply(
        self, status: int, msg: AnyMessage, fmt: Format, to: _Recipient | None = None
    ) -> AccessReply:
        roots = to_tree(msg)
        if to is not None and to.sender is not None and to.profile.legacy:
            roots = to_v11(roots)
            if self.sealer is not None:
                body, ctype = self.sealer.seal_v11(roots, to.sender, to.encrypted)
                return AccessReply(status, body, ctype)
        elif self.sealer is not None:
            roots = self.sealer.seal(roots)
        return AccessReply(status, serialize(roots, fmt), f"{fmt.value}; charset=utf-8")

    def _error_reply(
        self,
        exc: SmartApiError,
        fmt: Format,
        in_reply_to: str | None,
        to: _Recipient | None = None,
    ) -> AccessReply:
        error = ErrorMessage(
            id=new_message_id(),
            sender=self.sender,
            generated_at=self.clock(),
            code=exc.code,
            message=f"{exc.error_name}: {exc}",
            in_reply_to=in_reply_to,
        )
        return self._reply(exc.status, error, fmt, to)


def _matches(mapped: MappedPoint, vo: ValueObject) -> bool:
    if vo.point is not None and mapped.point.id != vo.point:
        return False
    if vo.role is not None and mapped.point.quantity.value != vo.role:
        return False
    if vo.quantity is not None:
        return quantity_kind(mapped.point) is vo.quantity
    return True


def _role(vo: ValueObject) -> Quantity | None:
    if vo.role is not None:
        try:
            return Quantity(vo.role)
        except ValueError:
            return None
    return SETPOINT_ROLES.get(vo.quantity) if vo.quantity is not None else None


def _what(vo: ValueObject) -> str:
    if vo.point is not None:
        return f"point {vo.point!r}"
    return f"{vo.role or vo.quantity or 'any quantity'}"


def _convert(
    value: float | int | bool, unit: str, target: str, iri: str, point: str
) -> float | int | bool:
    if unit == target or isinstance(value, bool):
        return value
    with contextlib.suppress(ValueError):  # units of different dimensions
        return units.convert(float(value), unit, target)
    raise WrongUnit("qudt:hasUnit", f"<{iri}>", f"point {point!r} takes {target}, not {unit}")


def _command_refusal(exc: CommandError, extra: str = "") -> SmartApiError:
    error = Forbidden(str(exc)) if isinstance(exc, NotWritable) else SmartApiError(str(exc))
    if not isinstance(exc, NotWritable):
        error.code = error.status = 422
    if extra:
        error.detail = f"{exc}; {extra}"
        error.args = (error.detail,)
    return error


def _partial(reason: str, done: dict[str, list[ValueObject]]) -> str:
    applied = [vo.point for vos in done.values() for vo in vos]
    suffix = f"already applied: {', '.join(str(p) for p in applied)}" if applied else ""
    return "; ".join(x for x in (reason, suffix) if x) or "nothing applied"


def add_routes(app: web.Application, service: AccessService) -> None:
    """Mount the access endpoint; the TLS server sets request[PEER_ROLE_KEY] beforehand."""

    async def access(request: web.Request) -> web.Response:
        body = await request.read()
        role = request.get(PEER_ROLE_KEY)
        reply = await service.handle(
            body,
            request.headers.get("Content-Type"),
            role if isinstance(role, str) else None,
            request.headers.get("Accept"),
        )
        return web.Response(
            status=reply.status, body=reply.body, headers={"Content-Type": reply.content_type}
        )

    app.router.add_post(ACCESS_PATH, access)
