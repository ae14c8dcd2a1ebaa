"""Listing an outstation's information objects for discovery: a `Link` with no mapped
points that takes every station and object the outstation sends (c104's new-station and
new-point callbacks add them as they arrive), then general and counter interrogation.
Nothing but the interrogations is sent: no command, no clock synchronisation."""

# no `from __future__ import annotations`: c104 checks the callbacks' annotations as types

import socket
import threading
import time
from collections.abc import Sequence

import c104

from drivers.iec104.codec import Sample
from drivers.iec104.confirm import Verdict
from drivers.iec104.link import Link
from gateway.discover.iec104 import Seen
from gateway.errors import LinkError
from gateway.protocols.iec104 import CounterFreeze, Iec104Options


class ScanLink(Link):
    def __init__(self, ip: str, port: int, timeout_s: float) -> None:
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        super().__init__(
            "discovered",
            ip,
            port,
            [],
            Iec104Options(),
            timeout_s,
            self._take,
            lambda up, why: None,
        )
        self._client.on_new_station(callable=self._new_station)
        self._client.on_new_point(callable=self._new_point)

    def _take(self, sample: Sample) -> None:
        with self._lock:
            self.samples.append(sample)

    def _new_station(
        self, client: c104.Client, connection: c104.Connection, common_address: int
    ) -> None:
        connection.add_station(common_address=common_address)

    def _new_point(
        self, client: c104.Client, station: c104.Station, io_address: int, point_type: c104.Type
    ) -> None:
        point = station.add_point(io_address=io_address, type=point_type)
        if point is not None:
            point.on_receive(callable=self._relay.on_receive)


def _reachable(ip: str, port: int, timeout_s: float) -> None:
    """A plain TCP connect first: c104 retries a refused connection silently, which would
    otherwise end as a vague timeout instead of `cannot connect`."""
    try:
        with socket.create_connection((ip, port), timeout=timeout_s):
            pass
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise LinkError(f"{ip}:{port}", f"cannot connect to {ip}:{port}: {why}") from None


def scan(
    ip: str, port: int, common_addresses: Sequence[int], timeout_s: float, listen_s: float
) -> tuple[list[Seen], list[str]]:
    """Every information object received after connect, general and counter interrogation
    of each common address and `listen_s` of spontaneous data; and what went wrong with
    an interrogation. Blocking (c104 releases the GIL): run it in a thread."""
    _reachable(ip, port, timeout_s)
    link = ScanLink(ip, port, timeout_s)
    notes: list[str] = []
    link.start()
    try:
        deadline = time.monotonic() + timeout_s + 1.0
        while not link.is_open and time.monotonic() < deadline:
            if link.awaiting_startdt:
                link.start_data_transfer()
            time.sleep(0.05)
        if not link.is_open:
            raise LinkError(
                f"{ip}:{port}",
                f"connected, but no IEC 104 data transfer (STARTDT) within {timeout_s:g} s:"
                " is it an IEC 104 outstation, and does it accept this client?",
            )
        for ca in common_addresses:
            answers = (
                ("general interrogation", link.interrogate(ca)),
                ("counter interrogation", link.interrogate_counters(ca, CounterFreeze.READ)),
            )
            for what, (verdict, detail) in answers:
                if verdict is not Verdict.CONFIRMED:
                    notes.append(f"CA {ca}: {what}: {verdict.value} {detail}".strip())
        time.sleep(listen_s)
    finally:
        link.stop()
    with link._lock:
        samples = list(link.samples)
    seen = [
        Seen(s.common_address, s.ioa, s.type_id, s.value, s.cot, s.recorded_at is not None)
        for s in samples
    ]
    return seen, notes
