"""The HTTPS edge of the CEMS driver: one aiohttp session, bounded answers, named reasons.

Every request runs under the device timeout, body included (a CEMS that trickles its body
costs one timeout, not a hung poll). Redirects are never followed (a CEMS pointing the
gateway at another host is refused, not obeyed). Bodies are read up to `max_body` bytes
and no further. aiohttp's exceptions are translated here and nowhere else: what says the
link is gone becomes `LinkError`, a missing answer `RequestTimeout`, and an answer the
gateway cannot use an `Answer` with `problem` set, which only the points of that resource
pay for.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from drivers.cems.protocol import CemsOptions
from gateway.errors import LinkError, RequestTimeout
from gateway.mapping import Device

_JSON_TYPES = frozenset({"application/json"})


@dataclass(frozen=True)
class Answer:
    """A CEMS's answer to one request: its body, or why there is none usable."""

    what: str
    status: int
    body: bytes = b""
    content_type: str = ""
    problem: str | None = None
    #: the Content-Type header as sent, parameters included (a multipart boundary)
    content_header: str = ""


@dataclass(frozen=True)
class JsonAnswer:
    """A REST answer's JSON document, or why there is none."""

    document: Any = None
    problem: str | None = None


def json_of(answer: Answer) -> JsonAnswer:
    if answer.problem is not None:
        return JsonAnswer(problem=answer.problem)
    if not answer.body and answer.status == 204:
        return JsonAnswer()
    if answer.content_type not in _JSON_TYPES:
        return JsonAnswer(
            problem=f"{answer.what}: answer is {answer.content_type}, not application/json"
        )
    try:
        return JsonAnswer(json.loads(answer.body.decode("utf-8")))
    except (UnicodeDecodeError, ValueError) as exc:
        return JsonAnswer(problem=f"{answer.what}: answer is not JSON ({exc})")


def client_context(device: Device, options: CemsOptions) -> ssl.SSLContext:
    """Server verification and host-name check always on; a client certificate if set."""
    ca = options.resolve(options.ca_file) if options.ca_file is not None else None
    try:
        ctx = ssl.create_default_context(cafile=None if ca is None else str(ca))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if options.cert_file is not None and options.key_file is not None:
            ctx.load_cert_chain(
                str(options.resolve(options.cert_file)), str(options.resolve(options.key_file))
            )
    except (OSError, ssl.SSLError) as exc:
        raise LinkError(device.id, f"TLS files unusable: {exc}") from None
    return ctx


class CemsHttp:
    """One keep-alive HTTPS session to one CEMS."""

    def __init__(self, device: Device, options: CemsOptions) -> None:
        conn = device.connection
        assert conn.host is not None
        self.device = device
        self.options = options
        # yarl brackets an IPv6 literal
        self.base = str(URL.build(scheme="https", host=conn.host, port=conn.port or 443))
        self._server_name = options.server_name
        self._session: aiohttp.ClientSession | None = None
        # identity: bodies are not inflated (see max_body), so ask for none compressed
        headers = {"Accept": "application/json, text/turtle", "Accept-Encoding": "identity"}
        if options.token is not None:
            headers["Authorization"] = f"Bearer {options.token}"
        self._headers = headers

    @property
    def open(self) -> bool:
        return self._session is not None and not self._session.closed

    async def start(self) -> None:
        ctx = client_context(self.device, self.options)
        connector = aiohttp.TCPConnector(ssl=ctx, limit=4, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=self._headers,
            timeout=aiohttp.ClientTimeout(total=None),  # deadlines are ours, per request
            auto_decompress=False,  # a compressed body could expand past max_body
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        data: bytes | None = None,
        content_type: str | None = None,
    ) -> Answer:
        """One request with the device timeout over everything, body included: `body` goes
        as JSON, `data` as is with its `content_type`."""
        if self._session is None or self._session.closed:
            raise LinkError(self.device.id, f"not connected to {self.base}")
        timeout = self.device.timeout
        what = f"{method} {path}"
        kwargs: dict[str, Any] = {"allow_redirects": False}
        if self._server_name is not None:
            kwargs["server_hostname"] = self._server_name
        if body is not None:
            kwargs["json"] = body
        if data is not None:
            kwargs["data"] = data
            kwargs["headers"] = {"Content-Type": content_type or "application/octet-stream"}
        try:
            async with (
                asyncio.timeout(timeout),
                self._session.request(method, self.base + path, **kwargs) as response,
            ):
                return await self._answer(response, what)
        except TimeoutError:
            raise RequestTimeout(
                self.device.id, f"{what}: no complete answer within {timeout:.3g} s"
            ) from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise LinkError(
                self.device.id, f"{self.base}: certificate not accepted ({exc.certificate_error})"
            ) from None
        except aiohttp.ClientSSLError as exc:
            raise LinkError(self.device.id, f"{self.base}: TLS failed ({exc})") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise LinkError(
                self.device.id, f"{what}: link lost ({exc.__class__.__name__}: {exc})"
            ) from None

    async def _answer(self, response: aiohttp.ClientResponse, what: str) -> Answer:
        status = response.status
        if 300 <= status < 400:
            target = response.headers.get("Location", "?")
            problem = f"{what}: redirect ({status}) to {target} not followed"
            return Answer(what, status, problem=problem)
        body = await self._bounded_body(response)
        if body is None:
            problem = f"{what}: answer larger than {self.options.max_body} bytes"
            return Answer(what, status, problem=problem)
        header = response.headers.get("Content-Type", "")
        if status >= 400:
            problem = f"{what}: HTTP {status} {response.reason or ''}".strip()
            return Answer(what, status, body, response.content_type, problem, header)
        return Answer(what, status, body, response.content_type, content_header=header)

    async def _bounded_body(self, response: aiohttp.ClientResponse) -> bytes | None:
        """The body, or None if it is longer than `max_body` (the rest is not read)."""
        limit = self.options.max_body
        declared = response.content_length
        if declared is not None and declared > limit:
            response.close()
            return None
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                response.close()  # drop the connection rather than drain an endless body
                return None
            chunks.append(chunk)
        return b"".join(chunks)
