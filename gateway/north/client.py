"""HTTPS client to the AMS: posts Flexibility Forecasts and Reserve Verifications.

Used as the outbox's sender: `deliver` returns only on a 2xx answer; anything else (no
connection, a TLS failure, a timeout in any phase, a non-2xx status) raises DeliveryError
and the outbox retries. aiohttp's errors are translated here and nowhere else.
"""

from __future__ import annotations

import logging
import ssl
from typing import Self

import aiohttp

from gateway.errors import DeliveryError
from gateway.north.codec import answer_text
from gateway.north.config import AmsEndpoints
from gateway.north.outbox import QueuedMessage
from gateway.north.wire import Channel

log = logging.getLogger(__name__)


class HttpsSender:
    """One connection pool to the AMS; use as `async with HttpsSender(...) as sender`."""

    def __init__(self, endpoints: AmsEndpoints, ssl_ctx: ssl.SSLContext) -> None:
        self._urls = {
            Channel.FORECAST.value: str(endpoints.forecast_url),
            Channel.VERIFICATION.value: str(endpoints.verification_url),
        }
        t = endpoints.timeouts
        self._timeout = aiohttp.ClientTimeout(
            total=t.total_s, connect=t.connect_s, sock_connect=t.connect_s, sock_read=t.read_s
        )
        self._ssl = ssl_ctx
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        connector = aiohttp.TCPConnector(ssl=self._ssl, limit_per_host=4)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url_for(self, destination: str) -> str:
        try:
            return self._urls[destination]
        except KeyError:
            raise DeliveryError(destination, "no AMS URL for this destination") from None

    async def deliver(self, item: QueuedMessage) -> None:
        msg = item.message
        url = self.url_for(msg.destination)
        if self._session is None:
            raise DeliveryError(msg.destination, "HTTPS sender is not open")
        try:
            async with self._session.post(
                url, data=msg.body, headers={"Content-Type": msg.content_type}
            ) as resp:
                answer = await resp.read()
                status = resp.status
                content_type = resp.headers.get("Content-Type", "")
        except TimeoutError:
            raise DeliveryError(msg.destination, f"{url}: timed out") from None
        except aiohttp.ClientError as exc:
            raise DeliveryError(msg.destination, f"{url}: {exc}") from exc
        except ssl.SSLError as exc:
            raise DeliveryError(msg.destination, f"{url}: TLS: {exc}") from exc
        if 200 <= status < 300:
            return
        raise DeliveryError(
            msg.destination,
            f"{url} answered HTTP {status}: {answer_text(answer, content_type)}",
            permanent=400 <= status < 500 and status not in (408, 429),
        )
