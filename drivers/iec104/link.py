"""The c104 boundary: one client connection to one outstation, and its callbacks.

c104 runs its own threads and calls back on them. The callbacks here only copy plain
values out of the library objects and hand them to thread-safe sinks (the driver wraps
them with `loop.call_soon_threadsafe`); they never block, log or touch asyncio. Blocking
calls (interrogations, commands) release the GIL and are meant for worker threads.
c104 errors are translated to LinkError here and nowhere else.

No `from __future__ import annotations` in this module: c104 checks callback signatures
against real annotation objects and rejects string annotations.
"""

import contextlib
import datetime
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import SupportsFloat, SupportsInt, cast

import c104

from drivers.iec104 import confirm
from drivers.iec104.codec import Sample
from drivers.iec104.confirm import Confirmation, Key, Verdict
from drivers.iec104.protocol import CounterFreeze, Iec104Address, Iec104Options, Kind, TypeId
from gateway.errors import LinkError

SampleSink = Callable[[Sample], None]
"""Receives samples on a c104 thread; must be thread-safe and must not block."""
StateSink = Callable[[bool, str], None]
"""Receives (link open, state name) on a c104 thread; same rules."""

_C104_TYPE = {t: getattr(c104.Type, t.name) for t in TypeId}
_FREEZE = {
    CounterFreeze.READ: c104.Frz.READ,
    CounterFreeze.FREEZE: c104.Frz.FREEZE_WITHOUT_RESET,
    CounterFreeze.FREEZE_RESET: c104.Frz.FREEZE_WITH_RESET,
    CounterFreeze.RESET: c104.Frz.COUNTER_RESET,
}
_C104_ERRORS = (ValueError, RuntimeError, IndexError, TypeError)
#: how long a raw copy of an answer may trail c104's handling of it
_LATE_ANSWER_S = 0.25


def _plain(value: object) -> float | int | bool | None:
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, c104.Double):
        return int(value.value)
    if isinstance(value, c104.Int16):
        return int(cast(SupportsInt, value))
    if isinstance(value, c104.NormalizedFloat):
        return float(cast(SupportsFloat, value))
    return None


def _bits(q: object) -> int:
    # On the receiving side c104's flag value is the wire octet's bits (QDS, or BCR: CY 0x20,
    # CA 0x40, IV 0x80), even where its flag names disagree (it calls 0x40 "Carry").
    if isinstance(q, c104.Quality | c104.BinaryCounterQuality):
        return int(q.value)
    return 0


class _Answers:
    """Answers to commands seen on the wire, for the thread waiting on a command."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._seen: dict[Key, list[Confirmation]] = {}

    def expect(self, key: Key) -> None:
        with self._cond:
            self._seen[key] = []

    def record(self, apdu: bytes) -> None:
        parsed = confirm.parse(apdu)
        if parsed is None:
            return
        key, answer = parsed
        with self._cond:
            if key in self._seen:
                self._seen[key].append(answer)
                self._cond.notify_all()

    def collect(
        self, key: Key, decided: Callable[[Sequence[Confirmation]], bool], timeout: float
    ) -> list[Confirmation]:
        """The answers to `key` once `decided` (or after `timeout`); stops expecting it."""
        with self._cond:
            self._cond.wait_for(lambda: decided(self._seen[key]), max(timeout, 0.0))
            return self._seen.pop(key)


class _Relay:
    """The callbacks. Holds no reference to c104 objects, so a dropped Link frees them."""

    def __init__(self, samples: SampleSink, state: StateSink, answers: _Answers) -> None:
        self._samples = samples
        self._state = state
        self._answers = answers
        self.active = True

    def on_receive_raw(self, connection: c104.Connection, data: bytes) -> None:
        if self.active and len(data) > 6 and data[6] >= 45:  # answers to commands only
            self._answers.record(data)

    def _emit(self, ca: int, ioa: int, message: c104.IncomingMessage, info: object) -> None:
        try:
            recorded = info.recorded_at  # type: ignore[attr-defined]
            sample = Sample(
                common_address=ca,
                ioa=ioa,
                type_id=int(message.type.value),
                value=_plain(info.value),  # type: ignore[attr-defined]
                bits=_bits(info.quality),  # type: ignore[attr-defined]
                # c104 gives the CP56Time2a as a naive local time
                recorded_at=None if recorded is None else recorded.astimezone(datetime.UTC),
                cot=int(message.cot.value),
                test=bool(message.is_test),
                negative=bool(message.is_negative),
            )
        except Exception:  # c104 drops a callback that raises; report the object instead  # noqa: BLE001
            sample = Sample(ca, ioa, int(message.type.value), None, 0, None, int(message.cot.value))
        self._samples(sample)

    def on_receive(
        self, point: c104.Point, previous_info: c104.Information, message: c104.IncomingMessage
    ) -> c104.ResponseState:
        if self.active:
            self._emit(message.common_address, point.io_address, message, point.info)
        return c104.ResponseState.NONE

    def on_unexpected(
        self, connection: c104.Connection, message: c104.IncomingMessage, cause: c104.Umc
    ) -> None:
        # c104 drops objects whose type differs from the point's; the driver accepts the
        # time-tagged twin of a mapped type (M_ME_TF_1 for M_ME_NC_1) and flags the rest
        if not self.active or cause != c104.Umc.MISMATCHED_TYPE_ID:
            return
        message.first()
        while message.next():
            self._emit(message.common_address, message.io_address, message, message.info)

    def on_state(self, connection: c104.Connection, state: c104.ConnectionState) -> None:
        if self.active:
            self._state(state == c104.ConnectionState.OPEN, state.name)


class Link:
    """One c104 client with one connection and the mapped stations and points."""

    def __init__(
        self,
        device_id: str,
        ip: str,
        port: int,
        addresses: list[Iec104Address],
        options: Iec104Options,
        timeout_s: float,
        samples: SampleSink,
        state: StateSink,
    ) -> None:
        self.device_id = device_id
        self._timeout = timeout_s
        self._answers = _Answers()
        self._relay = _Relay(samples, state, self._answers)
        self._commands: dict[tuple[int, int], c104.Point] = {}
        self._command_lock = threading.Lock()
        self._raw_lock = threading.Lock()
        self._exchanges = 0  # in progress; the raw hook is set while there is one
        try:
            self._client = c104.Client(
                tick_rate_ms=options.tick_rate_ms,
                command_timeout_ms=max(1, round(timeout_s * 1000)),
            )
            con = self._client.add_connection(ip=ip, port=port, init=c104.Init.NONE)
            if con is None:
                raise ValueError(f"cannot add a connection to {ip}:{port}")
            self._con: c104.Connection = con
            self._configure(options)
            for addr in addresses:
                self._add(addr)
        except _C104_ERRORS as exc:
            raise LinkError(device_id, f"c104 refused the configuration: {exc}") from exc

    def _configure(self, options: Iec104Options) -> None:
        con = self._con
        con.originator_address = options.originator_address
        params = con.protocol_parameters
        params.connection_timeout = options.t0
        params.message_timeout = options.t1
        params.confirm_interval = options.t2
        params.keep_alive_interval = options.t3
        params.send_window_size = options.k
        params.receive_window_size = options.w
        con.on_state_change(callable=self._relay.on_state)
        con.on_unexpected_message(callable=self._relay.on_unexpected)

    def _add(self, addr: Iec104Address) -> None:
        station = self._con.get_station(addr.common_address)
        if station is None:
            station = self._con.add_station(common_address=addr.common_address)
        if station is None:
            raise ValueError(f"cannot add station {addr.common_address}")
        if addr.monitor is not None:
            point = station.add_point(
                io_address=addr.monitor.ioa, type=_C104_TYPE[addr.monitor.type_id]
            )
            if point is None:
                raise ValueError(f"cannot add {addr}")
            point.on_receive(callable=self._relay.on_receive)
        if addr.command is not None:
            point = station.add_point(
                io_address=addr.command.ioa, type=_C104_TYPE[addr.command.type_id]
            )
            if point is None:
                raise ValueError(f"cannot add {addr}")
            self._commands[(addr.common_address, addr.command.ioa)] = point

    @property
    def is_open(self) -> bool:
        return bool(self._con.state == c104.ConnectionState.OPEN)

    @property
    def awaiting_startdt(self) -> bool:
        """Connected, data transfer not started (STARTDT not yet confirmed)."""
        return bool(self._con.state == c104.ConnectionState.OPEN_MUTED)

    def start_data_transfer(self) -> None:
        """Send STARTDT act (again): c104 now and then opens a connection without it. Only
        while the connection is still open and muted: c104 crashed (SIGSEGV) in `unmute()`
        on a connection a garbage-sending peer had just made it close."""
        if self.awaiting_startdt:
            self._con.unmute()

    def start(self) -> None:
        try:
            self._client.start()
        except _C104_ERRORS as exc:
            raise LinkError(self.device_id, f"c104 client did not start: {exc}") from exc

    def stop(self) -> None:
        """Disconnect and stop the client threads; later callbacks are ignored."""
        self._relay.active = False
        self._client.stop()

    # The calls below block until the outstation answers (at most about twice the
    # timeout). Station requests are sent without c104's wait and judged by the answers
    # seen on the wire alone; for commands a positive verdict of c104 is trusted and a
    # negative one checked against the answers on the wire (see confirm.py).

    def interrogate(self, common_address: int) -> tuple[Verdict, str]:
        """General interrogation: confirmed once ACT_CON and ACT_TERM arrived."""
        return self._exchange(
            "general interrogation",
            (common_address, confirm.C_IC_NA_1, 0),
            lambda: self._con.interrogation(
                common_address=common_address,
                cause=c104.Cot.ACTIVATION,
                qualifier=c104.Qoi.STATION,
                wait_for_response=False,
            ),
            confirm.judge_interrogation,
            confirm.interrogation_settled,
        )

    def interrogate_counters(
        self, common_address: int, freeze: CounterFreeze
    ) -> tuple[Verdict, str]:
        """Counter interrogation (general request): confirmed once terminated."""
        return self._exchange(
            "counter interrogation",
            (common_address, confirm.C_CI_NA_1, 0),
            lambda: self._con.counter_interrogation(
                common_address=common_address,
                cause=c104.Cot.ACTIVATION,
                qualifier=c104.Rqt.GENERAL,
                freeze=_FREEZE[freeze],
                wait_for_response=False,
            ),
            confirm.judge_interrogation,
            confirm.interrogation_settled,
        )

    def clock_sync(self, common_address: int) -> tuple[Verdict, str]:
        return self._exchange(
            "clock synchronisation",
            (common_address, confirm.C_CS_NA_1, 0),
            lambda: self._con.clock_sync(common_address=common_address, wait_for_response=False),
            lambda seen: confirm.judge_command(seen, select=False),
            lambda seen: confirm.command_settled(seen, select=False),
        )

    def command(
        self,
        common_address: int,
        ioa: int,
        type_id: TypeId,
        raw: float | int | bool,
        select: bool,
    ) -> tuple[Verdict, str]:
        """Send one command, select-before-execute if `select`. c104 waits for the answers
        itself here (it has no other way to send a command); see `_exchange`."""
        point = self._commands[(common_address, ioa)]

        def send(mode: c104.CommandMode) -> Callable[[], bool]:
            def transmit() -> bool:
                point.command_mode = mode
                point.value = _command_value(type_id.kind, raw)
                return bool(point.transmit(cause=c104.Cot.ACTIVATION))

            return transmit

        def judge(seen: Sequence[Confirmation]) -> tuple[Verdict, str]:
            return confirm.judge_command(seen, select)

        def settled(seen: Sequence[Confirmation]) -> bool:
            return confirm.command_settled(seen, select)

        key = (common_address, type_id.value, ioa)
        what = f"command to IOA {ioa}"
        direct, sbe = c104.CommandMode.DIRECT, c104.CommandMode.SELECT_AND_EXECUTE
        with self._command_lock:
            mode = sbe if select else direct
            verdict = self._exchange(what, key, send(mode), judge, settled, c104_waits=True)
            if verdict[0] is Verdict.SELECTED:
                # c104 missed the select's confirmation and so never sent the execute:
                # send it now, the same command without the select bit
                verdict = self._exchange(what, key, send(direct), judge, settled, c104_waits=True)
            return verdict

    def _exchange(
        self,
        what: str,
        key: Key,
        send: Callable[[], bool],
        judge: Callable[[Sequence[Confirmation]], tuple[Verdict, str]],
        settled: Callable[[Sequence[Confirmation]], bool],
        c104_waits: bool = False,
    ) -> tuple[Verdict, str]:
        """Send via c104 and judge by the answers seen on the wire, waiting until they
        have `settled` (at most the timeout). If c104 waited for the answers itself
        (`c104_waits`), its positive verdict stands."""
        with self._raw_frames():
            self._answers.expect(key)
            started = time.monotonic()
            try:
                ok = send()
            except _C104_ERRORS as exc:
                self._answers.collect(key, settled, 0.0)
                raise LinkError(self.device_id, f"{what} failed in c104: {exc}") from exc
            if not ok and not c104_waits:
                self._answers.collect(key, settled, 0.0)
                raise LinkError(self.device_id, f"{what} not sent: the connection is not open")
            if ok and c104_waits:
                # the raw copy of an answer may reach us a little after c104 handled it: wait
                # for it briefly so that it cannot be taken for the answer to the next request
                self._answers.collect(key, settled, _LATE_ANSWER_S)
                return Verdict.CONFIRMED, ""
            remaining = self._timeout - (time.monotonic() - started) if self.is_open else 0.0
            return judge(self._answers.collect(key, settled, remaining))

    @contextlib.contextmanager
    def _raw_frames(self) -> Iterator[None]:
        """The wire's frames reach `_Answers` while an exchange is in progress, and only
        then: c104 2.2.1 leaks a memoryview and a bytes object (about 365 bytes) for every
        frame it hands to a raw callback (upstream issue #77), which with the hook always
        set grew the gateway by ~1.2 kB/s at the demo's IEC 104 telemetry rate, without
        bound. c104 guards its callbacks with a mutex, so setting and clearing the hook from
        this thread is safe."""
        with self._raw_lock:
            if self._exchanges == 0:
                self._con.on_receive_raw(callable=self._relay.on_receive_raw)
            self._exchanges += 1
        try:
            yield
        finally:
            with self._raw_lock:
                self._exchanges -= 1
                if self._exchanges == 0:
                    # None clears the hook (c104 Callback::reset); its stub does not say so
                    self._con.on_receive_raw(callable=None)  # type: ignore[arg-type]


def _command_value(
    kind: Kind, raw: float | int | bool
) -> bool | float | c104.Double | c104.NormalizedFloat | c104.Int16:
    if kind is Kind.SINGLE:
        return bool(raw)
    if kind is Kind.DOUBLE:
        return c104.Double.ON if raw else c104.Double.OFF
    if kind is Kind.NORMALIZED:
        return c104.NormalizedFloat(float(raw))
    if kind is Kind.SCALED:
        return c104.Int16(int(raw))
    return float(raw)
