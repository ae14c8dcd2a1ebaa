"""MQTT over TLS (MQTT 5, aiomqtt): the same message flows as HTTPS through a broker.

Topics, for microgrid `<mg>` under the configured root (default `smartapi`):

    <root>/<mg>/forecast        MGMS -> AMS   Flexibility Forecast   QoS 1, retained
    <root>/<mg>/verification    MGMS -> AMS   Reserve Verification   QoS 1
    <root>/<mg>/notification    AMS -> MGMS   Reserve Notification   QoS 1
    <root>/<mg>/activation      AMS -> MGMS   Reserve Activation     QoS 1
    <root>/<mg>/reply/gateway   AMS -> MGMS   answers to forecasts and verifications
    <root>/<mg>/reply/ams       MGMS -> AMS   answers to notifications and activations
    <root>/<mg>/status          MGMS          `online` / `offline` (will), retained

Request and answer are correlated as MQTT 5 intends: a request carries Response Topic
and Correlation Data (its message id); the answer goes to that topic with the same
Correlation Data, Content Type, and a user property `status` holding the HTTP-like status
(so a Smart API Error is a failed delivery). The outbox counts a message delivered only
when a 2xx answer arrives, exactly as over HTTPS; the broker's persistent session (fixed
client id, clean start off, session expiry) only buffers while the peer is away. The
forecast is retained so an AMS that subscribes late sees the latest one at once.

Who may publish where is the broker's ACL (docs/northbound.md has one): the gateway cannot
see the publisher's certificate, so it treats a message on an AMS topic as coming from the
AMS role, and the pipeline still requires a valid signature by a sender the allow-list
gives that role. For the same reason an answer goes only to the reply topic of that
sender's own namespace (the other side's reply topic of this microgrid, the only one its
certificate may read): a request naming any other Response Topic is refused unread, the
refusal logged and answered on the sender's own reply topic. An empty payload is answered
(400 `empty-body`), and the endpoint tells the broker the largest packet it takes (MQTT 5
Maximum Packet Size), so a bigger one is never delivered to it nor held in its memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.backoff import Backoff
from gateway.errors import DeliveryError, InboundRejected, Reason
from gateway.north.codec import answer_text
from gateway.north.config import MqttConfig
from gateway.north.outbox import QueuedMessage
from gateway.north.tls import describe_tls_error, describe_tls_reason, validity_problem
from gateway.north.wire import TURTLE, Answer, Channel

log = logging.getLogger(__name__)

#: the gateway and the AMS end of the answer topics
GATEWAY_SIDE, AMS_SIDE = "gateway", "ams"
_RETAINED = frozenset({Channel.FORECAST})
_RECONNECT_FIRST_S = 0.2
#: what an MQTT packet carries besides the body (fixed header, topic, properties); the
#: broker's max_packet_size (docs/northbound.md) is the body limit plus this
MQTT_HEADROOM_BYTES = 64 * 1024
#: the largest packet MQTT can describe (a four-byte remaining length)
MQTT_MAX_PACKET_BYTES = 268_435_455

T = TypeVar("T")
InboundHandler = Callable[[Channel, bytes, str], Awaitable[Answer]]
#: a refusal as a Smart API Error answer (the pipeline's `refuse`)
Refuser = Callable[[InboundRejected, str], Answer]


@dataclass(frozen=True)
class Topics:
    root: str
    microgrid: str

    def channel(self, channel: Channel) -> str:
        return f"{self.root}/{self.microgrid}/{channel.value}"

    def reply(self, side: str) -> str:
        return f"{self.root}/{self.microgrid}/reply/{side}"

    @property
    def status(self) -> str:
        return f"{self.root}/{self.microgrid}/status"

    def parse(self, topic: str) -> Channel | None:
        prefix = f"{self.root}/{self.microgrid}/"
        if not topic.startswith(prefix):
            return None
        try:
            return Channel(topic[len(prefix) :])
        except ValueError:
            return None


def _honour_cancellation() -> None:
    """Raise if this task was asked to stop.

    aiomqtt awaits every acknowledgement with asyncio.wait_for, which on Python 3.11 returns
    the result instead of raising when a cancellation arrives together with the answer
    (fixed in 3.12). The task would then run on after being stopped, so every aiomqtt call
    is followed by this check (`_acked`)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _acked(call: Awaitable[T]) -> T:
    result = await call
    _honour_cancellation()
    return result


class _PahoErrors(logging.Filter):
    """paho reports a TLS alert from the broker (our certificate refused) only in its log,
    and the connect then just times out: the last error it logs is kept for `_explain`,
    and not logged, since the link's own log line tells it once."""

    def __init__(self) -> None:
        super().__init__()
        self.last: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            self.last = record.getMessage()
            return False
        return True


def _explain(exc: aiomqtt.MqttError, paho_error: str | None, connecting: bool) -> str:
    """The cause of a failed MQTT link in words (a TLS failure says which check failed)."""
    inner: BaseException | None = exc
    reset = False
    while inner is not None:
        if isinstance(inner, ssl.SSLError):
            return describe_tls_error(inner, "the broker")
        reset = reset or isinstance(inner, ConnectionResetError | ssl.SSLEOFError)
        inner = inner.__cause__ or inner.__context__
    alert = re.search(r"\[SSL: (\w+)\]", paho_error or "")
    if alert is not None:
        return describe_tls_reason(alert.group(1), "the broker")
    if connecting and reset:
        return (
            f"{exc}: the broker closed the connection in the TLS handshake "
            "(not a TLS port, or it refused us)"
        )
    return str(exc)


def _props(**values: object) -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(props, name, value)
    return props


def _prop(props: Properties | None, name: str) -> object:
    return getattr(props, name, None) if props is not None else None


class MqttEndpoint:
    """One side (gateway or AMS) of the MQTT transport: keeps a session with the broker,
    answers requests on its `inbound` channels with `handle`, and sends requests whose
    answers come back on its own reply topic. Run `run()` in a task; `deliver` is the
    outbox's sender."""

    def __init__(  # noqa: PLR0913  (keyword-only settings of one endpoint, all from config)
        self,
        config: MqttConfig,
        ssl_ctx: ssl.SSLContext,
        *,
        client_id: str,
        topics: Topics,
        side: str,
        inbound: Collection[Channel],
        handle: InboundHandler,
        refuse: Refuser,
        max_packet_bytes: int | None = None,
        answer_timeout_s: float = 30.0,
        reconnect_max_s: float = 30.0,
        on_connected: Callable[[], None] | None = None,
        announce_status: bool = False,
        own_cert: Path | None = None,
    ) -> None:
        self._config = config
        self._ssl = ssl_ctx
        self._client_id = client_id
        self.topics = topics
        self._side = side
        self._inbound = frozenset(inbound)
        self._handle = handle
        self._refuse = refuse
        self._max_packet_bytes = max_packet_bytes
        self._answer_timeout_s = answer_timeout_s
        self._reconnect_max_s = reconnect_max_s
        self._on_connected = on_connected
        self._announce = announce_status
        self._client: aiomqtt.Client | None = None
        self._waiting: dict[bytes, asyncio.Future[Answer]] = {}
        self.connected = asyncio.Event()
        self._down_since: float | None = None
        self._last_error: str | None = None
        self._attempts = 0
        self._own_cert = own_cert
        self._paho_log = logging.getLogger(f"{__name__}.paho.{client_id}")
        self._paho_errors = _PahoErrors()

    # -- connection -------------------------------------------------------------------------

    def _new_client(self) -> aiomqtt.Client:
        connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        connect.SessionExpiryInterval = self._config.session_expiry_s
        if self._max_packet_bytes is not None:
            # the broker drops a bigger message for us instead of sending it (MQTT 5 3.1.2.11)
            connect.MaximumPacketSize = self._max_packet_bytes
        will = None
        if self._announce:
            will = aiomqtt.Will(self.topics.status, b"offline", qos=1, retain=True)
        return aiomqtt.Client(
            self._config.host,
            self._config.port,
            identifier=self._client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=connect,
            keepalive=self._config.keepalive_s,
            timeout=self._config.connect_timeout_s,
            tls_context=self._ssl,
            will=will,
            logger=self._paho_log,
            # small request/answer exchanges: Nagle plus delayed ACKs would add ~40 ms each
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )

    async def run(self) -> None:
        """Stay connected until cancelled, reconnecting with capped exponential backoff.

        Each link transition is logged once: the loss (WARNING, with its cause), the return
        (INFO, with how long the link was down); failed reconnects repeat the cause at
        WARNING only when it changes."""
        backoff = Backoff(initial=_RECONNECT_FIRST_S, cap=self._reconnect_max_s)
        self._paho_log.addFilter(self._paho_errors)
        try:
            while True:
                self._paho_errors.last = None
                try:
                    async with self._new_client() as client:
                        _honour_cancellation()
                        backoff.reset()
                        await self._session(client)
                except aiomqtt.MqttError as exc:
                    self._link_failed(exc)
                finally:
                    self._disconnected()
                _honour_cancellation()
                await asyncio.sleep(backoff.next_delay())
        finally:
            self._paho_log.removeFilter(self._paho_errors)

    def _link_failed(self, exc: aiomqtt.MqttError) -> None:
        cfg = self._config
        connecting = not self.connected.is_set()
        cause = _explain(exc, self._paho_errors.last, connecting)
        problem = validity_problem(self._own_cert) if connecting and self._own_cert else None
        if problem is not None:
            cause = f"{cause}; {problem}"
        if self._down_since is None:
            self._down_since = time.monotonic()
            self._attempts = 0
            lost = "lost" if self.connected.is_set() else "unreachable"
            log.warning(
                "MQTT link of %s to %s:%d %s: %s; reconnecting",
                self._client_id,
                cfg.host,
                cfg.port,
                lost,
                cause,
            )
        else:
            level = logging.WARNING if cause != self._last_error else logging.DEBUG
            log.log(
                level,
                "MQTT %s: %s:%d still unreachable: %s",
                self._client_id,
                cfg.host,
                cfg.port,
                cause,
            )
        self._attempts += 1
        self._last_error = cause

    async def _session(self, client: aiomqtt.Client) -> None:
        timeout = self._config.connect_timeout_s
        wanted = [(self.topics.channel(c), 1) for c in sorted(self._inbound)]
        wanted.append((self.topics.reply(self._side), 1))
        await _acked(client.subscribe(wanted, timeout=timeout))
        if self._announce:
            await _acked(
                client.publish(self.topics.status, b"online", qos=1, retain=True, timeout=timeout)
            )
        self._client = client
        self.connected.set()
        cfg = self._config
        if self._down_since is None:
            log.info("MQTT connected to %s:%d as %s", cfg.host, cfg.port, self._client_id)
        else:
            log.info(
                "MQTT link of %s to %s:%d restored after %.1f s (%d failed attempts)",
                self._client_id,
                cfg.host,
                cfg.port,
                time.monotonic() - self._down_since,
                self._attempts,
            )
        self._down_since = None
        if self._on_connected is not None:
            self._on_connected()
        try:
            async for message in client.messages:
                await self._dispatch(client, message)
                _honour_cancellation()
        finally:
            if self._announce and self._client is client:
                with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                    await client.publish(
                        self.topics.status, b"offline", qos=1, retain=True, timeout=1.0
                    )

    def _disconnected(self) -> None:
        self._client = None
        self.connected.clear()
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(DeliveryError("mqtt", "connection to the broker lost"))

    # -- inbound ----------------------------------------------------------------------------

    @property
    def client_id(self) -> str:
        return self._client_id

    @property
    def answer_topic(self) -> str:
        """Where our answers go: the other side's reply topic in this microgrid."""
        return self.topics.reply(AMS_SIDE if self._side == GATEWAY_SIDE else GATEWAY_SIDE)

    async def _dispatch(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        topic = str(message.topic)
        payload = message.payload if isinstance(message.payload, bytes) else b""
        props = message.properties
        if topic == self.topics.reply(self._side):
            self._answered(props, payload)
            return
        channel = self.topics.parse(topic)
        if channel is None or channel not in self._inbound:
            return
        ctype = str(_prop(props, "ContentType") or TURTLE)
        asked = _prop(props, "ResponseTopic")
        if asked is not None and str(asked) != self.answer_topic:
            refusal = InboundRejected(
                403,
                Reason.REPLY_TOPIC_NOT_ALLOWED,
                f"Response Topic {str(asked)[:200]!r} is not the sender's reply topic "
                f"{self.answer_topic!r}",
            )
            log.warning("refused MQTT %s on %s: %s", channel.value, topic, refusal)
            answer = self._refuse(refusal, ctype)
        elif not payload:
            refusal = InboundRejected(400, Reason.EMPTY_BODY, "the message has no payload")
            log.warning("refused MQTT %s on %s: %s", channel.value, topic, refusal)
            answer = self._refuse(refusal, ctype)
        else:
            answer = await self._handle(channel, payload, ctype)
        reply = _props(
            ContentType=answer.content_type,
            UserProperty=[("status", str(answer.status))],
        )
        correlation = _prop(props, "CorrelationData")
        if correlation:
            reply.CorrelationData = correlation
        await _acked(
            client.publish(
                self.answer_topic,
                answer.body,
                qos=1,
                properties=reply,
                timeout=self._config.connect_timeout_s,
            )
        )

    def _answered(self, props: Properties | None, payload: bytes) -> None:
        correlation = _prop(props, "CorrelationData")
        waiter = self._waiting.get(bytes(correlation)) if isinstance(correlation, bytes) else None
        if waiter is None or waiter.done():
            log.debug("MQTT answer for no pending request (%r)", correlation)
            return
        status = 0
        for key, value in _prop(props, "UserProperty") or ():  # type: ignore[attr-defined]
            if key == "status" and str(value).isdigit():
                status = int(value)
        ctype = str(_prop(props, "ContentType") or TURTLE)
        waiter.set_result(Answer(status, ctype, payload))

    # -- outbound ---------------------------------------------------------------------------

    async def request(
        self, channel: Channel, message_id: str, content_type: str, body: bytes
    ) -> Answer:
        """Publish a request and wait for its answer (DeliveryError when none comes)."""
        client = self._client
        if client is None:
            why = f" ({self._last_error})" if self._last_error else ""
            raise DeliveryError(channel.value, f"not connected to the MQTT broker{why}")
        key = message_id.encode()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Answer] = loop.create_future()
        self._waiting[key] = waiter
        try:
            props = _props(
                ResponseTopic=self.topics.reply(self._side),
                CorrelationData=key,
                ContentType=content_type,
            )
            try:
                await _acked(
                    client.publish(
                        self.topics.channel(channel),
                        body,
                        qos=1,
                        retain=channel in _RETAINED,
                        properties=props,
                        timeout=self._config.connect_timeout_s,
                    )
                )
            except (aiomqtt.MqttError, TimeoutError) as exc:
                raise DeliveryError(channel.value, f"publish failed: {exc}") from exc
            try:
                async with asyncio.timeout(self._answer_timeout_s):
                    return await waiter
            except TimeoutError:
                raise DeliveryError(
                    channel.value, f"no answer within {self._answer_timeout_s:g} s"
                ) from None
        finally:
            self._waiting.pop(key, None)
            # a link lost while the publish was pending fails the waiter too; this call
            # has raised its own error by then, so the waiter's is read here, not left to
            # be reported as never retrieved
            if waiter.done() and not waiter.cancelled():
                waiter.exception()
            waiter.cancel()

    async def deliver(self, item: QueuedMessage) -> None:
        msg = item.message
        answer = await self.request(
            Channel(msg.destination), msg.message_id, msg.content_type, msg.body
        )
        if not answer.ok:
            raise DeliveryError(
                msg.destination,
                f"answered {answer.status}: {answer_text(answer.body, answer.content_type)}",
                permanent=400 <= answer.status < 500,
            )
