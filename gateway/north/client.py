"""HTTPS client to the AMS: posts Flexibility Forecasts and Reserve Verifications.

Used as the outbox's sender: `deliver` returns only on a 2xx answer; anything else (no
connection, a TLS failure, a timeout in any phase, a non-2xx status) raises DeliveryError
and the outbox retries. aiohttp's errors are translated here and nowhere else, into a
text that names the cause: which timeout, which certificate check, plain text where TLS
was expected, a connection broken in the middle of the answer, our own certificate out
of its validity when the AMS just closes the connection.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Self

import aiohttp

from gateway.errors import DeliveryError
from gateway.north.codec import answer_text
from gateway.north.config import AmsEndpoints
from gateway.north.outbox import QueuedMessage
from gateway.north.tls import describe_tls_error, validity_problem
from gateway.north.wire import Channel

log = logging.getLogger(__name__)


class HttpsSender:
    """One connection pool to the AMS; use as `async with HttpsSender(...) as sender`."""

    def __init__(
        self, endpoints: AmsEndpoints, ssl_ctx: ssl.SSLContext, own_cert: Path | None = None
    ) -> None:
        self._urls = {
            Channel.FORECAST.value: str(endpoints.forecast_url),
            Channel.VERIFICATION.value: str(endpoints.verification_url),
        }
        t = endpoints.timeouts
        self._timeout = aiohttp.ClientTimeout(
            total=t.total_s, connect=t.connect_s, sock_connect=t.connect_s, sock_read=t.read_s
        )
        self._ssl = ssl_ctx
        self._own_cert = own_cert
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
        if self._session is None or self._session.closed:
            # e.g. the gateway stopping: not a crash of the outbox, a retry after the restart
            raise DeliveryError(msg.destination, "HTTPS sender is not open")
        try:
            async with self._session.post(
                url, data=msg.body, headers={"Content-Type": msg.content_type}
            ) as resp:
                answer = await resp.read()
                status = resp.status
                content_type = resp.headers.get("Content-Type", "")
        except (TimeoutError, aiohttp.ClientError, ssl.SSLError) as exc:
            raise DeliveryError(msg.destination, f"{url}: {self._explain(exc)}") from None
        if 200 <= status < 300:
            return
        raise DeliveryError(
            msg.destination,
            f"{url} answered HTTP {status}: {answer_text(answer, content_type)}",
            permanent=400 <= status < 500 and status not in (408, 429),
        )

    def _explain(self, exc: BaseException) -> str:
        t = self._timeout
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return f"no connection and TLS handshake within {t.connect:g} s"
        if isinstance(exc, aiohttp.SocketTimeoutError):
            return f"no answer within {t.sock_read:g} s"
        if isinstance(exc, TimeoutError):
            return f"the exchange took longer than {t.total:g} s"
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            return describe_tls_error(exc.certificate_error, "the AMS")
        if isinstance(exc, aiohttp.ClientPayloadError):
            return f"the connection broke in the middle of the answer: {_cause(exc)}"
        # aiohttp's TLS errors subclass ssl.SSLError without its fields: the cause has them
        cause = exc.__cause__ if isinstance(exc, aiohttp.ClientError) else exc
        if isinstance(cause, ssl.SSLError):
            return describe_tls_error(cause, "the AMS")
        text = str(exc) if isinstance(exc, aiohttp.ClientConnectorError) else _cause(exc)
        if isinstance(exc, aiohttp.ClientOSError | aiohttp.ServerDisconnectedError):
            problem = validity_problem(self._own_cert) if self._own_cert else None
            if problem is not None:
                return f"the AMS closed the connection, {problem}"
        return text


def _cause(exc: BaseException) -> str:
    """The error's text on one line, with the socket error aiohttp wrapped."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    inner = exc.__cause__
    if isinstance(inner, OSError) and str(inner) not in text:
        text = f"{text} ({inner.strerror or type(inner).__name__})"
    return text
