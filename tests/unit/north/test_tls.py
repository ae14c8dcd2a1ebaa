"""The TLS factory and the HTTPS server's admission over real TLS on loopback."""

from __future__ import annotations

import asyncio
import logging
import ssl
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from gateway.errors import InboundRejected, TlsSetupError
from gateway.north.certs import AMS_IDENTITY, issue, load_issuer, write_pair
from gateway.north.config import DevRelax, PeerRule, Role, ServerConfig, TlsFiles
from gateway.north.server import HttpsServer, build_app
from gateway.north.tls import (
    AllowList,
    Peer,
    client_context,
    describe_tls_error,
    server_context,
    validity_problem,
)
from gateway.north.wire import TURTLE, Answer, Channel
from tests.support.pki import PkiFiles, make_test_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


class Echo:
    """Stands in for the pipeline: answers 200 with who it was told sent the message."""

    accepted_types = frozenset({TURTLE})

    def __init__(self) -> None:
        self.peers: list[Peer] = []

    async def handle(self, channel: Channel, body: bytes, content_type: str, peer: Peer) -> Answer:
        self.peers.append(peer)
        return Answer(200, TURTLE, f"{channel.value} from {peer}".encode())

    def refuse(self, rejection: InboundRejected, content_type: str | None = None) -> Answer:
        return Answer(rejection.status, TURTLE, f"{rejection.reason}: {rejection}".encode())


ALLOW = (
    PeerRule(subject="ams", role=Role.AMS, senders=(AMS_IDENTITY,)),
    PeerRule(subject="operator", role=Role.OPERATOR),
)


def files(pki: PkiFiles, name: str, **kw: object) -> TlsFiles:
    cert, key = pki.pair(name)
    return TlsFiles(ca=(pki.ca,), cert=cert, key=key, **kw)  # type: ignore[arg-type]


@asynccontextmanager
async def serving(pki: PkiFiles, inbound: Echo, **kw: object) -> AsyncIterator[int]:
    tls = files(pki, "gateway", **kw)
    config = ServerConfig(port=0, max_body_bytes=1000)
    app = build_app(inbound, AllowList(ALLOW, tls), config)
    async with HttpsServer(app, config, server_context(tls)) as server:
        yield server.port


async def post(ctx: ssl.SSLContext, port: int, path: str, body: bytes = b"x") -> tuple[int, str]:
    connector = aiohttp.TCPConnector(ssl=ctx)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            f"https://127.0.0.1:{port}{path}", data=body, headers={"Content-Type": TURTLE}
        ) as resp,
    ):
        return resp.status, await resp.text()


def bare_client(pki: PkiFiles) -> ssl.SSLContext:
    """Trusts our CA but presents no certificate."""
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    return ctx


async def test_ams_with_its_certificate_is_admitted_over_tls13(pki: PkiFiles) -> None:
    inbound = Echo()
    async with serving(pki, inbound) as port:
        status, text = await post(client_context(files(pki, "ams")), port, Channel.ACTIVATION.path)
    assert status == 200, text
    assert text == "activation from ams (ams)"
    peer = inbound.peers[0]
    assert peer.role is Role.AMS
    assert peer.may_send_as(AMS_IDENTITY)
    assert not peer.may_send_as("https://someone.else/x")


async def test_client_without_certificate_is_refused_in_the_handshake(pki: PkiFiles) -> None:
    inbound = Echo()
    async with serving(pki, inbound) as port:
        with pytest.raises(aiohttp.ClientError):
            await post(bare_client(pki), port, Channel.ACTIVATION.path)
    assert inbound.peers == []


async def test_certificate_from_an_untrusted_ca_is_refused(pki: PkiFiles) -> None:
    inbound = Echo()
    stranger = TlsFiles(ca=(pki.ca,), cert=pki.stranger[0], key=pki.stranger[1])
    async with serving(pki, inbound) as port:
        with pytest.raises(aiohttp.ClientError):
            await post(client_context(stranger), port, Channel.ACTIVATION.path)
    assert inbound.peers == []


async def test_valid_certificate_not_in_the_allow_list_gets_403(pki: PkiFiles) -> None:
    inbound = Echo()
    intruder = TlsFiles(ca=(pki.ca,), cert=pki.intruder[0], key=pki.intruder[1])
    async with serving(pki, inbound) as port:
        status, text = await post(client_context(intruder), port, Channel.ACTIVATION.path)
    assert status == 403
    assert text.startswith("peer-not-allowed")
    assert "intruder" in text
    assert inbound.peers == []


async def test_operator_may_not_send_activations(pki: PkiFiles) -> None:
    inbound = Echo()
    async with serving(pki, inbound) as port:
        ctx = client_context(files(pki, "operator"))
        status, text = await post(ctx, port, Channel.ACTIVATION.path)
    assert status == 403
    assert text.startswith("role-not-allowed")
    assert inbound.peers == []


async def test_oversize_and_wrong_type_are_refused_before_the_pipeline(pki: PkiFiles) -> None:
    inbound = Echo()
    async with serving(pki, inbound) as port:
        ctx = client_context(files(pki, "ams"))
        status, text = await post(ctx, port, Channel.NOTIFICATION.path, b"x" * 1001)
        assert (status, text.split(":")[0]) == (413, "too-large")
        connector = aiohttp.TCPConnector(ssl=ctx)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.post(
                f"https://127.0.0.1:{port}{Channel.NOTIFICATION.path}",
                data=b"{}",
                headers={"Content-Type": "application/json"},
            ) as resp,
        ):
            assert resp.status == 415
            assert (await resp.text()).startswith("unsupported-media-type")
    assert inbound.peers == []


def legacy_client(pki: PkiFiles, maximum: ssl.TLSVersion) -> ssl.SSLContext:
    """A client that still speaks TLS 1.0/1.1 (what an old peer would offer)."""
    ctx = client_context(files(pki, "ams"))
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = maximum
    return ctx


async def test_tls_below_1_2_is_refused(pki: PkiFiles) -> None:
    inbound = Echo()
    assert server_context(files(pki, "gateway")).minimum_version is ssl.TLSVersion.TLSv1_2
    async with serving(pki, inbound) as port:
        with pytest.raises(aiohttp.ClientError):
            await post(legacy_client(pki, ssl.TLSVersion.TLSv1_1), port, Channel.ACTIVATION.path)
        # the same client allowed TLS 1.2 gets in: the version was the reason
        status, _ = await post(
            legacy_client(pki, ssl.TLSVersion.TLSv1_2), port, Channel.ACTIVATION.path
        )
        assert status == 200


async def test_negotiates_tls13_and_falls_back_to_12(pki: PkiFiles) -> None:

    inbound = Echo()
    async with serving(pki, inbound) as port:
        for maximum, expected in (
            (ssl.TLSVersion.MAXIMUM_SUPPORTED, "TLSv1.3"),
            (ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
        ):
            ctx = client_context(files(pki, "ams"))
            ctx.maximum_version = maximum
            _, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
            )
            assert writer.get_extra_info("ssl_object").version() == expected
            writer.close()
            await writer.wait_closed()


async def test_client_checks_the_server_host_name(pki: PkiFiles, tmp_path: Path) -> None:
    ca = load_issuer(pki.ca, pki.dev["ca-key"])
    cert, key = write_pair(tmp_path, "elsewhere", issue(ca, "mgms-gateway", hosts=["x.example"]))
    tls = TlsFiles(ca=(pki.ca,), cert=cert, key=key)
    config = ServerConfig(port=0)
    app = build_app(Echo(), AllowList(ALLOW, tls), config)
    async with HttpsServer(app, config, server_context(tls)) as server:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await post(client_context(files(pki, "ams")), server.port, Channel.ACTIVATION.path)


async def test_development_flag_admits_anonymous_clients_and_says_so(
    pki: PkiFiles, caplog: pytest.LogCaptureFixture
) -> None:
    inbound = Echo()
    relax = DevRelax(anonymous_role=Role.AMS)
    with caplog.at_level(logging.WARNING, logger="gateway.north.tls"):
        async with serving(pki, inbound, dev_relax=relax) as port:
            status, _ = await post(bare_client(pki), port, Channel.ACTIVATION.path)
    assert status == 200
    assert inbound.peers[0].identity is None
    assert "DEVELOPMENT MODE" in caplog.text


def test_unreadable_key_is_a_setup_error(pki: PkiFiles, tmp_path: Path) -> None:
    tls = TlsFiles(ca=(pki.ca,), cert=pki.pair("ams")[0], key=tmp_path / "missing.key")
    with pytest.raises(TlsSetupError, match=r"missing\.key"):
        client_context(tls)


async def test_a_body_that_does_not_arrive_times_out(pki: PkiFiles) -> None:
    inbound = Echo()
    tls = files(pki, "gateway")
    config = ServerConfig(port=0, request_timeout_s=0.3)
    app = build_app(inbound, AllowList(ALLOW, tls), config)
    async with HttpsServer(app, config, server_context(tls)) as server:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1",
            server.port,
            ssl=client_context(files(pki, "ams")),
            server_hostname="localhost",
        )
        writer.write(
            f"POST {Channel.ACTIVATION.path} HTTP/1.1\r\nHost: localhost\r\n"
            f"Content-Type: {TURTLE}\r\nContent-Length: 100\r\n\r\nonly ten..".encode()
        )
        await writer.drain()
        async with asyncio.timeout(5):
            status_line = await reader.readline()
        writer.close()
        await writer.wait_closed()
    assert status_line.split()[1] == b"408"
    assert inbound.peers == []


async def test_only_post_is_served(pki: PkiFiles) -> None:
    async with serving(pki, Echo()) as port:
        connector = aiohttp.TCPConnector(ssl=client_context(files(pki, "ams")))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(f"https://127.0.0.1:{port}{Channel.ACTIVATION.path}") as resp,
        ):
            assert resp.status == 405
            assert (await resp.text()).startswith("method-not-allowed")


def verify_error(message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, f"certificate verify failed: {message}")
    exc.verify_message = message
    exc.reason = "CERTIFICATE_VERIFY_FAILED"
    return exc


def ssl_error(reason: str) -> ssl.SSLError:
    exc = ssl.SSLError(1, f"[SSL: {reason}] {reason.lower()}")
    exc.reason = reason
    return exc


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (verify_error("certificate has expired"), "TLS: the AMS's certificate has expired"),
        (verify_error("certificate is not yet valid"), "the AMS's certificate is not yet valid"),
        (
            verify_error("unable to get local issuer certificate"),
            "the AMS's certificate is not signed by a CA we trust",
        ),
        (
            verify_error("Hostname mismatch, certificate is not valid for 'ams.example'."),
            "the AMS's certificate is not valid for 'ams.example' (the name we connected to)",
        ),
        (ssl_error("WRONG_VERSION_NUMBER"), "the peer does not speak TLS"),
        (ssl_error("UNSUPPORTED_PROTOCOL"), "only a TLS version below 1.2"),
        (ssl_error("SSLV3_ALERT_CERTIFICATE_EXPIRED"), "refused our certificate: it has expired"),
        (ssl_error("SOMETHING_NEW"), "TLS with the AMS: SOMETHING_NEW"),
    ],
)
def test_tls_errors_are_described_in_words(exc: ssl.SSLError, text: str) -> None:
    assert text in describe_tls_error(exc, "the AMS")


def test_own_certificate_out_of_its_validity_is_named(pki: PkiFiles) -> None:
    now = datetime.now(UTC)
    expired, _ = pki.issue("old", "mgms-gateway", not_before=now - timedelta(days=9), days=-1)
    early, _ = pki.issue("early", "mgms-gateway", not_before=now + timedelta(days=1), days=9)
    assert f"our certificate {expired} expired on" in (validity_problem(expired) or "")
    assert f"our certificate {early} is not valid before" in (validity_problem(early) or "")
    assert validity_problem(pki.pair("gateway")[0]) is None


async def test_a_refused_handshake_is_logged_with_its_cause(
    pki: PkiFiles, caplog: pytest.LogCaptureFixture
) -> None:
    now = datetime.now(UTC)
    cert, key = pki.issue("ams-old", "ams", not_before=now - timedelta(days=9), days=-1)
    expired = TlsFiles(ca=(pki.ca,), cert=cert, key=key)
    inbound = Echo()
    with caplog.at_level(logging.WARNING, logger="gateway.north.server"):
        async with serving(pki, inbound) as port:
            with pytest.raises(aiohttp.ClientError):
                await post(client_context(expired), port, Channel.ACTIVATION.path)
            for _ in range(100):  # the server side finishes the handshake a moment later
                if "TLS handshake from" in caplog.text:
                    break
                await asyncio.sleep(0.01)
    assert "the client's certificate has expired" in caplog.text
    assert inbound.peers == []
