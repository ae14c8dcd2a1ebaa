"""A real mosquitto broker for tests, with the test PKI (fwsim.broker does the work)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fwsim.broker import Broker, BrokerFiles
from fwsim.broker import mosquitto as run_mosquitto
from tests.support.pki import PkiFiles

__all__ = ["Broker", "mosquitto"]


@contextmanager
def mosquitto(
    directory: Path, pki: PkiFiles, *, port: int | None = None, topic_root: str = "smartapi"
) -> Iterator[Broker]:
    cert, key = pki.pair("broker")
    files = BrokerFiles(ca=pki.ca, cert=cert, key=key)
    with run_mosquitto(directory, files, port=port, topic_root=topic_root) as broker:
        yield broker
