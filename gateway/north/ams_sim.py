"""AMS simulator: the aggregator's side of the CRP flow, for tests, benchmarks and the demo.

It is the gateway's reference peer and is built from the same parts: an HTTPS server over
mutual TLS that receives Flexibility Forecasts and Reserve Verifications (and, with MQTT,
an endpoint on the AMS side of the topics), the same inbound pipeline (signature, shapes,
sender, idempotency), and a client that sends Reserve Notifications and Activations to the
gateway and measures how long each took to be answered.

    async with AmsSimulator(...) as ams:
        task = asyncio.create_task(ams.run())
        forecast = await ams.next_message(Channel.FORECAST)
        n = ams.notification_for(forecast)
        await ams.send(n)
        result = await ams.send(ams.activation_for(n, forecast))   # result.latency_ms
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

import aiohttp

from gateway.errors import DeliveryError
from gateway.north import certs
from gateway.north.codec import secured
from gateway.north.config import (
    MqttConfig,
    PeerRule,
    Role,
    ServerConfig,
    SigningKeys,
    Timeouts,
    TlsFiles,
)
from gateway.north.ledger import Ledger
from gateway.north.mqtt import AMS_SIDE, MqttEndpoint, Topics
from gateway.north.pipeline import InboundPipeline
from gateway.north.ports import Expectation, MessageCodec
from gateway.north.server import HttpsServer, build_app
from gateway.north.tls import AllowList, client_context, server_context
from gateway.north.wire import OUTBOUND, TURTLE, Answer, Channel
from gateway.smartapi.flexibility import (
    FlexibilityForecast,
    FlexMessage,
    ReserveActivation,
    ReservedInterval,
    ReserveNotification,
    ReserveVerification,
)
from gateway.smartapi.messages import Message, new_message_id

log = logging.getLogger(__name__)

#: forecasts and verifications come from the gateway's outbox, which may deliver them up
#: to a day late after an outage: the AMS must not refuse them as stale before that
STALE_AFTER_S = 25 * 3600.0


@dataclass(frozen=True)
class Received:
    channel: Channel
    message: FlexMessage
    at: float  # time.monotonic()


@dataclass(frozen=True)
class Sent:
    """The gateway's answer to something the simulator sent, and how long it took."""

    message: ReserveNotification | ReserveActivation
    answer: Answer
    latency_ms: float


class _Recorder:
    """The simulator's applier: records forecasts and verifications from the gateway role."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.arrived = asyncio.Condition()

    def expects(self, channel: Channel) -> Expectation | None:
        if channel is Channel.FORECAST:
            return Expectation(FlexibilityForecast, Role.MGMS)
        if channel is Channel.VERIFICATION:
            return Expectation(ReserveVerification, Role.MGMS)
        return None

    async def check_and_apply(self, message: FlexMessage) -> None:
        channel = (
            Channel.FORECAST if isinstance(message, FlexibilityForecast) else Channel.VERIFICATION
        )
        async with self.arrived:
            self.received.append(Received(channel, message, time.monotonic()))
            self.arrived.notify_all()
        log.info("AMS simulator received %s %s", channel.value, message.id)


@dataclass(frozen=True)
class AmsSimConfig:
    tls: TlsFiles
    #: our Smart API identity, and the gateways that may send to us (subject -> senders)
    identity: str
    allow: tuple[PeerRule, ...]
    microgrid: str
    state_dir: Path
    signing: SigningKeys
    #: the gateway's HTTPS base URL (https://127.0.0.1:8443); None with MQTT only
    gateway_url: str | None = None
    server: ServerConfig = field(default_factory=lambda: ServerConfig(port=0))
    mqtt: MqttConfig | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)

    @classmethod
    def dev(
        cls,
        pki_dir: Path,
        *,
        microgrid: str,
        state_dir: Path,
        gateway_url: str | None = None,
        port: int = 0,
        mqtt: MqttConfig | None = None,
    ) -> AmsSimConfig:
        """From the files of `mgms certs init` (the AMS certificate, the gateway allowed)."""
        return cls(
            tls=TlsFiles(
                ca=(pki_dir / "ca.pem",), cert=pki_dir / "ams.pem", key=pki_dir / "ams.key"
            ),
            identity=certs.AMS_IDENTITY,
            allow=(
                PeerRule(
                    subject=certs.DEV_PARTIES["gateway"][0],
                    role=Role.MGMS,
                    senders=(certs.GATEWAY_IDENTITY,),
                ),
            ),
            microgrid=microgrid,
            state_dir=state_dir,
            signing=SigningKeys(
                key=pki_dir / "ams-signing.key",
                key_id=certs.SIGNERS["ams"][0],
                trust=pki_dir / "trust-ams.yaml",
                replay_window_s=STALE_AFTER_S,
            ),
            gateway_url=gateway_url,
            server=ServerConfig(port=port),
            mqtt=mqtt,
        )


class AmsSimulator:
    def __init__(self, config: AmsSimConfig, *, codec: MessageCodec[Any] | None = None) -> None:
        self.config = config
        self._codec: MessageCodec[Any] = codec or secured(
            config.signing, config.identity, config.server.max_statements
        )
        self._recorder = _Recorder()
        self._stack = AsyncExitStack()
        self._client_ssl: ssl.SSLContext = client_context(config.tls)
        self._server_ssl: ssl.SSLContext = server_context(config.tls)
        self._session: aiohttp.ClientSession | None = None
        self.pipeline: InboundPipeline | None = None
        self.mqtt: MqttEndpoint | None = None
        self.port: int | None = None
        self._listening = asyncio.Event()

    @property
    def received(self) -> list[Received]:
        return list(self._recorder.received)

    def messages(self, channel: Channel) -> list[FlexMessage]:
        return [r.message for r in self._recorder.received if r.channel is channel]

    async def __aenter__(self) -> Self:
        try:
            ledger = await self._stack.enter_async_context(
                Ledger(self.config.state_dir / "ams-inbound.sqlite")
            )
            self.pipeline = InboundPipeline(
                self._codec,
                ledger,
                self._recorder,
                identity=self.config.identity,
                microgrid=self.config.microgrid,
                max_age=timedelta(seconds=self.config.signing.replay_window_s),
            )
            t = self.config.timeouts
            timeout = aiohttp.ClientTimeout(
                total=t.total_s, connect=t.connect_s, sock_connect=t.connect_s, sock_read=t.read_s
            )
            self._session = await self._stack.enter_async_context(
                aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(ssl=self._client_ssl), timeout=timeout
                )
            )
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def run(self) -> None:
        """Serve until cancelled (HTTPS; plus the MQTT endpoint when configured)."""
        assert self.pipeline is not None, "AmsSimulator.run() outside `async with`"
        pipeline = self.pipeline
        allow = AllowList(self.config.allow, self.config.tls)
        channels = {c: Role.MGMS for c in OUTBOUND}
        app = build_app(pipeline, allow, self.config.server, channels=channels)
        async with HttpsServer(app, self.config.server, self._server_ssl) as server:
            self.port = server.port
            mqtt = self.config.mqtt
            if mqtt is None:
                self._listening.set()
                await asyncio.Event().wait()
                return
            peer = allow.role_peer(Role.MGMS, via="MQTT broker ACL")

            async def handle(channel: Channel, body: bytes, content_type: str) -> Answer:
                return await pipeline.handle(channel, body, content_type, peer)

            self.mqtt = MqttEndpoint(
                mqtt,
                self._client_ssl,
                client_id=f"ams-sim-{self.config.microgrid}",
                topics=Topics(mqtt.topic_root, self.config.microgrid),
                side=AMS_SIDE,
                inbound=OUTBOUND,
                handle=handle,
                answer_timeout_s=mqtt.answer_timeout_s,
            )
            self._listening.set()
            await self.mqtt.run()

    async def ready(self) -> int:
        """Wait until the HTTPS server listens (and the MQTT session is up, if configured);
        the HTTPS port."""
        await self._listening.wait()
        if self.mqtt is not None:
            await self.mqtt.connected.wait()
        assert self.port is not None
        return self.port

    def url(self, channel: Channel) -> str:
        return f"https://127.0.0.1:{self.port}{channel.path}"

    # -- what the simulator receives --------------------------------------------------------

    async def next_message(self, channel: Channel, *, after: int = 0) -> FlexMessage:
        """The first message on `channel` beyond the first `after` ones (waits for it)."""
        async with self._recorder.arrived:
            await self._recorder.arrived.wait_for(lambda: len(self.messages(channel)) > after)
        return self.messages(channel)[after]

    # -- what the simulator sends -----------------------------------------------------------

    async def send(
        self, message: ReserveNotification | ReserveActivation, *, via: str = "https"
    ) -> Sent:
        """Send to the gateway over HTTPS or MQTT and wait for its answer."""
        channel = (
            Channel.NOTIFICATION if isinstance(message, ReserveNotification) else Channel.ACTIVATION
        )
        body = self._codec.encode(message, TURTLE)
        started = time.perf_counter()
        if via == "mqtt":
            if self.mqtt is None:
                raise DeliveryError(channel.value, "the simulator has no MQTT endpoint")
            answer = await self.mqtt.request(channel, message.id, TURTLE, body)
        else:
            answer = await self.post(channel, body, TURTLE)
        return Sent(message, answer, (time.perf_counter() - started) * 1000.0)

    def encode(self, message: Message, content_type: str = TURTLE) -> bytes:
        """`message` serialized and signed with the simulator's key."""
        return self._codec.encode(message, content_type)

    async def post(self, channel: Channel, body: bytes, content_type: str) -> Answer:
        """POST raw bytes to the gateway's endpoint (also for malformed and tampered tests)."""
        if self._session is None or self.config.gateway_url is None:
            raise DeliveryError(channel.value, "the simulator has no gateway URL")
        url = f"{self.config.gateway_url.rstrip('/')}{channel.path}"
        try:
            async with self._session.post(
                url, data=body, headers={"Content-Type": content_type}
            ) as resp:
                return Answer(resp.status, resp.headers.get("Content-Type", ""), await resp.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryError(channel.value, f"{url}: {exc}") from exc

    # -- message builders -------------------------------------------------------------------

    def notification_for(self, forecast: FlexibilityForecast, **kwargs: Any) -> ReserveNotification:
        """`reserve_notification` from this simulator."""
        return reserve_notification(forecast, sender=self.config.identity, **kwargs)

    def activation_for(
        self, notification: ReserveNotification, forecast: FlexibilityForecast, **kwargs: Any
    ) -> ReserveActivation:
        """`reserve_activation` from this simulator."""
        return reserve_activation(notification, forecast, sender=self.config.identity, **kwargs)


def reserve_notification(
    forecast: FlexibilityForecast,
    *,
    sender: str,
    share: float = 0.5,
    intervals: int | None = None,
    purchase: str | None = None,
) -> ReserveNotification:
    """Reserve `share` of the flexibility the forecast offers, for its first `intervals`
    intervals (all by default)."""
    rows = forecast.intervals[: intervals or len(forecast.intervals)]
    bands = tuple(
        ReservedInterval(
            p_raise_kw=share * i.p_raise_kw,
            p_lower_kw=share * i.p_lower_kw,
            q_raise_kvar=share * i.q_raise_kvar,
            q_lower_kvar=share * i.q_lower_kvar,
        )
        for i in rows
    )
    return ReserveNotification(
        id=new_message_id(),
        sender=sender,
        generated_at=datetime.now(UTC),
        microgrid=forecast.microgrid,
        start=forecast.start,
        step=forecast.step,
        purchase=purchase or f"purchase-{new_message_id()[:8]}",
        intervals=bands,
    )


def reserve_activation(
    notification: ReserveNotification,
    forecast: FlexibilityForecast,
    *,
    sender: str,
    fraction: float = 1.0,
    start: datetime | None = None,
    duration: timedelta | None = None,
    direction: str = "down",
) -> ReserveActivation:
    """Activate `fraction` of the reserved band (`down`: less import, `up`: more) in the
    interval containing `start` (default: now, or the first interval), until that interval
    ends or `duration` passed."""
    now = datetime.now(UTC)
    start = start or max(now, notification.start)
    index = int((start - notification.start) / notification.step)
    base = forecast.intervals[index]
    band = notification.intervals[index]
    sign = -1.0 if direction == "down" else 1.0
    p = base.p_kw + sign * fraction * (band.p_lower_kw if sign < 0 else band.p_raise_kw)
    end = notification.interval_start(index + 1)
    if duration is not None:
        end = min(end, start + duration)
    return ReserveActivation(
        id=new_message_id(),
        sender=sender,
        generated_at=now,
        microgrid=notification.microgrid,
        notification=notification.id,
        p_kw=p,
        q_kvar=base.q_kvar,
        start=start,
        end=end,
    )
