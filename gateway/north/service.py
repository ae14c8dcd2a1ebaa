"""Northbound, assembled from the config: what the composition root builds and runs.

    north = North.from_config(loaded)              # builds nothing, reads no file yet
    north.handler = FlexReserveHandler(service)    # none: reserve messages are refused
    opener, sealer = north.access_security()
    north.access = AccessService(..., opener=opener, sealer=sealer)
    async with north:                              # keys, TLS files, state files
        tg.create_task(north.run())                # HTTPS server, MQTT, outbox delivery
        await north.send(forecast)                 # durable on return

State files in the gateway's state directory: `north-outbox.sqlite` (outbound messages),
`north-inbound.sqlite` (first answer to each inbound message).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from gateway.config import LoadedConfig
from gateway.errors import InboundRejected, Reason, RefusalReason, ReserveRefused
from gateway.north.client import HttpsSender
from gateway.north.codec import access_security, secured
from gateway.north.config import NorthConfig, Role
from gateway.north.ledger import Ledger
from gateway.north.outbox import OutboundMessage, Outbox, OutboxClock, OutboxStats
from gateway.north.pipeline import InboundPipeline, ReserveApplier
from gateway.north.ports import MessageCodec, ReserveHandler
from gateway.north.server import AccessCore, HttpsServer, build_app
from gateway.north.tls import AllowList, client_context, server_context, validity_problem
from gateway.north.wire import INBOUND, TURTLE, Answer, Channel, media_type
from gateway.smartapi.flexibility import (
    FlexibilityForecast,
    ReserveActivation,
    ReserveNotification,
    ReserveVerification,
)
from gateway.smartapi.security.profile import InboundSecurity, OutboundSecurity

if TYPE_CHECKING:  # aiomqtt is the optional `mqtt` extra: imported only to use it
    from gateway.north.mqtt import MqttEndpoint

log = logging.getLogger(__name__)

OUTBOX_FILE = "north-outbox.sqlite"
LEDGER_FILE = "north-inbound.sqlite"


class NoFlexibility:
    """The reserve handler of a North that was given none: it refuses every reserve
    message, saying why, and keeps nothing."""

    def _refuse(self) -> None:
        raise ReserveRefused(
            RefusalReason.REFUSED, "this gateway runs no flexibility service to reserve from"
        )

    async def check_notification(self, notification: ReserveNotification) -> None:
        self._refuse()

    async def apply_notification(self, notification: ReserveNotification) -> None:
        self._refuse()

    async def check_activation(self, activation: ReserveActivation) -> None:
        self._refuse()

    async def apply_activation(self, activation: ReserveActivation) -> None:
        self._refuse()


@dataclass(frozen=True)
class NorthStats:
    outbox: OutboxStats
    #: inbound answers by reason (`accepted`, `repeat`, or the refusal reason)
    inbound: dict[str, int]
    mqtt_connected: bool | None


class North:
    """The gateway's northbound side. `handler` is the flexibility layer's ReserveHandler
    (without one, every Reserve Notification and Activation is refused, saying why);
    `access` serves the Smart API access endpoint."""

    def __init__(
        self,
        config: NorthConfig,
        *,
        microgrid: str,
        state_dir: Path,
        handler: ReserveHandler | None = None,
        access: AccessCore | None = None,
        codec: MessageCodec[Any] | None = None,
        outbox_clock: OutboxClock | None = None,
    ) -> None:
        self.config = config
        self.microgrid = microgrid
        self.state_dir = state_dir
        #: the reserve handler; may be set after construction, before `async with`
        self.handler = handler
        #: the Smart API access core; may be set after construction, before `run()`
        self.access = access
        self._codec_override = codec
        self._codec: MessageCodec[Any] | None = None
        self._stack = AsyncExitStack()
        self.outbox = Outbox(state_dir / OUTBOX_FILE, config.outbox, clock=outbox_clock)
        self.pipeline: InboundPipeline | None = None
        self.mqtt: MqttEndpoint | None = None
        self.server: HttpsServer | None = None
        self._client_ssl: ssl.SSLContext | None = None
        self._server_ssl: ssl.SSLContext | None = None
        self._started = asyncio.Event()
        self._sending = asyncio.Lock()
        #: who may connect, and with which role; a reload replaces its rules
        self.allow = AllowList(config.allow, config.tls)

    @classmethod
    def from_config(cls, loaded: LoadedConfig, **kwargs: Any) -> North:
        """From the loaded gateway config (its `north:` section must be present)."""
        gw = loaded.gateway
        if gw.north is None:
            raise ValueError(f"{loaded.source}: no `north:` section")
        config = gw.north.resolved(loaded.source.parent)
        return cls(config, microgrid=gw.microgrid.id, state_dir=gw.state_dir, **kwargs)

    async def __aenter__(self) -> Self:
        try:
            # keys and TLS files are read now: a missing or bad file fails the start
            self._codec = self._codec_override or secured(
                self.config.signing,
                self.config.identity,
                self.config.server.max_statements,
                self.config.profiles(),
            )
            self._server_ssl = server_context(self.config.tls)
            self._client_ssl = client_context(self.config.tls)
            problem = validity_problem(self.config.tls.cert)
            if problem is not None:  # peers will refuse us until the files are replaced
                log.error("northbound TLS: %s", problem)
            await self._stack.enter_async_context(self.outbox)
            ledger = await self._stack.enter_async_context(Ledger(self.state_dir / LEDGER_FILE))
            handler = self.handler or NoFlexibility()
            self.pipeline = InboundPipeline(
                self._codec,
                ledger,
                ReserveApplier(handler),
                identity=self.config.identity,
                microgrid=self.microgrid,
                max_age=timedelta(seconds=self.config.signing.replay_window_s),
            )
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    # -- running ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve HTTPS, keep the MQTT session (transport mqtt) and deliver the outbox, until
        cancelled."""
        if self.pipeline is None or self._server_ssl is None or self._client_ssl is None:
            raise RuntimeError("North.run() outside `async with North(...)`")
        pipeline = self.pipeline
        allow = self.allow
        app = build_app(pipeline, allow, self.config.server, access=self.access)
        async with AsyncExitStack() as stack:
            self.server = await stack.enter_async_context(
                HttpsServer(app, self.config.server, self._server_ssl)
            )
            sender: HttpsSender | MqttEndpoint | None = None
            if self.config.transport == "mqtt":
                sender = self.mqtt = self._mqtt_endpoint(pipeline, allow)
            elif self.config.ams is not None:
                # opened before and closed after the task group: a delivery that is under
                # way when the gateway stops must not find the session closed
                sender = await stack.enter_async_context(
                    HttpsSender(self.config.ams, self._client_ssl, own_cert=self.config.tls.cert)
                )
            else:
                log.info("north: no AMS configured; serving the access endpoint only")
            async with asyncio.TaskGroup() as tg:
                if self.mqtt is not None:
                    tg.create_task(self.mqtt.run())
                if sender is not None:
                    tg.create_task(self.outbox.run(sender))
                self._started.set()
                if sender is None:
                    await asyncio.Event().wait()  # serve until cancelled

    @property
    def has_ams(self) -> bool:
        """Whether forecasts and verifications have somewhere to go."""
        return self.config.transport == "mqtt" or self.config.ams is not None

    async def started(self) -> None:
        """Wait until the server listens and delivery runs (tests, the demo)."""
        await self._started.wait()

    def _mqtt_endpoint(self, pipeline: InboundPipeline, allow: AllowList) -> MqttEndpoint:
        from gateway.north.mqtt import (
            GATEWAY_SIDE,
            MQTT_HEADROOM_BYTES,
            MQTT_MAX_PACKET_BYTES,
            MqttEndpoint,
            Topics,
        )

        mqtt = self.config.mqtt
        assert mqtt is not None  # the config model guarantees it

        limit = self.config.server.max_body_bytes

        async def handle(channel: Channel, body: bytes, content_type: str) -> Answer:
            # the HTTPS server's admission checks, for what the broker lets through
            refusal = None
            if len(body) > limit:
                refusal = InboundRejected(
                    413, Reason.TOO_LARGE, f"body of {len(body)} bytes exceeds {limit}"
                )
            elif media_type(content_type) not in pipeline.accepted_types:
                accepted = ", ".join(sorted(pipeline.accepted_types))
                refusal = InboundRejected(
                    415, Reason.UNSUPPORTED_MEDIA_TYPE, f"{content_type}; accepted: {accepted}"
                )
            if refusal is not None:
                log.warning("refused MQTT %s: %s", channel.value, refusal)
                return pipeline.refuse(refusal, content_type)
            # asked per message: a reload may have changed the senders the AMS may sign as
            peer = allow.role_peer(Role.AMS, via="MQTT broker ACL")
            return await pipeline.handle(channel, body, content_type, peer)

        assert self._client_ssl is not None
        return MqttEndpoint(
            mqtt,
            self._client_ssl,
            client_id=mqtt.client_id or f"mgms-{self.microgrid}",
            topics=Topics(mqtt.topic_root, self.microgrid),
            side=GATEWAY_SIDE,
            inbound=INBOUND,
            handle=handle,
            refuse=pipeline.refuse,
            # the body limit plus room for topic and properties: the broker keeps anything
            # bigger from us, so a huge payload is never held here
            max_packet_bytes=min(limit + MQTT_HEADROOM_BYTES, MQTT_MAX_PACKET_BYTES),
            answer_timeout_s=mqtt.answer_timeout_s,
            on_connected=self.outbox.kick,
            announce_status=True,
            own_cert=self.config.tls.cert,
        )

    # -- sending ----------------------------------------------------------------------------

    async def send(self, message: FlexibilityForecast | ReserveVerification) -> bool:
        """Queue a forecast or verification for the AMS; True once it is durable (False:
        this message id was queued before). Signed and serialized here."""
        channel = (
            Channel.FORECAST if isinstance(message, FlexibilityForecast) else Channel.VERIFICATION
        )
        if self._codec is None:
            raise RuntimeError("North.send() outside `async with North(...)`")
        if not self.has_ams:
            return False  # nobody to send it to; an outbox would only grow and warn
        # signing and serializing a 96-interval message is milliseconds of CPU: in a worker
        # thread, so the event loop (and an activation's answer) does not wait for it; one
        # message at a time, in the order asked, which the outbox keeps
        async with self._sending:
            body, ctype = await asyncio.to_thread(self._encode, self._codec, message)
            return await self.outbox.put(OutboundMessage(message.id, channel.value, ctype, body))

    def _encode(
        self, codec: MessageCodec[Any], message: FlexibilityForecast | ReserveVerification
    ) -> tuple[bytes, str]:
        if self.config.ams_profile().legacy:  # the AMS runs the Smart API 1.1 library
            return codec.encode_v11(message)
        return codec.encode(message, TURTLE), TURTLE

    async def prepare_reload(self, loaded: LoadedConfig) -> Callable[[], Awaitable[None]]:
        """Re-read the signing key and trusted peers (from the reloaded `north.signing`; the
        files may have been replaced under the same names) and take the new allow-list.
        Only these sections reach here: the reload refuses other `north` changes."""
        if loaded.gateway.north is None:
            raise ValueError("north: removed; only a restart applies it")
        config = loaded.gateway.north.resolved(loaded.source.parent)
        codec = self._codec_override or secured(
            config.signing, config.identity, config.server.max_statements
        )

        async def commit() -> None:
            self.config = config
            self._codec = codec
            if self.pipeline is not None:
                self.pipeline.use_codec(codec, timedelta(seconds=config.signing.replay_window_s))
            self.allow.replace(config.allow)
            log.info(
                "north: reloaded the allow-list (%d peers), signing key %s and trusted peers",
                len(config.allow),
                config.signing.key_id,
            )

        return commit

    def access_security(self) -> tuple[InboundSecurity, OutboundSecurity]:
        """Opener and sealer for the Smart API access core, with our keys and trust."""
        return access_security(
            self.config.signing,
            self.config.identity,
            self.config.server.max_statements,
            self.config.profiles(),
        )

    async def stats(self) -> NorthStats:
        return NorthStats(
            outbox=await self.outbox.stats(),
            inbound=dict(self.pipeline.counts) if self.pipeline else {},
            mqtt_connected=self.mqtt.connected.is_set() if self.mqtt else None,
        )
