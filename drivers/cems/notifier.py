"""The simulated CEMS's push (fwsim only): on each tick, the readable Smart API points
whose raw value moved by more than `simulator.push.min_change` since last notified go to
the gateway's push endpoint (`options.push`) as one Smart API Notification, in the CEMS's
profile and signed with its key when it signs (security.py).

The first tick only takes the values in (the gateway polls them). A value whose POST
failed on the link is notified again on the next tick; one the gateway answered, whatever
the answer, is not (it would refuse it again), and the refusal is logged with its reason.
Each POST is bounded by the device timeout.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Sequence

import aiohttp
from yarl import URL

from drivers.cems import smartapi_form
from drivers.cems.protocol import CemsOptions, PushEndpoint, SimulatorPush
from drivers.cems.security import SmartApiLink
from drivers.cems.smartapi_form import SmartApiPoint
from gateway.mapping import Device

log = logging.getLogger(__name__)

ValueOf = Callable[[SmartApiPoint], float | None]


class Notifier:
    def __init__(
        self,
        device: Device,
        options: CemsOptions,
        endpoint: PushEndpoint,
        push: SimulatorPush,
        points: Sequence[SmartApiPoint],
        link: SmartApiLink,
        sender: str,
    ) -> None:
        self.device = device
        self._options = options
        self._push = push
        self._points = [p for p in points if p.point.direction.readable]
        self._link = link
        self._sender = sender
        self.url = str(
            URL.build(scheme="https", host=endpoint.host, port=endpoint.port, path=endpoint.path)
        )
        self._last: dict[str, float] | None = None
        self._session: aiohttp.ClientSession | None = None
        #: (HTTP status, answer text) of each notification sent
        self.answers: list[tuple[int, str]] = []

    async def start(self) -> None:
        ctx = ssl.create_default_context(cafile=str(self._options.resolve(self._push.ca_file)))
        ctx.load_cert_chain(
            str(self._options.resolve(self._push.cert_file)),
            str(self._options.resolve(self._push.key_file)),
        )
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx))

    async def stop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def check(self, value_of: ValueOf) -> int:
        """Notify what changed since last notified; the number of values notified."""
        now = {p.point.id: v for p in self._points if (v := value_of(p)) is not None}
        last = self._last
        if last is None:
            self._last = now
            return 0
        changed = [
            (p, now[p.point.id])
            for p in self._points
            if p.point.id in now
            and (
                p.point.id not in last
                or abs(now[p.point.id] - last[p.point.id]) > self._push.min_change
            )
        ]
        if not changed or self._session is None:
            return 0
        body, content_type = self._link.encode(smartapi_form.notification(changed, self._sender))
        try:
            async with (
                asyncio.timeout(self.device.timeout),
                self._session.post(
                    self.url, data=body, headers={"Content-Type": content_type}
                ) as response,
            ):
                text = await response.text()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning("cems %s: push to %s failed: %s", self.device.id, self.url, exc)
            return 0  # `last` untouched: notified again on the next tick
        last.update((p.point.id, value) for p, value in changed)
        self.answers.append((response.status, text))
        if response.status >= 300:
            log.warning(
                "cems %s: push refused (%d): %s", self.device.id, response.status, text[:300]
            )
            return 0
        return len(changed)
